"""What a search reads: candidates from memory (the warm cache, or the centroid map of an index too
large for it) answer exactly as the store would, on every store, before and after writes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import colbert_store as cs
from colbert_store import reading
from colbert_store.cache import CachedDocuments, DocumentCache
from colbert_store.errors import InvalidInputError
from colbert_store.reading import DocumentSource
from tests.conftest import make_corpus
from tests.test_index import build


def answered(source: DocumentSource, probes: np.ndarray | None, where=None) -> set[int]:
    lists, slots = source.candidate_lists(probes, where)
    return set(lists.revisions[slots].tolist())


def wait_for_map(source: DocumentSource) -> None:
    deadline = time.monotonic() + 30
    while (source._live is None or source._live.mapped is None) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_candidates_from_memory_equal_the_stores_before_and_after_writes(store):
    corpus = make_corpus(n_docs=80)
    index = build(store, corpus)
    first = next(iter(store.scan("papers")))
    roomy = DocumentSource(store, "papers", DocumentCache())
    mapped = DocumentSource(store, "papers", DocumentCache(max_bytes=CachedDocuments.of(first).nbytes // 2))
    neither = DocumentSource(store, "papers", DocumentCache(max_bytes=0))  # not even the lists fit: the store answers

    def assert_all_answer_as_the_store() -> None:
        for _ in range(2):  # the second time from the map, which a background thread brings up to date
            for probes in (np.array([0, 3, 7]), np.arange(40, 64), np.array([5]), None):
                expected = set(store.candidates("papers", probes, None).tolist())
                for source in (roomy, mapped, neither):
                    assert answered(source, probes) == expected
            wait_for_map(mapped)
        assert roomy._live is not None and roomy._live.cached and roomy._live.mapped is None
        assert mapped._live is not None and not mapped._live.cached and mapped._live.mapped is not None
        assert neither._live is not None and neither._live.mapped is None and not neither._live.cached

    assert_all_answer_as_the_store()
    index.delete(corpus.ids[:10])
    index.add([corpus.ids[10]], [corpus.embeddings[11]], metadata=[{"replaced": True}])
    assert_all_answer_as_the_store()
    assert len(answered(mapped, None)) == 70


def test_unfiltered_searches_fill_the_cache_a_bounded_step_at_a_time_until_it_answers(store, monkeypatch):
    monkeypatch.setattr(reading, "FILL_DOCUMENTS", 30)
    corpus = make_corpus(n_docs=80)
    build(store, corpus)
    everything = np.sort(store.candidates("papers", None, None))
    source = DocumentSource(store, "papers", DocumentCache())
    probes = np.array([0, 3, 7])
    expected = set(store.candidates("papers", probes, None).tolist())
    for held in (30, 60, 80):  # a cold index is not read whole by its first search
        assert answered(source, probes) == expected
        assert source._live is not None and source._live.cached == (held == 80)
        assert source._live.filled == (None if held == 80 else held)
        assert (source.cache.lookup(everything)[1] >= 0).sum() <= held + len(expected)  # the filled and the candidates
    assert answered(source, probes) == expected  # now from the cache


def test_an_index_larger_than_its_cache_searches_from_the_centroid_map_reading_only_finalists(store):
    corpus = make_corpus(n_docs=120)
    writer = build(store, corpus)
    roomy = cs.Index.open(store, "papers")
    small = cs.Index.open(store, "papers", cache_bytes=40_000)  # the lists fit, the documents do not
    where = {"lang": "de"}
    small.warm()  # loads the map at once
    assert small._source._live is not None and small._source._live.mapped is not None

    def assert_same_answers() -> None:
        for query in corpus.embeddings[::15]:
            for kwargs in ({}, {"filter": where}):
                expected = [(hit.id, round(hit.score, 4)) for hit in roomy.search(query, k=5, nrerank=8, **kwargs)]
                assert [(hit.id, round(hit.score, 4)) for hit in small.search(query, k=5, nrerank=8, **kwargs)] == expected

    assert_same_answers()
    live = small._source._live
    assert live is not None and live.mapped is not None and not live.cached
    cached, _ = small._cache.lookup(live.revisions[:0])
    assert len(cached.batch) < len(corpus.ids)  # finalists only, not every candidate
    info = small.cache_info()
    assert (info.max_bytes, info.documents) == (40_000, len(cached.batch))
    assert info.hits > 0 and info.misses > 0
    small.search(corpus.embeddings[3], k=5, nrerank=8)
    before = small.cache_info()
    small.search(corpus.embeddings[3], k=5, nrerank=8)  # the same finalists, all cached by the search before
    after = small.cache_info()
    assert after.misses == before.misses and after.hits > before.hits
    writer.delete(corpus.ids[:30:2])
    writer.add(corpus.ids[1:30:2], make_corpus(n_docs=15, seed=1).embeddings, metadata=[{"lang": "de"}] * 15)
    assert_same_answers()
    gone = set(corpus.ids[:30:2])
    for query in corpus.embeddings[:30]:
        assert not gone & {hit.id for hit in small.search(query, k=10)}


@pytest.mark.parametrize(
    ("knob", "value"),
    [("cache_bytes", value) for value in (-1, 1.5, "1GB", True)]
    + [("search_threads", value) for value in (0, -1, 1.5, "2", True)],
)
def test_a_bad_cache_budget_or_thread_count_is_refused_before_anything_is_created(store, knob, value):
    with pytest.raises(InvalidInputError, match=knob):
        cs.Index.create(store, "papers", dim=8, **{knob: value})
    assert "papers" not in store.list_indexes()


def test_a_batch_reads_the_version_of_its_start_and_the_next_search_sees_later_writes(store):
    corpus = make_corpus(n_docs=40)
    index = build(store, corpus)
    source = DocumentSource(store, "papers", DocumentCache())
    before = answered(source, None)
    with source.one_version():
        assert answered(source, None) == before
        index.delete(corpus.ids[:5])
        assert answered(source, None) == before  # still the batch's version
    assert answered(source, None) == set(store.candidates("papers", None, None).tolist()) != before


def test_threads_answering_parts_of_a_batch_read_the_version_its_thread_pinned(store):
    corpus = make_corpus(n_docs=40)
    index = build(store, corpus)
    source = DocumentSource(store, "papers", DocumentCache())
    before = answered(source, None)
    seen: dict[str, set[int]] = {}

    def in_worker(key: str, shared) -> None:
        with source.one_version(shared=shared):
            seen[key] = answered(source, None)

    with source.one_version():
        pinned = source.pinned_live()
        index.delete(corpus.ids[:5])
        for key, shared in (("shared", pinned), ("own", None)):
            worker = threading.Thread(target=in_worker, args=(key, shared))
            worker.start()
            worker.join()
    assert seen["shared"] == before  # the batch's version, though the worker ran after the delete
    assert seen["own"] == set(store.candidates("papers", None, None).tolist()) != before
