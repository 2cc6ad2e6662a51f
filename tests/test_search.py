"""Search knobs: validation, the pruned stage's bound on the (document, centroid) pairs it reads, the
compiled and torch stages held to the same results, and batches answered by several threads."""

from __future__ import annotations

import multiprocessing
import threading
import time

import numpy as np
import pytest
import torch
from qdrant_client import QdrantClient

import colbert_store as cs
from colbert_store.adapters.qdrant import QdrantStore
from colbert_store.centroid_lists import CentroidLists
from colbert_store.filters import parse_filter
from colbert_store.kernel_loading import load_kernels
from colbert_store.search import SearchParams, _approximate_top, _finalists, _QueryView, _relevant_centroids, search_one
from tests.conftest import make_corpus
from tests.test_index import build

STAGES = pytest.mark.parametrize("compiled", [False, True], ids=["torch", "compiled"])


def view_of(scores: torch.Tensor, probes: np.ndarray, compiled: bool) -> _QueryView:
    """A query's view from its centroid scores alone (the stages under test read nothing else)."""
    kernels = load_kernels() if compiled else None
    best = scores.amax(dim=1).numpy()
    return _QueryView(
        codec=None, query=torch.empty(0), centroid_scores=scores, centroid_best=best, probes=probes, kernels=kernels
    )


@pytest.mark.parametrize("knob", ["nprobe", "ncandidates", "nrerank", "max_pruned_pairs"])
@pytest.mark.parametrize("value", [0, -3, 1.5, "8", True])
def test_bad_knob_values_raise_naming_the_knob(knob, value):
    with pytest.raises(cs.InvalidInputError, match=knob):
        SearchParams().updated(**{knob: value})


@pytest.mark.parametrize("value", [True, float("nan"), float("inf"), "0.5"])
def test_a_bad_centroid_threshold_raises(value):
    with pytest.raises(cs.InvalidInputError, match="centroid_threshold must be a finite number or None"):
        SearchParams(centroid_threshold=value)


@pytest.mark.parametrize("value", [-0.1, True, float("nan"), "0.1"])
def test_a_bad_rerank_margin_raises(value):
    with pytest.raises(cs.InvalidInputError, match="rerank_margin must be a finite number >= 0 or None"):
        SearchParams(rerank_margin=value)


def test_the_rerank_margin_rescores_the_survivors_within_it_of_the_kth_best():
    scores = np.array([10.0, 9.5, 9.0, 8.6, 8.0, 7.0, 9.9, 1.0], dtype=np.float32)
    # k=2: the 2nd best scores 9.9, so a margin of 0.1 keeps those scoring at least 8.91.
    assert sorted(_finalists(scores, 2, SearchParams(nrerank=6, rerank_margin=0.1))) == [0, 1, 2, 6]
    assert sorted(_finalists(scores, 2, SearchParams(nrerank=3, rerank_margin=0.1))) == [0, 1, 6]  # at most nrerank
    assert sorted(_finalists(scores, 2, SearchParams(nrerank=5, rerank_margin=None))) == [0, 1, 2, 3, 6]
    assert sorted(_finalists(scores, 3, SearchParams(nrerank=6, rerank_margin=0))) == [0, 1, 6]  # at least k
    assert sorted(_finalists(scores, 4, SearchParams(nrerank=2, rerank_margin=0))) == [0, 1, 2, 6]  # k over nrerank


def test_the_pairs_budget_keeps_the_best_scoring_centroids_above_the_threshold_that_fit_it():
    # Centroid c is held by c + 1 documents; scores rise with the id, except centroid 5, the best.
    holders = {c: list(range(c + 1)) for c in range(8)}
    pairs = sorted((doc, c) for c, docs in holders.items() for doc in docs)
    docs = np.array([doc for doc, _ in pairs])
    offsets = np.concatenate([[0], np.cumsum(np.bincount(docs, minlength=8))])
    lists = CentroidLists.of(np.arange(1, 9), offsets, np.array([c for _, c in pairs], dtype=np.uint16))
    scores = torch.tensor([[0.1], [0.6], [0.7], [0.75], [0.8], [0.99], [0.85], [0.9]])
    view = view_of(scores, np.array([], dtype=np.int64), compiled=False)
    assert _relevant_centroids(view, 0.5, lists.holder_counts, 1000).tolist() == [1, 2, 3, 4, 5, 6, 7]
    # Best first: 5 (6 holders), 7 (8 -> 14), 6 (7 -> 21), 4 (5 -> 26), 3 (4 -> 30) ...
    assert _relevant_centroids(view, 0.5, lists.holder_counts, 26).tolist() == [4, 5, 6, 7]
    assert _relevant_centroids(view, 0.5, lists.holder_counts, 29).tolist() == [4, 5, 6, 7]
    assert _relevant_centroids(view, 0.5, lists.holder_counts, 1).tolist() == [5]  # always at least the best one
    unlisted = CentroidLists.unlisted(lists.revisions, lists.offsets, lists.centroids)
    assert _relevant_centroids(view, 0.5, unlisted.holder_counts, 26).tolist() == [4, 5, 6, 7]
    # Probes count below the threshold and past the budget.
    probed = view_of(scores, np.array([0, 2]), compiled=False)
    assert _relevant_centroids(probed, 0.5, lists.holder_counts, 26).tolist() == [0, 2, 4, 5, 6, 7]


@STAGES
@pytest.mark.parametrize("listed", [True, False], ids=["inverted-lists", "scanned"])
@pytest.mark.parametrize("pruned", [False, True], ids=["every-centroid", "threshold"])
@pytest.mark.parametrize("margin", [False, True], ids=["fixed", "margin"])
@pytest.mark.parametrize("n_query_tokens", [5, 13, 16, 17, 32])
def test_the_approximate_stages_rank_by_maxsim_over_centroids_at_any_query_length(
    n_query_tokens, margin, pruned, listed, compiled
):
    rng = np.random.default_rng(n_query_tokens)
    n_docs, n_centroids, per_doc = 30, 40, 8
    held = [np.sort(rng.choice(n_centroids, per_doc, replace=False)) for _ in range(n_docs)]
    offsets, centroids = np.arange(0, per_doc * n_docs + 1, per_doc), np.concatenate(held).astype(np.uint16)
    make = CentroidLists.of if listed else CentroidLists.unlisted
    lists = make(np.arange(1, n_docs + 1), offsets, centroids)
    scores = torch.from_numpy(rng.uniform(-0.5, 1.0, (n_centroids, n_query_tokens)).astype(np.float32))
    probes = np.array([3, 7])
    threshold = float(np.median(scores.numpy().max(axis=1))) if pruned else None  # about half the centroids count
    read = scores.numpy() if compiled else scores.half().float().numpy()  # the torch stages read half precision
    relevant = np.ones(n_centroids, dtype=bool) if threshold is None else scores.numpy().max(axis=1) >= threshold
    relevant[probes] = True

    def maxsim(docs: np.ndarray, among: np.ndarray) -> np.ndarray:
        return np.array([np.maximum(np.where(among[held[d], None], read[held[d]], 0).max(axis=0), 0).sum() for d in docs])

    stage_2 = maxsim(np.arange(n_docs), relevant)  # the relevant centroids only
    shortlist = np.argsort(-stage_2)[:10]
    stage_3 = maxsim(shortlist, np.ones(n_centroids, dtype=bool))  # every centroid
    ranked = np.sort(stage_3)[::-1]
    assert np.sort(stage_2)[-10] != np.sort(stage_2)[-11] and ranked[4] != ranked[5]  # no ties at the cuts
    assert ranked[3] - ranked[4] > 1e-3  # room for the margin's cut between the 4th and 5th
    # With a margin, k=3 and nrerank=5: one that cuts between the 4th and 5th best, so 4 are rescored.
    rerank_margin = float(1 - (ranked[3] + ranked[4]) / 2 / ranked[2]) if margin else None
    params = SearchParams(ncandidates=10, nrerank=5, rerank_margin=rerank_margin, centroid_threshold=threshold)
    chosen = _approximate_top(lists, np.arange(n_docs), view_of(scores, probes, compiled), 3, params)
    assert sorted(chosen.tolist()) == sorted(shortlist[np.argsort(-stage_3)[: 4 if margin else 5]].tolist())


@STAGES
@pytest.mark.parametrize("nprobe", [1, 2, 3, 500])
def test_each_query_token_probes_its_nprobe_best_centroids(nprobe, compiled):
    rng = np.random.default_rng(nprobe)
    codec = cs.ResidualCodec.fit(rng.normal(size=(3000, 16)).astype(np.float32), nbits=2, n_centroids=64)
    query = rng.normal(size=(7, 16)).astype(np.float32)
    view = _QueryView.of(codec, query, nprobe, load_kernels() if compiled else None)
    scores = codec.centroids @ codec.rotate(query).T  # (centroids, query tokens)
    best = np.argsort(-scores, axis=0, kind="stable")[: min(nprobe, codec.n_centroids)]
    assert view.probes.tolist() == np.unique(best).tolist()
    np.testing.assert_allclose(view.centroid_best, scores.max(axis=1), atol=1e-6)


def test_the_compiled_and_the_torch_stages_give_the_same_hits_and_exact_scores(store):
    corpus = make_corpus(n_docs=200)
    index = build(store, corpus)
    state = index._state
    queries = [corpus.query(i % 10, n_tokens=5 + i, seed=i) for i in range(20)]
    for where in (None, parse_filter({"lang": "en"})):
        for query in queries:
            normalised = query / np.linalg.norm(query, axis=1, keepdims=True)
            found = [search_one(index._source, state.by_generation(), normalised, 10, where, SearchParams(), compiled=c)
                     for c in (False, True)]
            ids = [[result.batch.ids[row] for row in result.rows] for result in found]
            assert ids[0] == ids[1]
            np.testing.assert_allclose(found[0].scores, found[1].scores, rtol=1e-6, atol=1e-6)


def test_a_threaded_batch_answers_each_query_as_a_lone_search_would(store):
    corpus = make_corpus(n_docs=120)
    build(store, corpus)
    index = cs.Index.open(store, "papers", search_threads=3)
    queries = [corpus.query(i % 10, seed=i) for i in range(12)]
    for where in (None, {"lang": "en"}):
        batch = index.search_batch(queries, k=5, filter=where)
        lone = [index.search(query, k=5, filter=where) for query in queries]
        assert [[(h.id, h.score) for h in hits] for hits in batch] == [[(h.id, h.score) for h in hits] for hits in lone]


def test_a_batch_searches_on_threads_of_its_own_that_end_with_it():
    """Idle threads that have run torch keep OpenMP teams, which slow every later search of the process:
    a batch's threads must not outlive it (whatever the store)."""
    store = QdrantStore(QdrantClient(":memory:"))
    corpus = make_corpus(n_docs=120)
    build(store, corpus)
    index = cs.Index.open(store, "papers", search_threads=2)
    queries = [corpus.query(i % 10, seed=i) for i in range(200)]

    def search_threads() -> set[str]:
        return {thread.name for thread in threading.enumerate() if thread.name.startswith("colbert-store-search-papers")}

    batch = threading.Thread(target=index.search_batch, args=(queries,))
    batch.start()
    seen: set[str] = set()
    while batch.is_alive():
        seen |= search_threads()
        time.sleep(0.001)  # leave the batch's threads the interpreter
    batch.join()
    assert len(seen) == 2
    assert search_threads() == set()


def _batch_ids_in_child(index: cs.Index, queries: list[np.ndarray], results: multiprocessing.Queue) -> None:
    torch.set_num_threads(1)  # the parent's OpenMP threads are not the child's
    results.put([[hit.id for hit in hits] for hits in index.search_batch(queries, k=3)])


def test_a_forked_child_answers_batches_with_search_threads_of_its_own():
    store = QdrantStore(QdrantClient(":memory:"))  # in-process and fork-safe, unlike a store with I/O threads
    corpus = make_corpus(n_docs=60)
    build(store, corpus)
    index = cs.Index.open(store, "papers", search_threads=2)
    queries = [corpus.query(i, seed=i) for i in range(6)]
    expected = [[hit.id for hit in hits] for hits in index.search_batch(queries, k=3)]  # the parent's pool runs
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_batch_ids_in_child, args=(index, queries, results))
    child.start()
    try:
        assert results.get(timeout=60) == expected
    finally:
        child.join(timeout=60)
        child.kill()
    assert child.exitcode == 0
