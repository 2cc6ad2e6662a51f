"""Retrieval metrics and latency summaries used by the benchmarks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np

Ranking = TypeVar("Ranking")


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


def latency_summary(seconds: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50 / p95 / mean in milliseconds."""
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)), "mean_ms": float(ms.mean())}


def time_each(
    search: Callable[[np.ndarray], Ranking], queries: Sequence[np.ndarray], warmup: int
) -> tuple[list[Ranking], list[float]]:
    """What ``search`` returns for each query and the seconds it took, after ``warmup`` untimed queries."""
    for query in queries[:warmup]:
        search(query)
    rankings, seconds = [], []
    for query in queries:
        start = time.perf_counter()
        rankings.append(search(query))
        seconds.append(time.perf_counter() - start)
    return rankings, seconds
