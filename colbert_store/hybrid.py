"""Hybrid search: the dense leg (the PLAID pipeline) and the lexical leg (the store's BM25) of one query,
joined and fused (:mod:`colbert_store.fusion`).

The lexical leg is a store query that mostly waits on the store, so it runs on a worker thread while
the dense leg computes. Its revisions go through the same reads as the dense leg's candidates: a
revision no longer stored (its document replaced or deleted since) drops out. Every fused candidate
is scored by exact MaxSim, so the dense ranking covers the lexical leg's documents too.
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
from colbert_store.search import ScoredDocuments, SearchParams, score_exactly, search_one

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
    leg's answer (its limit chosen by the caller). The union is scored by exact MaxSim and fused.
    """
    dense = search_one(source, codecs, query, max(k, fusion.depth), where, params)
    lexical_revisions, lexical_scores = lexical()
    candidates = np.union1d(dense.batch.revisions[dense.rows], lexical_revisions)
    scored = score_exactly(source, codecs, query, candidates)
    revisions = scored.batch.revisions[scored.rows]
    matched = np.full(len(revisions), np.nan)
    order = np.argsort(lexical_revisions)
    at = np.searchsorted(lexical_revisions, revisions, sorter=order).clip(max=max(len(order) - 1, 0))
    if len(order):
        found = lexical_revisions[order[at]] == revisions
        matched[found] = lexical_scores[order[at[found]]]
    ranked, fused = fuse(scored.scores, matched, fusion)
    top = ranked[:k]
    return ScoredDocuments(scored.batch, scored.rows[top], fused[:k].astype(np.float32), scored.undecodable + dense.undecodable)
