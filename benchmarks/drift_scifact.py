"""Codec drift on SciFact: train on one sixth of the corpus, add five times as much drifted data, then retrain.

    python -m benchmarks.drift_scifact [--data ../shared/data/scifact]

Recall@10 against exhaustive exact MaxSim and ``Index.health()`` at each step. The first sixth is the
documents whose mean token vector lies lowest along the first principal direction of all documents'
means, so the other five sixths are topically shifted. "Retrain from text" re-encodes every document
from its original vectors (what the encoder would return for the stored text: the benchmark stores
each document id as its text and looks the vectors up). Results go to
benchmarks/results/drift_scifact.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

import colbert_store as cs
from benchmarks.lib.exhaustive import ExhaustiveMaxSim
from benchmarks.lib.metrics import ranking_quality
from benchmarks.lib.paths import RESULTS_DIR
from benchmarks.lib.report import markdown_table, save_results
from benchmarks.lib.scifact import add_scifact_arguments, load_scifact_vectors
from benchmarks.lib.timing import latency_summary, time_exhaustive, time_searches
from colbert_store.adapters.lancedb import LanceDBStore

K = 10


def drift_order(docs: list[np.ndarray]) -> np.ndarray:
    """Document positions sorted along the first principal direction of the documents' mean vectors."""
    means = np.stack([doc.mean(axis=0, dtype=np.float64) for doc in docs])
    centred = means - means.mean(axis=0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    return np.argsort(centred @ direction, kind="stable")


def step_row(index: cs.Index, evaluate: Callable[[cs.Index], dict[str, Any]], seconds: float | None = None) -> dict[str, Any]:
    """Quality, latency, centroid count and health of ``index`` after a step that took ``seconds``."""
    return {
        **evaluate(index),
        "seconds": seconds,
        "n_centroids": index.codec.n_centroids if index.codec else None,
        "health": asdict(index.health()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_scifact_arguments(parser)
    parser.add_argument("--nbits", type=int, default=2)
    parser.add_argument("--queries", type=int, default=None, help="evaluate only the first N queries")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "drift_scifact.json")
    args = parser.parse_args(argv)

    vectors = load_scifact_vectors(args.cache, data_dir=args.data)
    docs = [doc.astype(np.float32) for doc in vectors.docs()]
    queries = vectors.queries()[: args.queries]
    exact, _ = time_exhaustive(ExhaustiveMaxSim(vectors.doc_ids, vectors.doc_vectors, vectors.doc_offsets), queries, K)

    def evaluate(index: cs.Index) -> dict[str, Any]:
        rankings, seconds = time_searches(index, queries, K)
        return {**ranking_quality(rankings, exact, vectors.query_ids, vectors.qrels, K), **latency_summary(seconds)}

    order = drift_order(docs)
    first, rest = order[: len(docs) // 6], order[len(docs) // 6 :]
    by_id = {vectors.doc_ids[i]: docs[i] for i in range(len(docs))}

    def add(index: cs.Index, positions: np.ndarray) -> None:
        ids = [vectors.doc_ids[i] for i in positions]
        index.add(ids, [docs[i] for i in positions], texts=ids)

    def original_vectors(texts: list[str]) -> list[np.ndarray]:
        return [by_id[text] for text in texts]

    results: dict[str, Any] = {"n_docs": len(docs), "first_docs": len(first), "added_docs": len(rest), "steps": {}}
    steps = results["steps"]
    workdir = Path(tempfile.mkdtemp(prefix="colbert-store-drift-"))
    try:
        store = LanceDBStore(workdir)
        index = cs.Index.create(store, "drift", dim=docs[0].shape[1], nbits=args.nbits)
        add(index, first)
        steps["trained on the first sixth"] = {**asdict(index.health()), "n_centroids": index.codec.n_centroids}
        start = time.perf_counter()
        add(index, rest)
        steps["+5x drifted documents"] = step_row(index, evaluate, time.perf_counter() - start)
        print(json.dumps(steps["+5x drifted documents"]))
        start = time.perf_counter()
        index.retrain()
        steps["retrained from decoded vectors"] = step_row(index, evaluate, time.perf_counter() - start)
        print(json.dumps(steps["retrained from decoded vectors"]))
        start = time.perf_counter()
        index.retrain(encode_texts=original_vectors)
        steps["retrained from text"] = step_row(index, evaluate, time.perf_counter() - start)
        print(json.dumps(steps["retrained from text"]))

        fresh = cs.Index.create(store, "fresh", dim=docs[0].shape[1], nbits=args.nbits)
        start = time.perf_counter()
        add(fresh, order)
        steps["built on the whole corpus (reference)"] = step_row(fresh, evaluate, time.perf_counter() - start)
        store.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    save_results(args.out, results, drift_table(results))


def drift_table(results: dict[str, Any]) -> str:
    """The steps that were searched, as a markdown table."""
    rows = [
        [name, f"{row['recall_at_10_vs_exact']:.3f}", f"{row['ndcg_at_10']:.4f}", f"{row['p50_ms']:.1f}",
         f"x{row['health']['error_ratio']:.2f}", "yes" if row["health"]["needs_retrain"] else "no", row["n_centroids"],
         f"{row['seconds']:.1f}"]
        for name, row in results["steps"].items()
        if "recall_at_10_vs_exact" in row
    ]
    columns = ["step", "recall@10 vs exact", "nDCG@10", "p50 ms", "error vs training", "needs retrain", "centroids", "step s"]
    return markdown_table(columns, rows)


if __name__ == "__main__":
    main()
