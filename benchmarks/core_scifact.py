"""Core-engine benchmark on SciFact: quality against exhaustive exact MaxSim, latency, build time, size.

    python -m benchmarks.core_scifact --data ../shared/data/scifact

Token vectors come from benchmarks.scifact_vectors (MiniLM, PCA to 128-d, cached on disk).
Results go to benchmarks/results/core_scifact.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

import colbert_store as cs
from benchmarks.exhaustive import ExhaustiveMaxSim
from benchmarks.metrics import latency_summary, ndcg_at_k, overlap_at_k, time_each
from benchmarks.scifact_vectors import ScifactVectors, load_scifact_vectors
from colbert_store.adapters.lancedb import LanceDBStore

RESULTS = Path(__file__).parent / "results"


def split(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_exhaustive(exhaustive: ExhaustiveMaxSim, queries: list[np.ndarray], k: int) -> tuple[list[list[str]], list[float]]:
    return time_each(lambda query: [doc_id for doc_id, _ in exhaustive.search(query, k)], queries, warmup=0)


def time_searches(
    index: cs.Index, queries: list[np.ndarray], k: int, warmup: int = 50, **params: Any
) -> tuple[list[list[str]], list[float]]:
    """Top-``k`` ids and seconds of each single-query search, after ``warmup`` untimed queries (which warm
    the document cache, as a long-running service would be)."""
    return time_each(lambda query: [hit.id for hit in index.search(query, k=k, **params)], queries, warmup)


def evaluate_index(
    index: cs.Index, queries: list[np.ndarray], query_ids: list[str], exact: list[list[str]],
    qrels: dict[str, dict[str, int]], k: int, **params: Any,
) -> dict[str, Any]:
    rankings, seconds = time_searches(index, queries, k, **params)
    return {**ranking_quality(rankings, exact, query_ids, qrels, k), **latency_summary(seconds)}


def ranking_quality(
    rankings: list[list[str]], exact: list[list[str]], query_ids: list[str], qrels: dict[str, dict[str, int]], k: int
) -> dict[str, float]:
    """Mean recall@k against the exact rankings and mean nDCG@k against the relevance judgements."""
    return {
        "recall_at_10_vs_exact": float(np.mean([overlap_at_k(r, e, k) for r, e in zip(rankings, exact)])),
        "ndcg_at_10": float(np.mean([ndcg_at_k(r, qrels[q], k) for r, q in zip(rankings, query_ids)])),
    }


def save_results(path: str | Path, results: dict[str, Any], table: str) -> None:
    """Write ``results`` as JSON to ``path`` and print the markdown ``table``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2))
    print(table)


def lancedb_row(
    vectors: ScifactVectors, docs: list[np.ndarray], queries: list[np.ndarray], query_ids: list[str],
    exact: list[list[str]], k: int, nbits: int, n_centroids: int | None = None,
) -> dict[str, Any]:
    """Build a colbert-store LanceDB index of ``docs`` in a temporary folder; its quality, latency, build time and size."""
    n_tokens = int(vectors.doc_offsets[-1])
    workdir = Path(tempfile.mkdtemp(prefix="colbert-store-bench-"))
    try:
        store = LanceDBStore(workdir)
        start = time.perf_counter()
        index = cs.Index.create(store, "scifact", dim=docs[0].shape[1], nbits=nbits, n_centroids=n_centroids)
        index.add(vectors.doc_ids, docs, queries=vectors.pseudo_query_vectors)  # trains the codec
        build_seconds = time.perf_counter() - start
        store.optimize("scifact", cleanup_older_than=timedelta(0))  # drop the versions the writes left behind
        row = evaluate_index(index, queries, query_ids, exact, vectors.qrels, k)
        row.update(
            build_seconds=build_seconds,
            n_centroids=index.codec.n_centroids if index.codec else None,
            bytes_per_token=store.size_bytes("scifact") / n_tokens,
            disk_bytes_per_token=folder_bytes(workdir) / n_tokens,
        )
        store.close()
        return row
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/colbert-store/scifact"))
    parser.add_argument("--nbits", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--n-centroids", type=int, default=None)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=None, help="evaluate only the first N queries")
    parser.add_argument("--out", default=str(RESULTS / "core_scifact.json"))
    args = parser.parse_args(argv)

    vectors = load_scifact_vectors(args.cache, data_dir=args.data)
    docs = split(vectors.doc_vectors, vectors.doc_offsets)
    queries = [q.astype(np.float32) for q in split(vectors.query_vectors, vectors.query_offsets)][: args.queries]
    query_ids = vectors.query_ids[: len(queries)]
    n_tokens = int(vectors.doc_offsets[-1])
    print(f"{len(docs)} documents, {n_tokens} tokens, {len(queries)} queries")

    exhaustive = ExhaustiveMaxSim(vectors.doc_ids, vectors.doc_vectors, vectors.doc_offsets)
    exact, exact_seconds = run_exhaustive(exhaustive, queries, args.k)
    exact_row = {
        "ndcg_at_10": float(np.mean([ndcg_at_k(r, vectors.qrels[q], args.k) for r, q in zip(exact, query_ids)])),
        **latency_summary(exact_seconds),
        "bytes_per_token": 2 * vectors.doc_vectors.shape[1],
    }
    results: dict[str, Any] = {"n_docs": len(docs), "n_tokens": n_tokens, "exhaustive_fp32": exact_row, "colbert_store": {}}

    for nbits in args.nbits:
        row = lancedb_row(vectors, docs, queries, query_ids, exact, args.k, nbits, args.n_centroids)
        row["speedup_p50_vs_exhaustive"] = exact_row["p50_ms"] / row["p50_ms"]
        results["colbert_store"][f"nbits={nbits}"] = row
        print(f"nbits={nbits}: {json.dumps(row, indent=None)}")

    save_results(args.out, results, markdown_table(results))


def markdown_table(results: dict[str, Any]) -> str:
    exact = results["exhaustive_fp32"]
    lines = [
        "| system | recall@10 vs exact | nDCG@10 | p50 ms | p95 ms | build s | bytes/token |",
        "|---|---|---|---|---|---|---|",
        f"| exhaustive exact MaxSim (fp32 in memory) | 1.000 | {exact['ndcg_at_10']:.4f} | {exact['p50_ms']:.1f} "
        f"| {exact['p95_ms']:.1f} | – | {exact['bytes_per_token']} (fp16) |",
    ]
    for name, row in results["colbert_store"].items():
        lines.append(
            f"| colbert-store LanceDB {name} | {row['recall_at_10_vs_exact']:.3f} | {row['ndcg_at_10']:.4f} "
            f"| {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['build_seconds']:.1f} | {row['bytes_per_token']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
