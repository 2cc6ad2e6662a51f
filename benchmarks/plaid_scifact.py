"""colbert-store next to the Stanford PLAID engine on the same SciFact vectors, same machine, same run.

    python -m benchmarks.plaid_scifact --data ../shared/data/scifact

PLAID (PyPI colbert-ai, nbits=2, its default search settings, CPU) runs in its own virtual
environment, ``.venv-plaid``, created here on first use with pinned versions; the first search
compiles its C++ kernels (cached afterwards). colbert-store indexes the same vectors in LanceDB at
nbits=2 with its defaults. Both are scored against exhaustive exact MaxSim. Results go to
benchmarks/results/plaid_scifact.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.core_scifact import RESULTS, lancedb_row, ranking_quality, run_exhaustive, save_results, split
from benchmarks.exhaustive import ExhaustiveMaxSim
from benchmarks.metrics import latency_summary
from benchmarks.scifact_vectors import load_scifact_vectors

ROOT = Path(__file__).resolve().parent.parent
PLAID_REQUIREMENTS = ["torch==2.13.0", "colbert-ai==0.2.22", "faiss-cpu==1.15.1", "ninja==1.13.2"]


def plaid_python(venv: Path) -> Path:
    """The PLAID environment's interpreter, creating the environment first if it is missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PLAID_REQUIREMENTS], check=True)
    return python


def run_plaid(python: Path, cache: str, nbits: int, k: int, index_dir: Path | None = None) -> dict[str, Any]:
    """Build and search a PLAID index (``plaid_runner.py``); the index goes to ``index_dir`` if given, else is deleted."""
    with tempfile.TemporaryDirectory(prefix="plaid-") as folder:
        out = Path(folder) / "plaid.json"
        subprocess.run(
            [str(python), str(ROOT / "benchmarks" / "plaid_runner.py"), "--cache", cache,
             "--index-dir", str(index_dir or Path(folder) / "index"), "--out", str(out), "--nbits", str(nbits),
             "--k", str(k)],
            check=True,
        )
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/colbert-store/scifact"))
    parser.add_argument("--plaid-venv", default=str(ROOT / ".venv-plaid"))
    parser.add_argument("--nbits", type=int, default=2)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", default=str(RESULTS / "plaid_scifact.json"))
    args = parser.parse_args(argv)

    vectors = load_scifact_vectors(args.cache, data_dir=args.data)
    docs = split(vectors.doc_vectors, vectors.doc_offsets)
    queries = [q.astype(np.float32) for q in split(vectors.query_vectors, vectors.query_offsets)]
    n_tokens = int(vectors.doc_offsets[-1])
    exact, _ = run_exhaustive(ExhaustiveMaxSim(vectors.doc_ids, vectors.doc_vectors, vectors.doc_offsets), queries, args.k)

    plaid = run_plaid(plaid_python(Path(args.plaid_venv)), args.cache, args.nbits, args.k)
    results: dict[str, Any] = {
        "plaid": {
            **ranking_quality(plaid["rankings"], exact, vectors.query_ids, vectors.qrels, args.k),
            **latency_summary(plaid["seconds"]),
            "build_seconds": plaid["build_seconds"],
            "disk_bytes_per_token": plaid["index_bytes"] / n_tokens,
            "peak_rss_build_mib": plaid["peak_rss_build_mib"],
            "search_settings": plaid["search_settings"],
        }
    }
    results["colbert_store_lancedb"] = lancedb_row(vectors, docs, queries, vectors.query_ids, exact, args.k, args.nbits)

    save_results(args.out, results, markdown_table(results))


def markdown_table(results: dict[str, Any]) -> str:
    lines = [
        "| system (nbits=2) | recall@10 vs exact | nDCG@10 | p50 ms | p95 ms | build s | disk B/token |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, label in (("plaid", "Stanford PLAID (colbert-ai, defaults)"), ("colbert_store_lancedb", "colbert-store, LanceDB")):
        row = results[name]
        lines.append(
            f"| {label} | {row['recall_at_10_vs_exact']:.3f} | {row['ndcg_at_10']:.4f} | {row['p50_ms']:.1f} "
            f"| {row['p95_ms']:.1f} | {row['build_seconds']:.1f} | {row['disk_bytes_per_token']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
