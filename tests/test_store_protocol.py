"""The storage protocol, one test body per duty, run on every store: catalogue, manifest
compare-and-set, codecs, document writes (conditional ones included), candidates and scans."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from colbert_store.errors import IndexExistsError, IndexNotFoundError
from colbert_store.filters import parse_filter
from tests.batches import by_id, candidate_ids, make_batch, manifest, stored


# -- catalogue and manifests ----------------------------------------------------------------------
def test_manifests_roundtrip_and_the_catalogue_lists_indexes(store):
    assert store.list_indexes() == []
    store.create_index("papers", manifest())
    store.create_index("other-index_2", manifest(extra="x"))
    assert store.list_indexes() == ["other-index_2", "papers"]
    assert store.read_manifest("papers") == manifest()
    assert store.read_manifest("other-index_2") == manifest(extra="x")
    store.drop_index("papers")
    assert store.list_indexes() == ["other-index_2"]
    store.create_index("papers", manifest(fresh=True))  # a dropped name can be created again, empty
    assert store.read_manifest("papers") == manifest(fresh=True) and store.count("papers") == 0


def test_replace_manifest_is_a_compare_and_set_on_the_version(store):
    store.create_index("papers", manifest())
    assert store.replace_manifest("papers", manifest(2, step="b"), expected_version=1)
    assert not store.replace_manifest("papers", manifest(2, step="lost"), expected_version=1)
    assert store.read_manifest("papers") == manifest(2, step="b")
    for version in range(3, 12):  # past the versions a store may look ahead for in one read
        assert store.replace_manifest("papers", manifest(version), expected_version=version - 1)
    assert store.read_manifest("papers") == manifest(11)
    assert not store.replace_manifest("papers", manifest(5), expected_version=4)
    assert store.read_manifest("papers")["version"] == 11


def test_of_many_concurrent_commits_over_one_version_exactly_one_wins(store):
    store.create_index("papers", manifest())
    won: list[int] = []
    barrier = threading.Barrier(6)

    def commit(who: int) -> None:
        barrier.wait()
        if store.replace_manifest("papers", manifest(2, who=who), expected_version=1):
            won.append(who)

    threads = [threading.Thread(target=commit, args=(who,)) for who in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert store.read_manifest("papers") == manifest(2, who=won[0])


def test_of_concurrent_creations_of_one_index_exactly_one_wins(store):
    outcomes: list[str] = []
    barrier = threading.Barrier(5)

    def create(who: int) -> None:
        barrier.wait()
        try:
            store.create_index("papers", manifest(who=who))
            outcomes.append(f"created {who}")
        except IndexExistsError:
            outcomes.append("exists")

    threads = [threading.Thread(target=create, args=(who,)) for who in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    created = [outcome for outcome in outcomes if outcome.startswith("created")]
    assert len(created) == 1 and outcomes.count("exists") == 4
    assert store.list_indexes() == ["papers"]
    assert store.read_manifest("papers") == manifest(who=int(created[0].split()[1]))
    store.upsert("papers", make_batch(["a"]))
    assert store.count("papers") == 1


def test_exists_and_not_found_errors(store):
    store.create_index("papers", manifest())
    with pytest.raises(IndexExistsError, match="papers"):
        store.create_index("papers", manifest())
    for call in (
        lambda: store.read_manifest("nothing"),
        lambda: store.replace_manifest("nothing", manifest(2), expected_version=1),
        lambda: store.drop_index("nothing"),
        lambda: store.count("nothing"),
        lambda: store.upsert("nothing", make_batch(["a"])),
        lambda: store.delete("nothing", ["a"]),
        lambda: store.candidates("nothing", np.array([1]), None),
        lambda: store.candidates("nothing", None, parse_filter({"x": 1})),
        lambda: store.fetch("nothing", np.array([1])),
        lambda: list(store.scan("nothing")),
    ):
        with pytest.raises(IndexNotFoundError, match="nothing"):
            call()


# -- codecs ---------------------------------------------------------------------------------------
def test_codecs_are_written_once_read_by_id_and_deleted(store):
    store.create_index("papers", manifest())
    large = np.random.default_rng(0).bytes(9 << 20)  # more than one request's worth on a server
    store.write_codec("papers", "small", b"\x00codec\xff")
    store.write_codec("papers", "large", large)
    assert store.read_codec("papers", "small") == b"\x00codec\xff"
    assert store.read_codec("papers", "large") == large
    with pytest.raises(KeyError):
        store.read_codec("papers", "never-written")
    store.delete_codecs("papers", ["large", "never-written"])
    with pytest.raises(KeyError):
        store.read_codec("papers", "large")
    assert store.read_codec("papers", "small") == b"\x00codec\xff"
    store.drop_index("papers")
    store.create_index("papers", manifest())
    with pytest.raises(KeyError):  # dropping an index drops its codecs
        store.read_codec("papers", "small")


# -- documents ------------------------------------------------------------------------------------
def test_upsert_fetch_roundtrip(store):
    store.create_index("papers", manifest())
    batch = make_batch([f"doc-{i}" for i in range(40)], metadata=[
        {"i": i, "f": i / 3, "s": "x" * i, "b": i % 2 == 0, "l": [i, "a", None], "d": {"k": {"z": i}}, "n": None}
        for i in range(40)
    ])
    store.upsert("papers", batch)
    assert store.count("papers") == 40
    fetched = store.fetch("papers", batch.revisions[::-1])
    assert fetched.centroid_ids.dtype == np.uint16
    assert fetched.residuals.shape[1] == batch.residuals.shape[1]
    assert by_id(fetched) == by_id(batch)
    assert store.fetch("papers", np.array([10_000, -1])).ids == []
    assert store.fetch("papers", np.array([], dtype=np.int64)).ids == []
    assert sorted(store.fetch("papers", np.array([3, 5, 999])).ids) == ["doc-2", "doc-4"]


def test_uint32_centroid_ids_roundtrip(store):
    store.create_index("papers", manifest())
    batch = make_batch(["a", "b", "c"], n_centroids=200_000, dtype=np.uint32)
    store.upsert("papers", batch)
    fetched = store.fetch("papers", batch.revisions)
    assert fetched.centroid_ids.dtype == np.uint32
    assert by_id(fetched) == by_id(batch)


def test_replace_by_id_keeps_one_document_with_new_data(store):
    store.create_index("papers", manifest())
    store.upsert("papers", make_batch(["a", "b"], seed=1, first_revision=1))
    new = make_batch(["a"], seed=2, first_revision=10, metadata=[{"new": True}])
    store.upsert("papers", new)
    assert store.count("papers") == 2
    assert store.fetch("papers", np.array([1])).ids == []  # the old revision is gone
    assert by_id(store.fetch("papers", np.array([10]))) == by_id(new)
    assert stored(store) == {"a": 10, "b": 2}


def test_a_conditional_write_applies_only_to_documents_still_at_the_revision_read(store):
    """``replacing``: update where the stored revision is the one read; never undo a newer write or
    bring back a deleted document."""
    store.create_index("papers", manifest())
    store.upsert("papers", make_batch(["kept", "replaced", "deleted"], first_revision=1))
    store.upsert("papers", make_batch(["replaced"], seed=5, first_revision=50))  # a concurrent replace
    store.delete("papers", ["deleted"])
    reencoded = make_batch(["kept", "replaced", "deleted", "never-stored"], seed=9, first_revision=100)
    store.upsert("papers", reencoded, replacing=np.array([1, 2, 3, 4]))
    assert stored(store) == {"kept": 100, "replaced": 50}
    assert by_id(store.fetch("papers", np.array([100])))["kept"] == by_id(reencoded)["kept"]


def test_delete_and_count(store):
    store.create_index("papers", manifest())
    store.upsert("papers", make_batch([f"d{i}" for i in range(10)]))
    store.delete("papers", ["d1", "d3", "never-stored", "d3"])
    store.delete("papers", [])
    assert store.count("papers") == 8
    assert sorted(stored(store)) == sorted(f"d{i}" for i in range(10) if i not in (1, 3))


def test_scan_returns_every_document_in_batches(store):
    store.create_index("papers", manifest())
    batch = make_batch([f"d{i}" for i in range(25)])
    store.upsert("papers", batch)
    parts = list(store.scan("papers", batch_size=7))
    assert sum(len(part) for part in parts) == 25 and max(len(part) for part in parts) <= 7
    merged = {}
    for part in parts:
        merged.update(by_id(part))
    assert merged == by_id(batch)
    store.create_index("empty", manifest())
    assert list(store.scan("empty")) == []


def test_candidates_are_exactly_the_documents_holding_a_probed_centroid(store):
    store.create_index("papers", manifest())
    batch = make_batch([f"d{i}" for i in range(60)], seed=3, n_centroids=40)
    store.upsert("papers", batch)
    rng = np.random.default_rng(4)
    for _ in range(5):
        probes = rng.choice(40, size=3, replace=False).astype(np.int64)
        expected = {
            int(batch.revisions[i])
            for i in range(len(batch))
            if np.isin(batch.centroid_ids[batch.token_offsets[i] : batch.token_offsets[i + 1]], probes).any()
        }
        found = store.candidates("papers", probes, None)
        assert found.dtype == np.int64 and sorted(found.tolist()) == sorted(expected)
    assert store.candidates("papers", np.array([], dtype=np.int64), None).tolist() == []
    where = parse_filter({"tag": "t1"})
    assert candidate_ids(store, np.arange(40), where) == sorted(doc_id for i, doc_id in enumerate(batch.ids) if i % 4 == 1)


def test_centroid_lists_are_each_documents_distinct_centroid_ids_and_candidates_come_with_theirs(store):
    store.create_index("papers", manifest())
    batch = make_batch([f"d{i}" for i in range(30)], seed=5, n_centroids=200_000, dtype=np.uint32)
    store.upsert("papers", batch)
    expected = {
        int(rev): sorted(set(batch.centroid_ids[batch.token_offsets[i] : batch.token_offsets[i + 1]].tolist()))
        for i, rev in enumerate(batch.revisions)
    }

    def listed(revisions: np.ndarray | None, name: str = "papers") -> dict[int, list[int]]:
        found, offsets, centroids = store.centroid_lists(name, revisions)
        assert len(offsets) == len(found) + 1 and offsets[-1] == len(centroids)
        return {int(rev): centroids[offsets[i] : offsets[i + 1]].tolist() for i, rev in enumerate(found)}

    assert listed(None) == expected
    probes = np.unique(batch.centroid_ids[:40]).astype(np.int64)
    for where in (None, parse_filter({"tag": "t1"})):
        found, offsets, centroids = store.candidate_lists("papers", probes, where)
        assert sorted(found.tolist()) == sorted(store.candidates("papers", probes, where).tolist())
        assert {int(rev): centroids[offsets[i] : offsets[i + 1]].tolist() for i, rev in enumerate(found)} == {
            int(rev): expected[int(rev)] for rev in found
        }
    asked = batch.revisions[[7, 3, 20]]
    assert listed(np.concatenate([asked, [10_000]])) == {int(rev): expected[int(rev)] for rev in asked}
    store.delete("papers", ["d3"])
    assert set(listed(asked)) == {int(batch.revisions[7]), int(batch.revisions[20])}
    store.create_index("empty", manifest())
    assert listed(None, "empty") == {}


def test_awkward_ids_roundtrip(store):
    store.create_index("papers", manifest())
    ids = ["ünïcödé ✓ 文档 🚀", 'quo"te\'s', "back\\slash", "x" * 4096, "new\nline\ttab", " ", "1", "1.0"]
    batch = make_batch(ids)
    store.upsert("papers", batch)
    assert store.count("papers") == len(ids)
    assert by_id(store.fetch("papers", batch.revisions)) == by_id(batch)
    store.delete("papers", ids[:2])
    assert sorted(stored(store)) == sorted(ids[2:])
