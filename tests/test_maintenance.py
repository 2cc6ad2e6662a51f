"""Index health and retraining on every store: drift is detected, a retrain fixes it without losing
or changing a document, readers keep searching meanwhile, and other readers pick up the new codec."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import colbert_store as cs
from colbert_store.maxsim import maxsim
from colbert_store.storage import Store
from tests.conftest import Corpus, make_corpus

DRIFTED = make_corpus(n_docs=400, seed=1, prefix="new")  # other topics: far from the first codec's centroids


def trained_on(store: Store, corpus: Corpus) -> cs.Index:
    index = cs.Index.create(store, "papers", dim=corpus.embeddings[0].shape[1], n_centroids=32)
    index.add(corpus.ids, corpus.embeddings, texts=corpus.texts, metadata=corpus.metadata)
    return index


def with_drift(store: Store, corpus: Corpus) -> cs.Index:
    index = trained_on(store, corpus)
    index.add(DRIFTED.ids, DRIFTED.embeddings, texts=DRIFTED.texts, metadata=DRIFTED.metadata)
    return index


def exact_top(corpus_parts: list[Corpus], query: np.ndarray, k: int) -> list[str]:
    ids = [doc_id for part in corpus_parts for doc_id in part.ids]
    docs = [doc for part in corpus_parts for doc in part.embeddings]
    scores = maxsim(query, np.concatenate(docs), np.concatenate([[0], np.cumsum([len(d) for d in docs])]))
    return [ids[i] for i in np.argsort(-scores)[:k]]


def recall(index: cs.Index, corpus_parts: list[Corpus], queries: list[np.ndarray], k: int = 10) -> float:
    found = [
        len({hit.id for hit in index.search(q, k=k, ncandidates=1000, nrerank=1000)} & set(exact_top(corpus_parts, q, k)))
        for q in queries
    ]
    return sum(found) / (k * len(queries))


def snapshot(index: cs.Index) -> dict[str, tuple[str | None, dict, int]]:
    return {
        doc_id: (batch.texts[row], batch.metadata[row], int(np.diff(batch.token_offsets)[row]))
        for batch in index.documents()
        for row, doc_id in enumerate(batch.ids)
    }


def test_health_of_a_fresh_index_matches_its_training_sample(store: Store, corpus: Corpus) -> None:
    health = trained_on(store, corpus).health()
    assert (health.documents, health.tokens) == (len(corpus.ids), sum(len(e) for e in corpus.embeddings))
    assert health.generation == 0
    assert 0.8 < health.error_ratio < 1.2
    assert not health.needs_retrain


def test_drifted_data_is_reported_and_retraining_fixes_it(store: Store, corpus: Corpus) -> None:
    index = with_drift(store, corpus)
    before = index.health()
    assert before.error_ratio > 2 and before.needs_retrain
    documents = snapshot(index)
    old_codec = index.codec

    index.retrain()  # from the decoded vectors

    after = index.health()
    assert after.generation == 1 and not after.needs_retrain
    assert after.mean_sq_error < before.mean_sq_error / 2
    assert snapshot(index) == documents
    assert cs.Index.open(store, "papers").health() == after
    assert store.list_indexes() == ["papers"]
    more = np.concatenate(make_corpus(n_docs=100, seed=1).embeddings)  # more drifted data fits the new codec better
    errors = [codec.sq_errors(more, *codec.compress(more)).mean() for codec in (old_codec, index.codec)]
    assert errors[1] < 0.9 * errors[0], errors


def originals_of(*parts: Corpus) -> Callable[[list[str]], list[np.ndarray]]:
    """Stands in for the encoder: each text's original token vectors."""
    originals = {text: doc for part in parts for text, doc in zip(part.texts, part.embeddings)}
    return lambda texts: [originals[text] for text in texts]


def test_retrain_from_text_restores_recall(store: Store, corpus: Corpus) -> None:
    """Re-encoding from text (here: the original vectors) under the new codec beats the drifted codec."""
    index = with_drift(store, corpus)
    queries = [DRIFTED.query(topic, seed=topic) for topic in range(10)]
    recall_before = recall(index, [corpus, DRIFTED], queries)
    index.retrain(encode_texts=originals_of(corpus, DRIFTED))
    codec = index.codec
    assert codec is not None
    vectors = np.concatenate(corpus.embeddings + DRIFTED.embeddings)
    expected_error = codec.sq_errors(vectors, *codec.compress(vectors)).mean()
    health = index.health()
    assert health.mean_sq_error == pytest.approx(expected_error, rel=1e-5)
    assert not health.needs_retrain
    assert recall(index, [corpus, DRIFTED], queries) > recall_before


def test_a_failed_retrain_leaves_the_index_as_it_was(store: Store, corpus: Corpus) -> None:
    index = with_drift(store, corpus)
    query = corpus.query(3)
    hits = index.search(query, k=10)

    def broken_encoder(texts: list[str]) -> list[np.ndarray]:
        raise RuntimeError("encoder crashed")

    with pytest.raises(RuntimeError, match="encoder crashed"):
        index.retrain(encode_texts=broken_encoder)
    assert index.health().generation == 0
    assert index.search(query, k=10) == hits
    assert cs.Index.open(store, "papers").search(query, k=10) == hits
    assert store.list_indexes() == ["papers"]


def test_readers_keep_searching_during_a_retrain(store: Store, corpus: Corpus) -> None:
    index = with_drift(store, corpus)
    query = corpus.query(0)
    old_top = index.search(query, k=1)[0].id
    failures: list[BaseException] = []
    tops: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                tops.append(index.search(query, k=5)[0].id)
            except BaseException as error:  # noqa: BLE001 - reported below
                failures.append(error)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    index.retrain()
    stop.set()
    for thread in threads:
        thread.join()
    assert failures == []
    assert tops and set(tops) <= {old_top, index.search(query, k=1)[0].id}  # the old version or the new


def test_another_reader_picks_up_the_new_codec(store_factory: Callable[[], Store], corpus: Corpus) -> None:
    """A second connection (as another process would have) notices the retrain by the revisions it
    gets back and reloads the codec instead of decoding new documents with the old one."""
    index = with_drift(store_factory(), corpus)
    other = cs.Index.open(store_factory(), "papers")
    query = DRIFTED.query(4)
    other.search(query, k=5)  # cache the old codec and documents
    index.retrain()
    assert other.health() == index.health()  # measured against the new codec, not the one it held
    assert other.search(query, k=5) == index.search(query, k=5)
    assert other.codec is not None and index.codec is not None
    np.testing.assert_array_equal(other.codec.centroids, index.codec.centroids)


def test_health_and_retrain_need_a_trained_index(store: Store) -> None:
    index = cs.Index.create(store, "empty", dim=32)
    with pytest.raises(cs.NotTrainedError, match="add documents first"):
        index.health()
    with pytest.raises(cs.NotTrainedError, match="add documents first"):
        index.retrain()


def test_an_incompatible_format_version_is_refused(store: Store, corpus: Corpus) -> None:
    trained_on(store, corpus)
    manifest = store.read_manifest("papers")
    changed = {**manifest, "format_version": 99, "version": manifest["version"] + 1}
    assert store.replace_manifest("papers", changed, expected_version=manifest["version"])
    with pytest.raises(cs.IncompatibleIndexError, match="format version 99 is not supported"):
        cs.Index.open(store, "papers")


class _Trap:
    """Unpickling this creates a file: the test's proof that nothing was unpickled."""

    def __init__(self, sentinel: str) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.sentinel, "w"))


def test_a_codec_holding_pickled_objects_is_refused_unread(store: Store, corpus: Corpus, tmp_path: Path) -> None:
    trained_on(store, corpus)
    manifest = store.read_manifest("papers")
    sentinel = tmp_path / "unpickled"
    buffer = io.BytesIO()
    np.savez(buffer, centroids=np.array([_Trap(str(sentinel))], dtype=object))
    store.write_codec("papers", "trap", buffer.getvalue())
    codecs = {**manifest["codecs"], "current": {"generation": 1, "codec_id": "trap"}}
    changed = {**manifest, "codecs": codecs, "version": manifest["version"] + 1}
    assert store.replace_manifest("papers", changed, expected_version=manifest["version"])
    with pytest.raises(cs.IncompatibleIndexError, match="not a codec this version can read"):
        cs.Index.open(store, "papers")
    assert not sentinel.exists()


def test_a_reader_opened_before_the_first_add_sees_it(store_factory: Callable[[], Store], corpus: Corpus) -> None:
    reader = cs.Index.create(store_factory(), "papers", dim=corpus.embeddings[0].shape[1])
    assert reader.search(corpus.query(2), k=3) == []
    writer = cs.Index.open(store_factory(), "papers")
    writer.add(corpus.ids, corpus.embeddings, texts=corpus.texts)
    assert reader.search(corpus.query(2), k=3) == writer.search(corpus.query(2), k=3) != []
