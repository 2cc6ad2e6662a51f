"""Searches on an index larger than its document cache, with queries that repeat as real traffic does.

    python -m benchmarks.cache_eviction --index DIR [--cache-mib 8 16 32] [--searches 2000] [--zipf 1.0]

``DIR`` is a LanceDB folder holding the SciFact index (``benchmarks.run --keep-indexes K`` leaves one in
``K/colbert-store-lancedb-nbits2``; about 57 MiB of documents as the cache counts them). For each cache
size the index is opened afresh and warmed as a service would (``Index.warm``), then searched with
SciFact queries drawn with Zipf-distributed popularity (seeded: every run asks the same sequence), after
50 untimed searches. Reported per cache size: latency, and from ``Index.cache_info()`` the finalists read
from the store per search, the share found in the cache, and how often the full cache dropped documents.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

import colbert_store as cs
from benchmarks.lib.data import SCIFACT_INDEX, open_store
from benchmarks.lib.paths import RESULTS_DIR
from benchmarks.lib.report import markdown_table, save_results
from benchmarks.lib.scifact import add_scifact_arguments, load_scifact_vectors
from benchmarks.lib.timing import WARMUP, latency_summary, use_search_threads

K = 10


def popular_sequence(n_queries: int, n_searches: int, exponent: float, seed: int = 0) -> np.ndarray:
    """Query positions for ``n_searches`` searches, the ``r``-th most popular query drawn with weight ``r ** -exponent``."""
    rng = np.random.default_rng(seed)
    by_popularity = rng.permutation(n_queries)
    weights = np.arange(1, n_queries + 1, dtype=np.float64) ** -exponent
    return by_popularity[rng.choice(n_queries, size=n_searches, p=weights / weights.sum())]


def run_cache_size(folder: Path, cache_mib: float, queries: list[np.ndarray], sequence: np.ndarray) -> dict[str, Any]:
    """Warm a fresh opening of the index with this cache, then time the sequence's searches after the first ``WARMUP``."""
    index = cs.Index.open(open_store("lancedb", folder), SCIFACT_INDEX, cache_bytes=int(cache_mib * (1 << 20)))
    warmed = index.warm()
    seconds = []
    for position, query in enumerate(sequence):
        if position == WARMUP:
            untimed = index.cache_info()
        started = time.perf_counter()
        index.search(queries[query], k=K)
        seconds.append(time.perf_counter() - started)
    info = index.cache_info()
    hits, misses = info.hits - untimed.hits, info.misses - untimed.misses
    timed = len(sequence) - WARMUP
    return {
        "cache_mib": cache_mib, "warmed_documents": warmed, **latency_summary(seconds[WARMUP:]),
        "store_reads_per_search": misses / timed, "hit_rate": hits / max(hits + misses, 1),
        "evictions": info.evictions - untimed.evictions,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_scifact_arguments(parser)
    parser.add_argument("--index", type=Path, required=True, help="LanceDB folder holding the SciFact index")
    parser.add_argument("--cache-mib", type=float, nargs="+", default=[8.0, 16.0, 32.0], help="cache_bytes to try, in MiB")
    parser.add_argument("--searches", type=int, default=2000)
    parser.add_argument("--zipf", type=float, default=1.0, help="popularity exponent of the query stream")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "cache_eviction.json")
    args = parser.parse_args(argv)
    use_search_threads()
    queries = load_scifact_vectors(args.cache, data_dir=args.data).queries()
    sequence = popular_sequence(len(queries), WARMUP + args.searches, args.zipf)
    rows = [run_cache_size(args.index, mib, queries, sequence) for mib in args.cache_mib]
    table = markdown_table(
        ["cache MiB", "p50 ms", "p95 ms", "mean ms", "store reads / search", "hit rate", "evictions"],
        [[f"{r['cache_mib']:g}", f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['mean_ms']:.1f}",
          f"{r['store_reads_per_search']:.1f}", f"{r['hit_rate']:.2f}", r["evictions"]] for r in rows],
    )
    distinct = int(len(np.unique(sequence[WARMUP:])))
    save_results(args.out, {"searches": args.searches, "zipf": args.zipf, "distinct_queries": distinct, "rows": rows}, table)


if __name__ == "__main__":
    main()
