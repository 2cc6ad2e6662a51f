"""What a search reads: candidates from the warm cache answer exactly as the store would, on every
store, whether the cache holds every document or cannot."""

from __future__ import annotations

import numpy as np

from colbert_store import reading
from colbert_store.cache import CachedDocuments, DocumentCache
from colbert_store.reading import DocumentSource
from tests.conftest import make_corpus
from tests.test_index import build


def test_candidates_from_the_cache_equal_the_stores_before_and_after_writes(store):
    corpus = make_corpus(n_docs=80)
    index = build(store, corpus)
    everything = np.sort(store.candidates("papers", None, None))
    first = next(iter(store.scan("papers")))
    roomy = DocumentSource(store, "papers", DocumentCache())
    cramped = DocumentSource(store, "papers", DocumentCache(max_bytes=CachedDocuments(first).nbytes // 2))

    def assert_both_answer_as_the_store() -> None:
        for probes in (np.array([0, 3, 7]), np.arange(40, 64), np.array([5])):
            expected = set(store.candidates("papers", probes, None).tolist())
            for source in (roomy, cramped):
                assert set(source.candidates(probes, None).tolist()) == expected
                assert set(source.everything(None).tolist()) == set(store.candidates("papers", None, None).tolist())

    assert_both_answer_as_the_store()
    assert set(roomy.everything(None).tolist()) == set(everything.tolist())
    index.delete(corpus.ids[:10])
    index.add([corpus.ids[10]], [corpus.embeddings[11]], metadata=[{"replaced": True}])
    assert_both_answer_as_the_store()
    assert len(roomy.everything(None)) == 70


def test_unfiltered_searches_fill_the_cache_a_bounded_step_at_a_time_until_it_answers(store, monkeypatch):
    monkeypatch.setattr(reading, "FILL_DOCUMENTS", 30)
    corpus = make_corpus(n_docs=80)
    build(store, corpus)
    everything = np.sort(store.candidates("papers", None, None))
    source = DocumentSource(store, "papers", DocumentCache())
    probes = np.array([0, 3, 7])
    expected = set(store.candidates("papers", probes, None).tolist())
    for held in (30, 60, 80):  # a cold index is not read whole by its first search
        assert set(source.candidates(probes, None).tolist()) == expected
        assert (source.cache.lookup(everything)[1] >= 0).sum() == held
        assert source._live is not None and source._live.cached == (held == 80)
    assert set(source.candidates(probes, None).tolist()) == expected  # now from the cache
