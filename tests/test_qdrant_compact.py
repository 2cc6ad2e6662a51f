"""Compact Qdrant collections: tokens as rows of a uint8 multivector, on Qdrant Edge and qdrant-client's
local mode (the conformance, hostile-input and crash suites run on Edge compact through conftest too)."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import colbert_store as cs
from colbert_store.adapters.qdrant import QdrantStore
from colbert_store.adapters.qdrant.engine import TOKEN_VECTOR
from colbert_store.adapters.qdrant.records import point_id
from colbert_store.adapters.qdrant_edge import QdrantEdgeStore
from colbert_store.errors import InvalidInputError
from tests.batches import RESIDUAL_BYTES, by_id, make_batch, manifest
from tests.conftest import DIM, make_corpus


def stored_payload(store, name: str, doc_id: str) -> dict:
    docs = store._collections[name]
    [record] = store._engine.retrieve(docs, [point_id(doc_id)], None)
    return record.payload


@pytest.fixture(params=["edge", "memory"])
def compact_store(request: pytest.FixtureRequest, tmp_path: Path):
    opened = QdrantEdgeStore(tmp_path / "edge", compact=True) if request.param == "edge" else QdrantStore(
        ":memory:", compact=True
    )
    yield opened
    opened.close()


def test_tokens_live_in_the_multivector_not_the_payload(compact_store):
    compact_store.create_index("papers", manifest())
    batch = make_batch([f"d{i}" for i in range(30)], seed=3)
    compact_store.upsert("papers", batch)
    assert by_id(compact_store.fetch("papers", batch.revisions)) == by_id(batch)
    assert by_id(next(compact_store.scan("papers"))) == by_id(batch)
    payload = stored_payload(compact_store, "papers", "d4")
    assert not {"codes", "residuals", "codes_high"} & payload.keys()
    docs = compact_store._collections["papers"]
    assert compact_store._engine.token_width(docs) == 2 + RESIDUAL_BYTES
    [record] = compact_store._engine.retrieve(docs, [point_id("d4")], ["rev"], tokens=True)
    start, end = batch.token_offsets[4], batch.token_offsets[5]
    assert record.tokens.tolist() == [
        [int(code) & 0xFF, int(code) >> 8, *residual] for code, residual in
        zip(batch.centroid_ids[start:end], batch.residuals[start:end].tolist())
    ]
    assert compact_store.size_bytes("papers") == (2 + RESIDUAL_BYTES) * int(batch.token_offsets[-1])


def test_centroid_ids_past_16_bits_keep_their_high_half_in_the_payload(compact_store):
    compact_store.create_index("papers", manifest())
    narrow = make_batch(["a", "b"], seed=1, n_centroids=64, dtype=np.uint32)
    wide = make_batch(["c", "d"], seed=2, n_centroids=1 << 20, dtype=np.uint32, first_revision=3)
    compact_store.upsert("papers", narrow)
    compact_store.upsert("papers", wide)
    assert by_id(compact_store.fetch("papers", np.array([1, 2, 3, 4]))) == {**by_id(narrow), **by_id(wide)}
    assert "codes_high" not in stored_payload(compact_store, "papers", "a")
    high = np.frombuffer(base64.b64decode(stored_payload(compact_store, "papers", "c")["codes_high"]), "<u2")
    assert high.tolist() == (wide.centroid_ids[: wide.token_offsets[1]] >> 16).tolist()


def test_an_index_moves_between_layouts_and_searches_the_same(tmp_path):
    corpus = make_corpus(120, seed=4)
    plain = QdrantEdgeStore(tmp_path / "plain")
    index = cs.Index.create(plain, "papers", dim=DIM, n_centroids=32)
    index.add(corpus.ids, corpus.embeddings, texts=corpus.texts, metadata=corpus.metadata)
    compact = QdrantEdgeStore(tmp_path / "compact", compact=True)
    cs.copy_index(plain, compact, "papers")
    back = QdrantStore(":memory:")
    cs.copy_index(compact, back, "papers")
    for store in (compact, back):
        moved = cs.Index.open(store, "papers")
        for topic in range(4):
            query = corpus.query(topic)
            expected = [(hit.id, hit.score) for hit in index.search(query, k=10, filter={"open": True})]
            assert [(hit.id, hit.score) for hit in moved.search(query, k=10, filter={"open": True})] == expected
    assert compact._engine.token_width(compact._collections["papers"]) == 2 + DIM * 2 // 8
    assert back._engine.token_width(back._collections["papers"]) is None
    for store in (plain, compact, back):
        store.close()


def test_a_plain_store_reads_a_compact_index(tmp_path):
    """The layout belongs to the collection: any store on the folder reads it as it was written."""
    writer = QdrantEdgeStore(tmp_path / "edge", compact=True)
    writer.create_index("papers", manifest())
    batch = make_batch([f"d{i}" for i in range(10)])
    writer.upsert("papers", batch)
    assert repr(writer).endswith("prefix='colbert_store', compact=True)")
    writer.close()
    reader = QdrantEdgeStore(tmp_path / "edge")
    assert "compact" not in repr(reader)
    assert by_id(reader.fetch("papers", batch.revisions)) == by_id(batch)
    reader.upsert("papers", make_batch(["d0"], seed=9, first_revision=20))
    assert "codes" not in stored_payload(reader, "papers", "d0")
    config = json.loads(next((tmp_path / "edge").glob("*__papers__*/edge_config.json")).read_text())
    assert config["vectors"][TOKEN_VECTOR]["datatype"] == "uint8"
    reader.close()


@pytest.mark.parametrize("bad", [1, "yes", None, 0.0])
def test_a_bad_compact_flag_is_refused_before_anything_is_created(tmp_path, bad):
    with pytest.raises(InvalidInputError, match="compact"):
        QdrantEdgeStore(tmp_path / "edge", compact=bad)
    assert not (tmp_path / "edge").exists()
    with pytest.raises(InvalidInputError, match="compact"):
        QdrantStore(":memory:", compact=bad)


def test_tokens_that_do_not_fit_the_rows_leave_the_index_as_it_was(compact_store):
    compact_store.create_index("papers", manifest())
    compact_store.upsert("papers", make_batch(["a"]))
    batch = make_batch(["b", "c"], first_revision=5)
    wider = dataclasses.replace(batch, residuals=np.zeros((int(batch.token_offsets[-1]), 12), np.uint8))
    with pytest.raises(InvalidInputError, match="12 residual bytes"):
        compact_store.upsert("papers", wider)
    assert compact_store.count("papers") == 1


def test_a_manifest_without_token_settings_creates_nothing(compact_store):
    with pytest.raises(InvalidInputError, match="settings.dim"):
        compact_store.create_index("papers", {"format_version": 1, "version": 1})
    assert compact_store.list_indexes() == []
