"""Ranking quality: recall against exact search and nDCG against relevance judgements."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with graded relevance (BEIR's definition: gain = relevance, log2 discount).

    >>> round(ndcg_at_k(["a", "b"], {"b": 1}), 4)
    0.6309
    """
    gains = [relevant.get(doc_id, 0) for doc_id in ranked[:k]]
    dcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def overlap_at_k(ranked: Sequence[str], reference: Sequence[str], k: int = 10) -> float:
    """Fraction of the reference's top k found in ``ranked``'s top k (recall@k against exact search).

    >>> overlap_at_k(["a", "b", "c"], ["a", "c", "d"], k=3)
    0.6666666666666666
    """
    expected = set(reference[:k])
    return len(expected & set(ranked[:k])) / len(expected) if expected else 1.0


def ranking_quality(
    rankings: Sequence[Sequence[str]],
    exact: Sequence[Sequence[str]],
    query_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    k: int,
) -> dict[str, float]:
    """Mean recall@k against the exact rankings and mean nDCG@k against the judgements, for the first
    ``len(rankings)`` queries (the keys say 10, the k every reported run uses).

    >>> ranking_quality([["a", "b"]], [["a", "c"]], ["q"], {"q": {"b": 1}}, k=2)
    {'recall_at_10_vs_exact': 0.5, 'ndcg_at_10': 0.6309297535714575}
    """
    n = len(rankings)
    return {
        "recall_at_10_vs_exact": float(np.mean([overlap_at_k(r, e, k) for r, e in zip(rankings, exact[:n])])),
        "ndcg_at_10": float(np.mean([ndcg_at_k(r, qrels[q], k) for r, q in zip(rankings, query_ids[:n])])),
    }
