"""Compiled loops (numba) for the search stages that gather and max-reduce scores per document.

Torch does these stages as a gather, a ``scatter_reduce`` and a sum, each a pass over memory with its
own dispatch; one loop per stage reads each score once. Import this module through
:mod:`colbert_store.kernel_loading`, which compiles them without making a search wait.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def centroid_maxima(centroid_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ``(n_centroids, n_query_tokens)`` scores: each centroid's best score over the query tokens,
    and each query token's best-scoring centroid (the first of equals)."""
    n_centroids, n_tokens = centroid_scores.shape
    centroid_best = np.empty(n_centroids, np.float32)
    token_best = np.full(n_tokens, -np.inf, np.float32)
    token_centroid = np.zeros(n_tokens, np.int64)
    for c in range(n_centroids):
        best = centroid_scores[c, 0]
        for j in range(n_tokens):
            score = centroid_scores[c, j]
            best = max(best, score)
            if score > token_best[j]:
                token_best[j] = score
                token_centroid[j] = c
        centroid_best[c] = best
    return centroid_best, token_centroid


@numba.njit(nogil=True, cache=True)
def listed_pair_maxima(
    list_offsets: np.ndarray, list_slots: np.ndarray, centroids: np.ndarray, row_of_slot: np.ndarray,
    centroid_scores: np.ndarray, best: np.ndarray,
) -> None:
    """Raise ``best[row]`` (per query token) to the scores of each of ``centroids`` held by the document
    in that row, reading one inverted list (slots ``list_slots[list_offsets[c]:list_offsets[c + 1]]``
    hold centroid ``c``; ``row_of_slot`` is -1 for slots not scored)."""
    last = len(list_offsets) - 1
    n_tokens = centroid_scores.shape[1]
    for c in centroids:
        if c >= last:  # past the largest centroid id this list holds
            continue
        for position in range(list_offsets[c], list_offsets[c + 1]):
            row = row_of_slot[list_slots[position]]
            if row < 0:
                continue
            for j in range(n_tokens):
                best[row, j] = max(best[row, j], centroid_scores[c, j])


@numba.njit(nogil=True, cache=True)
def scanned_max_sums(
    offsets: np.ndarray, centroids: np.ndarray, slots: np.ndarray, wanted: np.ndarray, centroid_scores: np.ndarray
) -> np.ndarray:
    """Per slot: the sum over query tokens of the best score (floored at 0) among its centroids
    ``centroids[offsets[slot]:offsets[slot + 1]]`` that are ``wanted``."""
    n_tokens = centroid_scores.shape[1]
    sums = np.empty(len(slots), np.float32)
    best = np.empty(n_tokens, np.float32)
    for i in range(len(slots)):
        best[:] = 0.0
        for position in range(offsets[slots[i]], offsets[slots[i] + 1]):
            c = centroids[position]
            if wanted[c]:
                for j in range(n_tokens):
                    best[j] = max(best[j], centroid_scores[c, j])
        sums[i] = best.sum()
    return sums


@numba.njit(nogil=True, cache=True)
def document_max_sums(token_scores: np.ndarray, weights: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """MaxSim per document from its tokens' ``(n_tokens, n_query_tokens)`` scores, each token's row
    times its weight; document ``d`` owns rows ``offsets[d]:offsets[d + 1]`` (none: scores 0)."""
    n_tokens = token_scores.shape[1]
    sums = np.zeros(len(offsets) - 1, np.float32)
    best = np.empty(n_tokens, np.float32)
    for d in range(len(offsets) - 1):
        if offsets[d + 1] == offsets[d]:
            continue
        best[:] = -np.inf
        for row in range(offsets[d], offsets[d + 1]):
            weight = weights[row]
            for j in range(n_tokens):
                best[j] = max(best[j], token_scores[row, j] * weight)
        sums[d] = best.sum()
    return sums
