"""QdrantStore against qdrant-client's real local mode (in memory and on disk), no mocks."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import colbert_store as cs
from colbert_store.errors import (
    FilterError,
    InvalidInputError,
    MissingDependencyError,
)
from colbert_store.filters import matches, parse_filter
from tests.batches import RESIDUAL_BYTES, by_id, candidate_ids, make_batch, manifest
from tests.conftest import DIM, make_corpus

qdrant_client = pytest.importorskip("qdrant_client")
qdrant = pytest.importorskip("colbert_store.adapters.qdrant")
QdrantStore = qdrant.QdrantStore
from colbert_store.adapters.qdrant import client as qdrant_client_module  # noqa: E402


@pytest.fixture(params=["memory", "path"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    opened = QdrantStore(":memory:") if request.param == "memory" else QdrantStore(str(tmp_path / "qdrant"))
    yield opened
    opened.close()


@pytest.mark.parametrize("prefix", ["", "a__b", "_a", "a_", "x y"])
def test_invalid_prefix(prefix):
    with pytest.raises(InvalidInputError):
        QdrantStore(":memory:", prefix=prefix)


def test_prefixes_keep_stores_apart():
    client = qdrant_client.QdrantClient(":memory:")
    one, two = QdrantStore(client, prefix="one"), QdrantStore(client, prefix="two")
    one.create_index("papers", manifest(who=1))
    two.create_index("papers", manifest(who=2))
    one.upsert("papers", make_batch(["a", "b"]))
    assert (one.count("papers"), two.count("papers")) == (2, 0)
    assert two.read_manifest("papers") == manifest(who=2)
    one.close()  # a client passed in stays open
    assert client.collection_exists("one_catalogue") and one.count("papers") == 2


def test_reopening_a_path_store_returns_the_same_data(tmp_path):
    location = str(tmp_path / "qdrant")
    store = QdrantStore(location)
    store.create_index("papers", manifest())
    batch = make_batch([f"d{i}" for i in range(12)])
    store.upsert("papers", batch)
    store.delete("papers", ["d0"])
    store.close()
    reopened = QdrantStore(location)
    assert reopened.list_indexes() == ["papers"]
    assert reopened.read_manifest("papers") == manifest()
    assert reopened.count("papers") == 11
    expected = by_id(batch)
    del expected["d0"]
    assert by_id(reopened.fetch("papers", batch.revisions)) == expected
    reopened.close()


def test_stores_on_one_folder_share_its_client(tmp_path):
    location = str(tmp_path / "qdrant")
    first, second = QdrantStore(location), QdrantStore(tmp_path / "qdrant")  # qdrant locks a folder to one client
    first.create_index("papers", manifest())
    second.upsert("papers", make_batch(["a", "b"]))
    assert first.count("papers") == 2
    first.close()
    assert second.count("papers") == 2  # still open until its last store closes
    second.close()
    third = QdrantStore(location)
    assert third.count("papers") == 2
    third.close()


def test_local_lookup_table_follows_writes_from_every_store_on_the_client():
    """Local mode answers candidates and fetches from a cached table; a write by any store on the client drops it."""
    client = qdrant_client.QdrantClient(":memory:")
    reader, writer = QdrantStore(client), QdrantStore(client)
    reader.create_index("papers", manifest())
    everything = np.arange(64)

    def seen() -> dict[str, int]:
        found = reader.candidates("papers", everything, None)
        fetched = reader.fetch("papers", found)
        assert sorted(fetched.revisions.tolist()) == sorted(found.tolist())
        return dict(zip(fetched.ids, fetched.revisions.tolist()))

    assert seen() == {}
    writer.upsert("papers", make_batch(["a", "b", "c"]))
    assert seen() == {"a": 1, "b": 2, "c": 3}
    writer.upsert("papers", make_batch(["b"], seed=1, first_revision=20))  # replace: the old revision is gone
    assert seen() == {"a": 1, "b": 20, "c": 3}
    assert by_id(reader.fetch("papers", np.array([2, 3]))).keys() == {"c"}
    writer.delete("papers", ["a"])
    assert seen() == {"b": 20, "c": 3}
    assert candidate_ids(reader, everything, parse_filter({"tag": "t0"})) == ["b"]
    writer.drop_index("papers")
    writer.create_index("papers", manifest())
    assert seen() == {}
    client.close()


def test_size_bytes_counts_the_stored_base64(store):
    store.create_index("papers", manifest())
    batch = make_batch([f"d{i}" for i in range(5)])
    store.upsert("papers", batch)
    raw = batch.centroid_ids.nbytes + batch.residuals.nbytes
    per_document = np.diff(batch.token_offsets)
    expected = sum(4 * -(-n * width // 3) for n in per_document for width in (2, RESIDUAL_BYTES))
    assert store.size_bytes("papers") == expected and raw < expected
    assert store.size_bytes("papers", fields=["codes"]) == sum(4 * -(-2 * n // 3) for n in per_document)


def test_client_arguments():
    with pytest.raises(TypeError, match="no_such_option"):
        QdrantStore(":memory:", no_such_option=1)
    with pytest.raises(TypeError):
        QdrantStore("http://localhost:1", no_such_option=1)
    with pytest.raises(TypeError):
        QdrantStore(qdrant_client.QdrantClient(":memory:"), api_key="x")
    with pytest.raises(TypeError):
        QdrantStore(42)
    remote = QdrantStore("https://localhost:1", api_key="secret", timeout=1, check_compatibility=False)
    assert "localhost" in repr(remote) and remote._engine.indexes_payload  # a server; nothing was sent


def test_collection_options_reach_every_documents_collection():
    client = qdrant_client.QdrantClient(":memory:")
    store = QdrantStore(client, collection_options={"metadata": {"owner": "search"}, "shard_number": 2})
    corpus = make_corpus(n_docs=40)
    index = cs.Index.create(store, "papers", dim=DIM)
    index.add(corpus.ids, corpus.embeddings)

    def documents() -> set[str]:
        names = {c.name for c in client.get_collections().collections if not c.name.endswith("catalogue")}
        assert names and all(client.get_collection(c).config.metadata == {"owner": "search"} for c in names)
        return names

    assert len(documents()) == 1
    index.retrain()  # in place: the same documents collection
    assert len(documents()) == 1 and len(cs.Index.open(store, "papers")) == 40
    store.drop_index("papers")
    cs.Index.create(store, "papers", dim=DIM).add(corpus.ids[:3], corpus.embeddings[:3])  # a new one
    assert len(documents()) == 1
    with pytest.raises(TypeError, match="no_such_option"):
        QdrantStore(client, collection_options={"no_such_option": 1})


def test_server_code_path_on_a_local_client():
    """What a server store runs: payload indexes, MatchAny on ``centroids`` in the query, no lock."""
    store = QdrantStore(":memory:")
    store._engine.indexes_payload = True
    with pytest.warns(UserWarning, match="[Pp]ayload index"):  # local mode ignores them, as documented
        store.create_index("papers", manifest())
    batch = make_batch([f"d{i}" for i in range(20)], seed=5, n_centroids=16)
    store.upsert("papers", batch)
    found = store.candidates("papers", np.array([3, 7]), parse_filter({"tag": {"$ne": "t0"}}))
    expected = {
        batch.ids[i] for i in range(len(batch))
        if i % 4 and np.isin(batch.centroid_ids[batch.token_offsets[i] : batch.token_offsets[i + 1]], [3, 7]).any()
    }
    assert by_id(store.fetch("papers", found)) == {k: v for k, v in by_id(batch).items() if k in expected}


def test_translated_filters_convert_to_grpc():
    """``prefer_grpc=True`` clients send filters as protobuf: every construct used must convert."""
    from qdrant_client import models
    from qdrant_client.conversions.conversion import RestToGrpc

    spec = {"$or": [
        {"lang": {"$gt": "abcdefghij"}}, {"$not": {"year": {"$nin": [1, 2.5]}}}, {"flag": {"$in": [True, False]}},
        {"year": {"$lte": 3, "$ne": 2}}, {"lang": {"$in": ["a", "b"]}}, {"x": True},
    ]}
    translated = qdrant.translate_filter(parse_filter(spec))
    assert isinstance(translated, models.Filter)
    assert RestToGrpc.convert_filter(translated).ByteSize() > 0


def test_missing_dependency_names_the_extra(monkeypatch):
    qdrant_client_module.models.cache_clear()
    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    monkeypatch.setitem(sys.modules, "qdrant_client.models", None)
    try:
        with pytest.raises(MissingDependencyError, match=r'colbert-store\[qdrant\]'):
            QdrantStore(":memory:")
    finally:
        qdrant_client_module.models.cache_clear()


# -- filters against the reference semantics -----------------------------------------------------
LONG = "é" * 130  # 260 UTF-8 bytes: stored order keys are truncated, equality still exact
VALUES: list[Any] = [
    0, 1, 3, -2, 2020, 2**53, 3.0, -0.0, 2.5, -7.25, 1e20, 0.1,
    "", "a", "ab", "abcdef", "abcdefg", "b", "B", "é", "z🚀", "2020", LONG, LONG + "x",
    True, False, None, [2020], ["a"], {"x": 1},
]
FIELDS = ["year", "lang", "a.b", 'q"uote', "ünï"]
SCALARS = [v for v in VALUES if isinstance(v, (str, int, float)) and v is not None] + [7, "zz", 1.5]


def reference_metadata() -> list[dict[str, Any]]:
    rng = np.random.default_rng(7)
    docs = []
    for i in range(len(VALUES) * 3):
        entry = {}
        for j, field in enumerate(FIELDS):
            if rng.random() < 0.8:
                entry[field] = VALUES[(i + 5 * j + int(rng.integers(0, 4))) % len(VALUES)]
        docs.append(entry)
    return docs


@pytest.fixture(scope="module")
def filter_store():
    store = QdrantStore(":memory:")
    store.create_index("papers", manifest())
    metadata = reference_metadata()
    store.upsert("papers", make_batch([f"d{i}" for i in range(len(metadata))], metadata=metadata))
    return store, metadata


def check_filter(filter_store, spec: dict) -> None:
    store, metadata = filter_store
    expr = parse_filter(spec)
    expected = sorted(f"d{i}" for i, entry in enumerate(metadata) if matches(expr, entry))
    assert candidate_ids(store, None, expr) == expected, spec


OPERATOR_CASES = [
    {"year": 2020}, {"year": 3}, {"year": 3.0}, {"year": -0.0}, {"year": 0}, {"year": 2.5}, {"year": 1e20},
    {"year": 10**20}, {"year": 10**20 + 1}, {"year": 2**53}, {"year": True}, {"year": False}, {"year": "2020"},
    {"year": ""}, {"lang": LONG}, {"lang": LONG + "x"},
    {"year": {"$ne": 2020}}, {"year": {"$ne": "a"}}, {"year": {"$ne": True}}, {"year": {"$ne": 2.5}},
    {"year": {"$gt": 2}}, {"year": {"$gte": 3}}, {"year": {"$lt": 2.5}}, {"year": {"$lte": -2}},
    {"year": {"$gt": 10**400}}, {"year": {"$lt": 10**400}}, {"year": {"$gt": -(10**400)}},
    {"lang": {"$gt": "a"}}, {"lang": {"$gte": "a"}}, {"lang": {"$lt": "ab"}}, {"lang": {"$lte": "ab"}},
    {"lang": {"$gt": ""}}, {"lang": {"$gte": ""}}, {"lang": {"$lt": ""}}, {"lang": {"$lte": ""}},
    {"lang": {"$gt": "abcdef"}}, {"lang": {"$lte": "abcdef"}}, {"lang": {"$lt": "é" * 96}}, {"lang": {"$gt": "é" * 96}},
    {"year": {"$in": [2020, 3, 2.5]}}, {"year": {"$in": ["a", "b"]}}, {"year": {"$in": [True, False]}},
    {"year": {"$in": [False]}}, {"year": {"$nin": [2020, 3.0]}}, {"year": {"$nin": ["a"]}}, {"year": {"$nin": [True]}},
    {"year": {"$nin": [True, False]}}, {"year": {"$gt": 0, "$lt": 2021}},
    {"a.b": 1}, {'q"uote': {"$ne": "a"}}, {"ünï": {"$gte": "b"}}, {"missing": {"$ne": 1}}, {"missing": {"$nin": ["a"]}},
    {"$not": {"year": 2020}}, {"$not": {"year": {"$ne": 2020}}}, {"$not": {"lang": {"$lt": "b"}}},
    {"$or": [{"year": 2020}, {"lang": "a"}]}, {"$and": [{"year": {"$gte": 0}}, {"$not": {"lang": "a"}}]},
    {"$not": {"$or": [{"year": {"$in": [1, 3]}}, {"$not": {"a.b": {"$nin": ["ab", "b"]}}}]}},
]


@pytest.mark.parametrize("spec", OPERATOR_CASES, ids=range(len(OPERATOR_CASES)))
def test_every_operator_matches_the_reference(filter_store, spec):
    check_filter(filter_store, spec)


def test_kinds_are_never_confused():
    store = QdrantStore(":memory:")
    store.create_index("papers", manifest())
    metadata = [{"x": 3.0}, {"x": 3}, {"x": True}, {"x": 1}, {"x": [3]}, {"x": "3"}, {"x": None}, {}]
    store.upsert("papers", make_batch([f"d{i}" for i in range(len(metadata))], metadata=metadata))

    def found(spec: dict) -> list[str]:
        return candidate_ids(store, None, parse_filter(spec))

    assert found({"x": 3}) == ["d0", "d1"]
    assert found({"x": 3.0}) == ["d0", "d1"]
    assert found({"x": True}) == ["d2"]
    assert found({"x": 1}) == ["d3"]
    assert found({"x": {"$ne": 3}}) == ["d3"]
    assert found({"x": {"$nin": ["4"]}}) == ["d5"]
    assert found({"$not": {"x": {"$ne": 3}}}) == ["d0", "d1", "d2", "d4", "d5", "d6", "d7"]


def test_string_ordering_on_a_too_long_value_raises():
    store = QdrantStore(":memory:")
    store.create_index("papers", manifest())
    with pytest.raises(FilterError, match="string ordering"):
        store.candidates("papers", None, parse_filter({"lang": {"$gt": "x" * 193}}))
    store.candidates("papers", None, parse_filter({"lang": {"$gt": "x" * 192}}))
    store.candidates("papers", None, parse_filter({"lang": {"$eq": "x" * 1000}}))


scalars = st.sampled_from(SCALARS)


def _comparison(field: str, op: str, value: Any) -> dict:
    return {field: {op: value}}


def _membership(field: str, op: str, kind_values: list) -> dict:
    return {field: {op: kind_values}}


same_kind_lists = st.sampled_from(["n", "s", "b"]).flatmap(
    lambda kind: st.lists(
        st.sampled_from([v for v in SCALARS if type(v) is not bool and isinstance(v, (int, float))] if kind == "n"
                        else [v for v in SCALARS if isinstance(v, str)] if kind == "s" else [True, False]),
        min_size=1, max_size=4,
    )
)
leaf = st.one_of(
    st.builds(_comparison, st.sampled_from(FIELDS), st.sampled_from(["$eq", "$ne"]), scalars),
    st.builds(
        _comparison, st.sampled_from(FIELDS), st.sampled_from(["$gt", "$gte", "$lt", "$lte"]),
        scalars.filter(lambda v: not isinstance(v, bool) and not (isinstance(v, str) and len(v.encode()) > 192)),
    ),
    st.builds(_membership, st.sampled_from(FIELDS), st.sampled_from(["$in", "$nin"]), same_kind_lists),
)
filters = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.builds(lambda c: {"$not": c}, inner),
        st.builds(lambda cs: {"$and": cs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda cs: {"$or": cs}, st.lists(inner, min_size=1, max_size=3)),
    ),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=filters)
def test_random_filters_match_the_reference(filter_store, spec):
    check_filter(filter_store, spec)


NO_NUL_TEXT = st.text(st.characters(exclude_characters="\x00"), max_size=14)  # NUL is refused in metadata and filters


@settings(max_examples=60, deadline=None)
@given(
    stored=st.lists(NO_NUL_TEXT, min_size=1, max_size=12),
    probe=NO_NUL_TEXT,
    op=st.sampled_from(["$gt", "$gte", "$lt", "$lte", "$eq", "$ne"]),
)
def test_string_order_matches_python(stored, probe, op):
    try:
        [s.encode("utf-8") for s in [*stored, probe]]
    except UnicodeEncodeError:
        return
    store = QdrantStore(":memory:")
    store.create_index("papers", manifest())
    store.upsert("papers", make_batch([f"d{i}" for i in range(len(stored))], metadata=[{"s": s} for s in stored]))
    expr = parse_filter({"s": {op: probe}})
    expected = sorted(f"d{i}" for i, s in enumerate(stored) if matches(expr, {"s": s}))
    assert candidate_ids(store, None, expr) == expected


# -- concurrency ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["memory", "path"])
def test_readers_and_a_writer_run_concurrently_without_errors(kind, tmp_path):
    store = QdrantStore(":memory:") if kind == "memory" else QdrantStore(str(tmp_path / "q"))
    store.create_index("papers", manifest())
    ids = [f"d{i}" for i in range(30)]
    store.upsert("papers", make_batch(ids, seed=0, first_revision=1))
    stop = time.monotonic() + 1.0
    errors: list[BaseException] = []
    reads = [0]

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while time.monotonic() < stop:
            try:
                found = store.candidates("papers", rng.integers(0, 64, 4), parse_filter({"i": {"$gte": 0}}))
                fetched = store.fetch("papers", found)
                assert len(fetched) <= len(found)
                assert fetched.residuals.shape[0] == fetched.token_offsets[-1]
                store.count("papers")
                reads[0] += 1
            except BaseException as error:  # noqa: BLE001 - collected and reported
                errors.append(error)
                return

    threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    revision = 1000
    while time.monotonic() < stop:
        chosen = ids[revision % 25 : revision % 25 + 5]
        store.upsert("papers", make_batch(chosen, seed=revision, first_revision=revision))
        store.delete("papers", chosen[:1])
        revision += 10
    for thread in threads:
        thread.join()
    store.close()
    assert not errors, errors[0]
    assert reads[0] > 0
