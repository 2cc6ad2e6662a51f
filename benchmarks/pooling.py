"""Token pooling on SciFact: pool factors 1-4 at nbits=2, scored against exact MaxSim over the unpooled vectors.

    python -m benchmarks.pooling [--stores lancedb,qdrant-edge] [--factors 1,2,3,4]

For each store and pool factor, one index is built from the cached SciFact vectors
(``benchmarks.lib.scifact``) with ``Index.create(..., nbits=2, pool_factor=F)`` and default search
settings, and warmed; then every judged train query is searched on every index, the indexes taking
turns query by query. Reported per row: stored vectors, disk bytes per *original* token (the same
denominator for every factor), build seconds, single-query p50/p95, nDCG@10, recall@10 against
exhaustive exact MaxSim over the unpooled vectors, and disk, p50 and nDCG@10 next to pool factor 1's. Each row
also gives exact MaxSim over the pooled vectors themselves, uncompressed, which separates the loss of
pooling from that of the codec and the pruning. Every row is measured in one process and the
searches interleaved, so the ratios to pool factor 1 are like for like.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

import colbert_store as cs
from benchmarks.lib.data import folder_bytes, open_store
from benchmarks.lib.exhaustive import ExhaustiveMaxSim
from benchmarks.lib.metrics import ranking_quality
from benchmarks.lib.paths import RESULTS_DIR
from benchmarks.lib.report import markdown_table, save_results
from benchmarks.lib.scifact import ScifactVectors, add_scifact_arguments, load_scifact_vectors
from benchmarks.lib.timing import WARMUP, latency_summary, time_exhaustive, use_search_threads
from colbert_store.pooling import pool_documents

INDEX = "scifact-pooled"
K = 10


@dataclass
class Built:
    """One index of the comparison, built and warmed, with what its building measured."""

    store_kind: str
    pool_factor: int
    index: cs.Index
    store: Any
    workdir: Path
    row: dict[str, Any]


def build(vectors: ScifactVectors, store_kind: str, pool_factor: int) -> Built:
    """Build, optimize and warm one index of ``pool_factor`` on ``store_kind`` in a new temporary folder."""
    workdir = Path(tempfile.mkdtemp(prefix=f"colbert-store-pooling-{store_kind}-{pool_factor}-"))
    store = open_store(store_kind, workdir)
    started = time.perf_counter()
    index = cs.Index.create(store, INDEX, dim=vectors.dim, nbits=2, pool_factor=pool_factor)
    index.add(vectors.doc_ids, vectors.docs(), queries=vectors.pseudo_query_vectors)
    build_seconds = time.perf_counter() - started
    if store_kind == "lancedb":
        store.optimize(INDEX, cleanup_older_than=timedelta(0))
    elif store_kind == "qdrant-edge":
        store.optimize()
    n_tokens = int(vectors.doc_offsets[-1])
    stored = index.stats()["tokens"]
    index.warm()
    row = {
        "store": store_kind,
        "pool_factor": pool_factor,
        "stored_vectors": stored,
        "stored_fraction": stored / n_tokens,
        "disk_bytes_per_original_token": folder_bytes(workdir) / n_tokens,
        "build_seconds": build_seconds,
        "n_centroids": index.codec.n_centroids if index.codec else None,
    }
    return Built(store_kind, pool_factor, index, store, workdir, row)


def pooled_exact_rankings(vectors: ScifactVectors, pool_factor: int) -> tuple[list[list[str]], float]:
    """Exact MaxSim top-k over the pooled vectors themselves (uncompressed), and the seconds pooling took."""
    started = time.perf_counter()
    pooled = pool_documents(vectors.docs(), pool_factor)
    seconds = time.perf_counter() - started
    offsets = np.cumsum([0] + [len(d) for d in pooled])
    rankings, _ = time_exhaustive(ExhaustiveMaxSim(vectors.doc_ids, np.concatenate(pooled), offsets), vectors.queries(), K)
    return rankings, seconds


def time_interleaved(indexes: list[Built], queries: list[np.ndarray]) -> list[tuple[list[list[str]], list[float]]]:
    """Rankings and seconds of every query on every index, the indexes taking turns query by query, so
    that a slower or busier stretch of the run weighs on all of them alike."""
    for built in indexes:
        for query in queries[:WARMUP]:
            built.index.search(query, k=K)
    results: list[tuple[list[list[str]], list[float]]] = [([], []) for _ in indexes]
    for query in queries:
        for built, (rankings, seconds) in zip(indexes, results):
            started = time.perf_counter()
            hits = built.index.search(query, k=K)
            seconds.append(time.perf_counter() - started)
            rankings.append([hit.id for hit in hits])
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_scifact_arguments(parser)
    parser.add_argument("--stores", default="lancedb", help="comma-separated: lancedb, qdrant, qdrant-edge")
    parser.add_argument("--factors", default="1,2,3,4", help="comma-separated pool factors")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "pooling.json")
    args = parser.parse_args(argv)
    use_search_threads()
    vectors = load_scifact_vectors(args.cache, data_dir=args.data)
    exhaustive = ExhaustiveMaxSim(vectors.doc_ids, vectors.doc_vectors, vectors.doc_offsets)
    exact, _ = time_exhaustive(exhaustive, vectors.queries(), K)
    exact_ndcg = ranking_quality(exact, exact, vectors.query_ids, vectors.qrels, K)["ndcg_at_10"]
    print(f"exact MaxSim over the unpooled vectors: nDCG@10 {exact_ndcg:.4f}", flush=True)
    factors = [int(f) for f in args.factors.split(",")]
    pooled_exact = {factor: pooled_exact_rankings(vectors, factor) for factor in factors}
    indexes = [build(vectors, store_kind, factor) for store_kind in args.stores.split(",") for factor in factors]
    try:
        timed = time_interleaved(indexes, vectors.queries())
    finally:
        for built in indexes:
            built.store.close()
            shutil.rmtree(built.workdir, ignore_errors=True)
    rows = []
    for built, (rankings, seconds) in zip(indexes, timed):
        exact_on_pooled, pooling_seconds = pooled_exact[built.pool_factor]
        rows.append({
            **built.row,
            "pooling_seconds": pooling_seconds,
            **latency_summary(seconds),
            **ranking_quality(rankings, exact, vectors.query_ids, vectors.qrels, K),
            "pooled_exact_ndcg_at_10": ranking_quality(exact_on_pooled, exact, vectors.query_ids, vectors.qrels, K)["ndcg_at_10"],
        })
        print(rows[-1], flush=True)
    table = markdown_table(
        ["store", "pool factor", "stored vectors", "disk B/original token", "build s", "p50 ms", "p95 ms", "nDCG@10",
         "recall@10 vs exact", "exact nDCG@10 on pooled vectors", "disk / factor 1", "p50 / factor 1", "nDCG - factor 1"],
        [_table_row(row, next(r for r in rows if r["store"] == row["store"] and r["pool_factor"] == 1)) for row in rows],
    )
    save_results(args.out, {"exact_ndcg_at_10": exact_ndcg, "queries": len(exact), "rows": rows}, table)


def _table_row(row: dict[str, Any], unpooled: dict[str, Any]) -> list[str]:
    """One line of the table; ``unpooled`` is the same store's pool factor 1 row."""
    return [
        row["store"], str(row["pool_factor"]), f"{row['stored_vectors']:,} ({row['stored_fraction']:.0%})",
        f"{row['disk_bytes_per_original_token']:.1f}", f"{row['build_seconds']:.1f}", f"{row['p50_ms']:.1f}",
        f"{row['p95_ms']:.1f}", f"{row['ndcg_at_10']:.4f}", f"{row['recall_at_10_vs_exact']:.3f}",
        f"{row['pooled_exact_ndcg_at_10']:.4f}",
        f"{row['disk_bytes_per_original_token'] / unpooled['disk_bytes_per_original_token']:.0%}",
        f"{row['p50_ms'] / unpooled['p50_ms']:.0%}", f"{row['ndcg_at_10'] - unpooled['ndcg_at_10']:+.4f}",
    ]


if __name__ == "__main__":
    main()
