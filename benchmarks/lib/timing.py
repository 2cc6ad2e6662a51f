"""Timing searches: one query at a time, in batches, and the latency summary every result reports."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from colbert_store.kernel_loading import load_kernels

if TYPE_CHECKING:
    import colbert_store as cs
    from benchmarks.lib.exhaustive import ExhaustiveMaxSim

Ranking = TypeVar("Ranking")
WARMUP = 50
"""Untimed queries before a timed pass, which warm the document cache as a long-running service would be."""
BATCH_SIZE = 32
"""Queries per ``search_batch`` call when throughput is measured."""


def use_search_threads() -> int:
    """Give torch two intra-op threads (fewer on a smaller machine), as every latency here is measured; return them."""
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    return torch.get_num_threads()


def latency_summary(seconds: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50 / p95 / mean in milliseconds.

    >>> latency_summary([0.001, 0.002, 0.003])["p50_ms"]
    2.0
    """
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


def time_searches(
    index: cs.Index, queries: Sequence[np.ndarray], k: int, warmup: int = WARMUP, **params: Any
) -> tuple[list[list[str]], list[float]]:
    """Top-``k`` ids and seconds of each single-query colbert-store search, after ``warmup`` untimed queries
    and with the compiled stages loaded, as in a running service; ``params`` are search knobs."""
    load_kernels()
    return time_each(lambda query: [hit.id for hit in index.search(query, k=k, **params)], queries, warmup)


def time_exhaustive(exhaustive: ExhaustiveMaxSim, queries: Sequence[np.ndarray], k: int) -> tuple[list[list[str]], list[float]]:
    """Exact top-``k`` ids and seconds of each query (no warm-up: nothing to warm)."""
    return time_each(lambda query: [doc_id for doc_id, _ in exhaustive.search(query, k)], queries, warmup=0)


def batch_seconds(search_batch: Callable[[list[np.ndarray]], Any], queries: Sequence[np.ndarray]) -> float:
    """Seconds to answer ``queries`` in batches of :data:`BATCH_SIZE`, after one untimed batch."""
    search_batch(list(queries[:BATCH_SIZE]))
    started = time.perf_counter()
    for start in range(0, len(queries), BATCH_SIZE):
        search_batch(list(queries[start : start + BATCH_SIZE]))
    return time.perf_counter() - started
