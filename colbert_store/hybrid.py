"""Hybrid search: the dense leg (the PLAID pipeline) and the lexical leg (the store's BM25) of one query,
joined and fused (:mod:`colbert_store.fusion`).

The lexical leg is a store query that mostly waits on the store, so it runs on a worker thread while
the dense leg computes. Its revisions go through the same reads as the dense leg's candidates: a
revision no longer stored (its document replaced or deleted since) drops out. Every fused candidate
is scored by exact MaxSim, so the dense ranking covers the lexical leg's documents too (measured:
``benchmarks/README.md#hybrid-search``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from colbert_store.codec import ResidualCodec
from colbert_store.filters import Filter
from colbert_store.fusion import Fusion, fuse
from colbert_store.reading import DocumentSource
from colbert_store.search import ScoredDocuments, SearchParams, query_views, score_exactly, search_views

Lexical = tuple[np.ndarray, np.ndarray]
"""The lexical leg's answer: revisions and BM25 scores, best first."""

_LEXICAL_WORKERS = 4
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def start_lexical(source: DocumentSource, text: str, limit: int, where: Filter | None) -> Future[Lexical]:
    """Start the lexical leg on a worker thread (shared by every index of the process)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_LEXICAL_WORKERS, thread_name_prefix="colbert-store-lexical")
    return _pool.submit(source.text_search, text, limit, where)


def search_hybrid(
    source: DocumentSource,
    codecs: Mapping[int, ResidualCodec],
    query: np.ndarray,
    lexical: Callable[[], Lexical],
    k: int,
    where: Filter | None,
    params: SearchParams,
    fusion: Fusion,
) -> ScoredDocuments:
    """The top ``k`` of the fused ranking, with their fused scores.

    The dense leg keeps its best ``max(k, fusion.depth)`` documents; ``lexical()`` gives the lexical
    leg's answer (its limit chosen by the caller), whose documents the dense leg did not keep are scored
    by exact MaxSim with the same query views. The cache only appends between two of its emptyings, so
    one snapshot read last holds every candidate; one emptied meanwhile drops from this answer.
    """
    views = query_views(codecs, query, params.nprobe)
    dense = search_views(source, views, max(k, fusion.depth), where, params)
    dense_revisions = dense.batch.revisions[dense.rows]
    lexical_revisions, lexical_scores = lexical()
    extra = score_exactly(source, views, lexical_revisions[~np.isin(lexical_revisions, dense_revisions)])
    revisions = np.concatenate([dense_revisions, extra.batch.revisions[extra.rows]])
    scores = np.concatenate([dense.scores, extra.scores])
    docs, slots = source.cache.lookup(revisions)
    kept = np.flatnonzero(slots >= 0)
    revisions, scores, slots = revisions[kept], scores[kept], slots[kept]
    matched = np.full(len(revisions), np.nan)
    order = np.argsort(lexical_revisions)
    if len(order):
        at = np.searchsorted(lexical_revisions, revisions, sorter=order).clip(max=len(order) - 1)
        found = lexical_revisions[order[at]] == revisions
        matched[found] = lexical_scores[order[at[found]]]
    ranked, fused = fuse(scores, matched, fusion)
    top = ranked[:k]
    return ScoredDocuments(docs.batch, slots[top], fused[:k].astype(np.float32), dense.undecodable + extra.undecodable)
