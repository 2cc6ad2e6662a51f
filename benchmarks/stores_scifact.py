"""Store benchmark on SciFact (issue 4): the same index on LanceDB and on Qdrant local mode, side by side.

    python -m benchmarks.stores_scifact [--queries N] [--keep DIR]

The index is built once on LanceDB (then compacted, old versions deleted); its header (settings and
codec) and encoded documents are copied as they are into a Qdrant local-mode folder, so both stores
hold the identical index. The same queries run on both: top-10 agreement between the stores, recall@10
against exhaustive exact MaxSim, nDCG@10, the first query after opening, p50/p95 single-query latency
(after 50 warm-up queries, as in ``core_scifact``; the stores take turns every 10 queries so background
load hits both alike), bytes per token of the codes and residuals as stored and of the whole folder,
and build / copy / open times. ``--keep DIR`` keeps the stores; running again with the same ``DIR``
reuses them (and their recorded build and copy times) instead of building again.
Results go to benchmarks/results/stores_scifact.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import torch

import colbert_store as cs
from benchmarks.core_scifact import folder_bytes, run_exhaustive, split, time_searches
from benchmarks.exhaustive import ExhaustiveMaxSim
from benchmarks.metrics import latency_summary, ndcg_at_k, overlap_at_k
from benchmarks.scifact_vectors import DEFAULT_CACHE_DIR, load_scifact_vectors
from colbert_store.adapters.lancedb import LanceDBStore
from colbert_store.adapters.qdrant import QdrantStore
from colbert_store.storage import Store

RESULTS = Path(__file__).parent / "results"
NAME = "scifact"
BUILD_RECORD = "build.json"
INTERLEAVE = 10  # queries timed on one store before switching to the other


def copy_index(source: Store, target: Store, name: str, batch_size: int = 1024) -> int:
    """Copy index ``name`` as stored: the same header (settings and codec) and encoded documents.

    Returns the number of documents copied.
    """
    target.create_index(name, source.read_header(name))
    copied = 0
    for batch in source.scan(name, batch_size):
        target.upsert(name, batch)
        copied += len(batch)
    return copied


def store_row(
    rankings: list[list[str]], seconds: list[float], query_ids: list[str], qrels: dict[str, dict[str, int]],
    exact: list[list[str]] | None, k: int,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ndcg_at_10": float(np.mean([ndcg_at_k(r, qrels[q], k) for r, q in zip(rankings, query_ids)])),
        **latency_summary(seconds),
    }
    if exact is not None:
        row["recall_at_10_vs_exact"] = float(np.mean([overlap_at_k(r, e, k) for r, e in zip(rankings, exact)]))
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=str(DEFAULT_CACHE_DIR), help="SciFact vector cache folder")
    parser.add_argument("--data", default=None, help="SciFact BEIR folder (only needed to build the cache)")
    parser.add_argument("--queries", type=int, default=None, help="use only the first N queries (default: all 809)")
    parser.add_argument(
        "--keep", type=Path, default=None,
        help="build the stores in this folder and keep them; a folder holding a finished build is reused as is",
    )
    parser.add_argument("--nbits", type=int, default=2)
    parser.add_argument("--n-centroids", type=int, default=None)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=50, help="untimed queries run first on each store")
    parser.add_argument("--no-exact", action="store_true", help="skip exhaustive exact MaxSim (no recall vs exact)")
    parser.add_argument("--out", type=Path, default=RESULTS / "stores_scifact.json")
    args = parser.parse_args(argv)

    vectors = load_scifact_vectors(args.cache, data_dir=args.data)
    docs = split(vectors.doc_vectors, vectors.doc_offsets)
    queries = [q.astype(np.float32) for q in split(vectors.query_vectors, vectors.query_offsets)][: args.queries]
    query_ids = vectors.query_ids[: len(queries)]
    n_tokens = int(vectors.doc_offsets[-1])
    print(f"{len(docs)} documents, {n_tokens} tokens, {len(queries)} queries")

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="colbert-store-stores-"))
    try:
        build = load_or_build(args, vectors, docs, workdir)
        results = measure(args, vectors, queries, query_ids, n_tokens, workdir, build)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    results["folder"] = str(workdir) if args.keep is not None else None

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(markdown_table(results))


def load_or_build(args: argparse.Namespace, vectors: Any, docs: list[np.ndarray], workdir: Path) -> dict[str, Any]:
    """Build on LanceDB, compact it and copy it to Qdrant, or reuse a finished build (``build.json``) in ``workdir``."""
    record = workdir / BUILD_RECORD
    settings = {"nbits": args.nbits, "n_centroids_setting": args.n_centroids, "n_docs": len(docs)}
    if record.is_file():
        build = json.loads(record.read_text())
        if {key: build.get(key) for key in settings} != settings:
            raise SystemExit(f"{workdir} holds a build with other settings ({build}); use another --keep folder")
        print(f"reusing the stores built in {workdir}")
        return build
    if workdir.exists() and any(workdir.iterdir()) and args.keep is not None:
        raise SystemExit(f"--keep folder {workdir} is neither empty nor a finished build")
    workdir.mkdir(parents=True, exist_ok=True)
    lancedb_dir, qdrant_dir = workdir / "lancedb", workdir / "qdrant"
    started = time.perf_counter()
    source = LanceDBStore(lancedb_dir)
    index = cs.Index.create(source, NAME, dim=vectors.dim, nbits=args.nbits, n_centroids=args.n_centroids)
    index.add(vectors.doc_ids, docs)
    build_seconds = time.perf_counter() - started
    print(f"LanceDB build: {build_seconds:.1f} s")
    folder_before = folder_bytes(lancedb_dir)
    started = time.perf_counter()
    source.optimize(NAME, cleanup_older_than=timedelta(0))
    compact_seconds = time.perf_counter() - started

    started = time.perf_counter()
    target = QdrantStore(qdrant_dir)
    copied = copy_index(source, target, NAME)
    target.close()
    copy_seconds = time.perf_counter() - started
    print(f"copied {copied} documents to Qdrant local in {copy_seconds:.1f} s")
    build = {
        **settings,
        "build_seconds": build_seconds,
        "compact_seconds": compact_seconds,
        "copy_seconds": copy_seconds,
        "lancedb_folder_bytes_before_compaction": folder_before,
    }
    record.write_text(json.dumps(build, indent=2))
    return build


def measure(
    args: argparse.Namespace, vectors: Any, queries: list[np.ndarray], query_ids: list[str], n_tokens: int,
    workdir: Path, build: dict[str, Any],
) -> dict[str, Any]:
    """Open both stores, check they hold the same index, time the same queries on both (interleaved)."""
    k = args.k
    folders = {"lancedb": workdir / "lancedb", "qdrant_local": workdir / "qdrant"}
    openers = {"lancedb": LanceDBStore, "qdrant_local": QdrantStore}
    stores: dict[str, dict[str, Any]] = {}
    opened: dict[str, tuple[Any, cs.Index]] = {}
    for key, folder in folders.items():
        started = time.perf_counter()
        store = openers[key](folder)
        opened[key] = (store, cs.Index.open(store, NAME))
        stores[key] = {"open_seconds": time.perf_counter() - started}
    (lance_store, lance_index), (qdrant_store, qdrant_index) = opened["lancedb"], opened["qdrant_local"]
    if lance_index.codec is None or qdrant_index.codec is None or lance_index.codec.to_bytes() != qdrant_index.codec.to_bytes():
        raise RuntimeError("the Qdrant copy does not hold the same codec as the LanceDB index")
    if qdrant_index.settings != lance_index.settings or len(qdrant_index) != len(lance_index):
        raise RuntimeError("the Qdrant copy differs from the LanceDB index in settings or document count")

    for key, (_, index) in opened.items():  # the first query also builds the local Qdrant lookup table
        started = time.perf_counter()
        time_searches(index, queries[:1], k, warmup=0)
        stores[key]["first_query_ms"] = 1000 * (time.perf_counter() - started)
        time_searches(index, queries[1 : args.warmup], k, warmup=0)
    rankings: dict[str, list[list[str]]] = {key: [] for key in opened}
    seconds: dict[str, list[float]] = {key: [] for key in opened}
    for start in range(0, len(queries), INTERLEAVE):  # alternate stores so background load hits both alike
        for key, (_, index) in opened.items():
            chunk_rankings, chunk_seconds = time_searches(index, queries[start : start + INTERLEAVE], k, warmup=0)
            rankings[key] += chunk_rankings
            seconds[key] += chunk_seconds
    for key in opened:
        print(f"{key}: p50 {latency_summary(seconds[key])['p50_ms']:.1f} ms")

    exact_row: dict[str, Any] | None = None
    exact: list[list[str]] | None = None
    if not args.no_exact:
        exhaustive = ExhaustiveMaxSim(vectors.doc_ids, vectors.doc_vectors, vectors.doc_offsets)
        exact, exact_seconds = run_exhaustive(exhaustive, queries, k)
        del exhaustive
        exact_row = {**store_row(exact, exact_seconds, query_ids, vectors.qrels, None, k), "bytes_per_token": 2 * vectors.dim}

    for key in opened:
        stores[key].update(store_row(rankings[key], seconds[key], query_ids, vectors.qrels, exact, k))
    stores["lancedb"].update(
        build_seconds=build["build_seconds"],
        compact_seconds=build["compact_seconds"],
        payload_bytes_per_token=lance_store.size_bytes(NAME) / n_tokens,
        disk_bytes_per_token=folder_bytes(folders["lancedb"]) / n_tokens,
        disk_bytes_per_token_before_compaction=build["lancedb_folder_bytes_before_compaction"] / n_tokens,
    )
    stores["qdrant_local"].update(
        copy_seconds=build["copy_seconds"],
        payload_bytes_per_token=qdrant_store.size_bytes(NAME) / n_tokens,
        disk_bytes_per_token=folder_bytes(folders["qdrant_local"]) / n_tokens,
    )
    stats = lance_index.stats()
    for store, _ in opened.values():
        store.close()

    pairs = list(zip(rankings["qdrant_local"], rankings["lancedb"]))
    return {
        "n_docs": stats["documents"],
        "n_tokens": n_tokens,
        "n_queries": len(queries),
        "k": k,
        "nbits": lance_index.settings.nbits,
        "n_centroids": stats["centroids"],
        "codec_bytes_per_token": stats["bytes_per_token"],
        "warmup_queries": args.warmup,
        "top10_overlap_qdrant_vs_lancedb": float(np.mean([overlap_at_k(q, lance, k) for q, lance in pairs])),
        "identical_rankings_fraction": float(np.mean([q == lance for q, lance in pairs])),
        "stores": stores,
        "exhaustive_fp32": exact_row,
        "environment": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_1m_at_end": os.getloadavg()[0],
            "python": platform.python_version(),
            "lancedb": lancedb.__version__,
            "qdrant_client": _version("qdrant-client"),
        },
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def markdown_table(results: dict[str, Any]) -> str:
    """Rows for LanceDB, Qdrant local and (if run) exhaustive exact MaxSim."""
    k = results["k"]
    lines = [
        f"SciFact: {results['n_docs']} docs, {results['n_tokens']} tokens, {results['n_queries']} queries, "
        f"nbits={results['nbits']}, {results['n_centroids']} centroids. "
        f"Top-{k} overlap Qdrant vs LanceDB: {results['top10_overlap_qdrant_vs_lancedb']:.4f} "
        f"(identical rankings: {results['identical_rankings_fraction']:.3f}).",
        "",
        f"| store | recall@{k} vs exact | nDCG@{k} | p50 ms | p95 ms | first query ms | build / copy s | open s "
        "| codes+residuals B/token | folder B/token |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lance, qdrant = results["stores"]["lancedb"], results["stores"]["qdrant_local"]

    def recall(row: dict[str, Any]) -> str:
        return f"{row['recall_at_10_vs_exact']:.3f}" if "recall_at_10_vs_exact" in row else "–"

    lines.append(
        f"| LanceDB | {recall(lance)} | {lance['ndcg_at_10']:.4f} | {lance['p50_ms']:.1f} | {lance['p95_ms']:.1f} "
        f"| {lance['first_query_ms']:.0f} | {lance['build_seconds']:.1f} (build) | {lance['open_seconds']:.2f} "
        f"| {lance['payload_bytes_per_token']:.1f} | {lance['disk_bytes_per_token']:.1f} "
        f"({lance['disk_bytes_per_token_before_compaction']:.1f} before cleanup) |"
    )
    lines.append(
        f"| Qdrant local (on disk) | {recall(qdrant)} | {qdrant['ndcg_at_10']:.4f} | {qdrant['p50_ms']:.1f} "
        f"| {qdrant['p95_ms']:.1f} | {qdrant['first_query_ms']:.0f} | {qdrant['copy_seconds']:.1f} (copy) "
        f"| {qdrant['open_seconds']:.2f} | {qdrant['payload_bytes_per_token']:.1f} (base64) "
        f"| {qdrant['disk_bytes_per_token']:.1f} |"
    )
    exact = results.get("exhaustive_fp32")
    if exact:
        lines.append(
            f"| exhaustive exact MaxSim (fp32 in memory) | 1.000 | {exact['ndcg_at_10']:.4f} | {exact['p50_ms']:.1f} "
            f"| {exact['p95_ms']:.1f} | – | – | – | {exact['bytes_per_token']} (fp16) | – |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
