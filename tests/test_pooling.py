"""Token pooling (``pool_factor``): how many vectors a document keeps, what they are, and the setting's life."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import colbert_store as cs
from colbert_store.adapters.lancedb import LanceDBStore
from colbert_store.pooling import MIN_POOLED_TOKENS, pool_documents, pooled_length
from colbert_store.storage import Store
from tests.conftest import DIM, Corpus

THOROUGH = {"nprobe": 64, "ncandidates": 10_000, "nrerank": 10_000, "centroid_threshold": None}
"""Search settings that score every document exactly (the brute-force comparison)."""


def stored_lengths(index: cs.Index) -> dict[str, int]:
    """Vectors each stored document holds, by id."""
    return {doc_id: int(n) for batch in index.documents() for doc_id, n in zip(batch.ids, np.diff(batch.token_offsets))}


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def exact_top(query: np.ndarray, ids: list[str], docs: list[np.ndarray], k: int) -> list[str]:
    scores = np.array([(query @ doc.T).max(axis=1).sum() for doc in docs])
    return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


@pytest.mark.parametrize("pool_factor", [1, 2, 3])
def test_a_document_of_n_tokens_stores_ceil_n_over_the_pool_factor(store: Store, corpus: Corpus, pool_factor: int) -> None:
    index = cs.Index.create(store, "pooled", dim=DIM, pool_factor=pool_factor)
    index.add(corpus.ids, corpus.embeddings)
    lengths = [len(doc) for doc in corpus.embeddings]
    assert min(lengths) < MIN_POOLED_TOKENS <= max(lengths)  # both kinds of document are in the corpus
    expected = {
        doc_id: n if n < MIN_POOLED_TOKENS else math.ceil(n / pool_factor) for doc_id, n in zip(corpus.ids, lengths)
    }
    assert stored_lengths(index) == expected
    assert index.stats()["tokens"] == sum(expected.values())


def test_a_pooled_index_stores_and_ranks_the_pooled_vectors(store: Store, corpus: Corpus) -> None:
    """What is stored decodes to the pooled vectors (up to the 4-bit codec), and search ranks the stored
    documents as exact MaxSim over their decoded vectors does."""
    index = cs.Index.create(store, "pooled", dim=DIM, nbits=4, pool_factor=2)
    index.add(corpus.ids, corpus.embeddings)
    codec = index.codec
    assert codec is not None
    (stored,) = [batch for batch in index.documents(batch_size=len(corpus.ids))]
    decoded = np.split(codec.decompress(stored.centroid_ids, stored.residuals), stored.token_offsets[1:-1])
    pooled = dict(zip(corpus.ids, pool_documents(corpus.embeddings, 2)))
    cosines = np.concatenate([np.sum(doc * pooled[doc_id], axis=1) for doc_id, doc in zip(stored.ids, decoded)])
    assert cosines.min() > 0.97
    for topic in range(5):
        query = corpus.query(topic, seed=topic)
        hits = index.search(query, k=10, **THOROUGH)
        assert [hit.id for hit in hits] == exact_top(query, stored.ids, decoded, 10)


def test_pooled_vectors_are_unit_length_means_of_similar_tokens() -> None:
    """Ten tokens made of five tight pairs pool (factor 2) into the five pairs' normalised means."""
    rng = np.random.default_rng(7)
    directions = unit(rng.standard_normal((5, DIM)))
    pairs = unit(np.repeat(directions, 2, axis=0) + 0.01 * rng.standard_normal((10, DIM)))
    order = rng.permutation(10)
    (pooled,) = pool_documents([pairs[order]], 2)
    assert pooled.shape == (5, DIM) and pooled.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, rtol=1e-6)
    means = unit(pairs.reshape(5, 2, DIM).sum(axis=1))
    matched = np.argmax(pooled @ means.T, axis=1)
    assert sorted(matched.tolist()) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(pooled, means[matched], atol=1e-6)


def test_edge_cases_of_pooling_a_batch() -> None:
    """No documents pool to none; a group whose vectors cancel out keeps one of them, still unit length."""
    assert pool_documents([], 2) == []
    opposite = np.zeros((8, DIM), np.float32)
    opposite[:4, 0], opposite[4:, 0] = 1.0, -1.0
    (pooled,) = pool_documents([opposite], 8)
    assert pooled.shape == (1, DIM) and abs(abs(pooled[0, 0]) - 1.0) < 1e-6


def test_identical_tokens_still_pool_into_the_promised_number_of_vectors() -> None:
    """Tied merge heights (repeated tokens) must not merge more than n - ceil(n / pool_factor) times."""
    rng = np.random.default_rng(3)
    repeated = np.repeat(unit(rng.standard_normal((3, DIM))), 10, axis=0)
    for factor in (2, 3, 4):
        (pooled,) = pool_documents([repeated], factor)
        assert len(pooled) == pooled_length(30, factor) == math.ceil(30 / factor)
        np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, rtol=1e-6)


def test_the_pool_factor_survives_close_and_reopen(store_factory: Callable[[], Store], corpus: Corpus) -> None:
    store = store_factory()
    cs.Index.create(store, "pooled", dim=DIM, pool_factor=3)
    store.close()
    reopened = cs.Index.open(store_factory(), "pooled")
    assert reopened.settings.pool_factor == 3
    assert "pool_factor=3" in repr(reopened)
    reopened.add(corpus.ids[:20], corpus.embeddings[:20])
    assert stored_lengths(reopened) == {
        doc_id: pooled_length(len(doc), 3) for doc_id, doc in zip(corpus.ids[:20], corpus.embeddings[:20])
    }


@pytest.mark.parametrize("bad", [0, -2, 2.5, 2.0, True, "2", None])
def test_a_bad_pool_factor_raises_and_creates_nothing(store: Store, bad: object) -> None:
    with pytest.raises(cs.InvalidInputError, match="pool_factor must be a positive integer"):
        cs.Index.create(store, "pooled", dim=DIM, pool_factor=bad)
    assert store.list_indexes() == []


def test_retrain_from_text_pools_the_re_encoded_documents(tmp_path: Path, corpus: Corpus) -> None:
    originals = dict(zip(corpus.texts, corpus.embeddings))
    index = cs.Index.create(LanceDBStore(tmp_path), "pooled", dim=DIM, pool_factor=2)
    index.add(corpus.ids, corpus.embeddings, texts=corpus.texts)
    before = stored_lengths(index)
    index.retrain(encode_texts=lambda texts: [originals[text] for text in texts])
    assert index.health().generation == 1
    assert stored_lengths(index) == before == {
        doc_id: pooled_length(len(doc), 2) for doc_id, doc in zip(corpus.ids, corpus.embeddings)
    }


def test_train_pools_a_list_of_documents_as_add_would(tmp_path: Path, corpus: Corpus) -> None:
    """A codec trained on a list of documents is the codec the first add of those documents fits: both
    see the pooled vectors (fewer of them, hence fewer centroids than on the unpooled ones)."""
    store = LanceDBStore(tmp_path)
    docs = corpus.embeddings[:30]
    trained = cs.Index.create(store, "trained", dim=DIM, pool_factor=4)
    trained.train(docs)
    added = cs.Index.create(store, "added", dim=DIM, pool_factor=4)
    added.add(corpus.ids[:30], docs)
    unpooled = cs.Index.create(store, "unpooled", dim=DIM)
    unpooled.train(docs)
    assert trained.codec is not None and added.codec is not None and unpooled.codec is not None
    np.testing.assert_array_equal(trained.codec.centroids, added.codec.centroids)
    assert trained.codec.n_centroids < unpooled.codec.n_centroids
