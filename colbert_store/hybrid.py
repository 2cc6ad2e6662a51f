"""Hybrid search: the dense leg (the PLAID pipeline) and the lexical leg (the store's BM25) of one query,
joined and fused (:mod:`colbert_store.fusion`).

The lexical leg's revisions go through the same reads as the dense leg's candidates: a revision no
longer stored (its document replaced or deleted since) drops out. A document only the lexical leg
returned has no dense score in the fusion: scoring it by exact MaxSim as well cost a second exact pass
and did not rank better. The legs run one after the other: on a machine whose cores are busy, running
the store's query on a thread of its own beside the dense leg's torch threads was no faster
(``benchmarks/README.md#hybrid-search``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from colbert_store.codec import ResidualCodec
from colbert_store.filters import Filter
from colbert_store.fusion import Fusion, fuse
from colbert_store.reading import DocumentSource
from colbert_store.search import ScoredDocuments, SearchParams, search_one


def search_hybrid(
    source: DocumentSource,
    codecs: Mapping[int, ResidualCodec],
    query: np.ndarray,
    text: str,
    k: int,
    where: Filter | None,
    params: SearchParams,
    fusion: Fusion,
) -> ScoredDocuments:
    """The top ``k`` of the fused ranking, with their fused scores.

    Each leg keeps its best ``max(k, fusion.depth)`` documents (the lexical leg first, so an index that
    cannot serve it raises before any other work). The documents of the top ``k`` that only the lexical
    leg returned are read like any candidate: one replaced or deleted since drops out. The cache only
    appends between two of its evictions, so the snapshot read last holds every document of the answer;
    an eviction meanwhile that drops some of them drops them from this answer.
    """
    lexical_revisions, lexical_scores = source.text_search(text, max(k, fusion.depth), where)
    dense = search_one(source, codecs, query, max(k, fusion.depth), where, params)
    dense_revisions = dense.batch.revisions[dense.rows]
    revisions = np.union1d(dense_revisions, lexical_revisions)
    dense_scores = _aligned(revisions, dense_revisions, dense.scores)
    ranked, fused = fuse(dense_scores, _aligned(revisions, lexical_revisions, lexical_scores), fusion)
    top = revisions[ranked[:k]]
    source.documents(top[~np.isin(top, dense_revisions)])
    docs, slots = source.cache.lookup(top)
    kept = np.flatnonzero(slots >= 0)
    return ScoredDocuments(docs.batch, slots[kept], fused[:k][kept].astype(np.float32), dense.undecodable)


def _aligned(revisions: np.ndarray, leg_revisions: np.ndarray, leg_scores: np.ndarray) -> np.ndarray:
    """The leg's score of each of ``revisions`` (sorted), NaN where the leg did not return it."""
    scores = np.full(len(revisions), np.nan)
    scores[np.searchsorted(revisions, leg_revisions)] = leg_scores
    return scores
