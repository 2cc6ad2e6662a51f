"""One system of the side-by-side SciFact benchmark, measured in a process of its own (so its peak memory is its own).

    python -m benchmarks.systems SYSTEM --out row.json --exact exact.json [--cache DIR] [--queries N] [--keep-index DIR]

``benchmarks.run`` calls this once per system; ``exact`` must run first, since it writes the exact
rankings (``--exact``) every other system is scored against. Every system sees the same cached SciFact
vectors (``benchmarks.lib.scifact``) and writes one JSON row: recall@10 against exact, nDCG@10,
single-query p50/p95, queries per second in batches, build seconds and bytes per token on disk.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import colbert_store as cs
from benchmarks.lib.data import SCIFACT_INDEX, BenchData, folder_bytes, open_store
from benchmarks.lib.exhaustive import ExhaustiveMaxSim
from benchmarks.lib.plaid import run_plaid
from benchmarks.lib.scifact import add_scifact_arguments, load_scifact_vectors
from benchmarks.lib.timing import batch_seconds, time_exhaustive, time_searches, use_search_threads
from benchmarks.native_multivector import edge_native, lancedb_native, qdrant_native

SWEEP: tuple[dict[str, Any], ...] = (
    {"nprobe": 1, "ncandidates": 128, "nrerank": 32, "rerank_margin": None, "centroid_threshold": 0.5},
    {"nprobe": 2, "ncandidates": 256, "nrerank": 32, "rerank_margin": None, "centroid_threshold": 0.45},
    {"nprobe": 1, "ncandidates": 192, "nrerank": 96, "rerank_margin": 0.08, "centroid_threshold": 0.5},
    {"nprobe": 2, "ncandidates": 256, "nrerank": 64, "rerank_margin": None, "centroid_threshold": 0.45},
    {"nprobe": 2, "ncandidates": 256, "nrerank": 128, "rerank_margin": None, "centroid_threshold": 0.45},
    {"nprobe": 4, "ncandidates": 512, "nrerank": 128, "rerank_margin": None, "centroid_threshold": 0.4},
    {"nprobe": 4, "ncandidates": 512, "nrerank": 256, "rerank_margin": None, "centroid_threshold": 0.4},
    {"nprobe": 8, "ncandidates": 1024, "nrerank": 512, "rerank_margin": None, "centroid_threshold": None},
)
"""Search settings of the latency-vs-recall curve, from fastest to most thorough."""
SLOW_SYSTEMS = frozenset({"qdrant-native", "lancedb-native-flat", "lancedb-native-indexed", "edge-native-float32",
                          "edge-native-float16"})
"""Systems scored on the first ``--slow-queries`` queries only (seconds per query)."""


def exact_system(data: BenchData) -> dict[str, Any]:
    """Exhaustive exact MaxSim over every token vector, fp32 in memory (torch matmuls): the quality ceiling."""
    started = time.perf_counter()
    exhaustive = ExhaustiveMaxSim(data.vectors.doc_ids, data.vectors.doc_vectors, data.vectors.doc_offsets)
    build_seconds = time.perf_counter() - started
    rankings, seconds = time_exhaustive(exhaustive, data.queries, data.k)
    data.exact = rankings
    return {
        **data.score(rankings, seconds, sum(seconds)),
        "batch_note": "sequential (one matmul per query)",
        "build_seconds": build_seconds,
        "bytes_per_token": 2.0 * data.vectors.dim,  # the fp16 vectors it needs kept somewhere
        "rankings": rankings,
    }


def colbert_store_system(data: BenchData, store_kind: str, nbits: int, sweep: bool) -> dict[str, Any]:
    """colbert-store on ``store_kind`` (a kind of :func:`open_store`, in a local folder) at ``nbits``,
    default settings; with ``sweep``, also recall and latency at each :data:`SWEEP` setting, timed as the
    defaults are (every query, the same warm-up), so that the curve and the row's point compare."""
    store = open_store(store_kind, data.workdir)
    started = time.perf_counter()
    index = cs.Index.create(store, SCIFACT_INDEX, dim=data.vectors.dim, nbits=nbits)
    index.add(data.vectors.doc_ids, data.docs, queries=data.vectors.pseudo_query_vectors)  # trains the codec
    build_seconds = time.perf_counter() - started
    bytes_before_optimize = folder_bytes(data.workdir)
    if store_kind == "lancedb":
        store.optimize(SCIFACT_INDEX, cleanup_older_than=timedelta(0))  # drop the table versions the writes left behind
    elif store_kind.startswith("qdrant-edge"):
        store.optimize()  # merge the segments the writes left, as the engine's optimizer does in the background
    started = time.perf_counter()
    warmed = index.warm()  # codes into memory, as a service would at start-up (PLAID loads its whole index)
    warm_seconds = time.perf_counter() - started
    rankings, seconds = time_searches(index, data.queries, data.k)
    row = data.score(rankings, seconds, batch_seconds(lambda batch: index.search_batch(batch, k=data.k), data.queries))
    row.update(
        build_seconds=build_seconds,
        warm_seconds=warm_seconds,
        warmed_documents=warmed,
        bytes_per_token=folder_bytes(data.workdir) / data.n_tokens,
        bytes_per_token_before_optimize=bytes_before_optimize / data.n_tokens,
        codes_bytes_per_token=store.size_bytes(SCIFACT_INDEX) / data.n_tokens,
        n_centroids=index.codec.n_centroids if index.codec else None,
        settings=asdict(index.settings.search),
        rankings=rankings,
        seconds=seconds,
    )
    if sweep:
        row["sweep"] = [_sweep_point(data, index, params) for params in SWEEP]
    store.close()
    return row


def plaid_system(data: BenchData) -> dict[str, Any]:
    """Stanford PLAID (colbert-ai) at nbits=2 with its default search settings, in its own environment."""
    plaid = run_plaid(data.cache_dir, nbits=2, k=data.k, index_dir=data.workdir)
    row = data.score(plaid["rankings"], plaid["seconds"], sum(plaid["seconds"]))
    row.update(
        batch_note="sequential (PLAID's searcher takes one query at a time)",
        build_seconds=plaid["build_seconds"],
        bytes_per_token=plaid["index_bytes"] / plaid["n_tokens"],
        peak_rss_build_mib=plaid["peak_rss_build_mib"],
        settings=plaid["search_settings"],
    )
    return row


def _sweep_point(data: BenchData, index: cs.Index, params: dict[str, Any]) -> dict[str, Any]:
    rankings, seconds = time_searches(index, data.queries, data.k, **params)
    return {"params": params, **data.score(rankings, seconds)}


def system_runners() -> dict[str, Callable[[BenchData], dict[str, Any]]]:
    """Every system by name, in the order ``benchmarks.run`` measures them (``exact`` first)."""
    runners: dict[str, Callable[[BenchData], dict[str, Any]]] = {"exact": exact_system}
    for store_kind in ("lancedb", "qdrant", "qdrant-edge", "qdrant-edge-compact"):
        for nbits in (1, 2, 4):
            runners[f"colbert-store-{store_kind}-nbits{nbits}"] = (
                lambda data, s=store_kind, b=nbits: colbert_store_system(data, s, b, sweep=s == "lancedb" and b != 1)
            )
    runners["edge-native-float32"] = lambda data: edge_native(data, "float32")
    runners["edge-native-float16"] = lambda data: edge_native(data, "float16")
    runners["qdrant-native"] = qdrant_native
    runners["lancedb-native-flat"] = lambda data: lancedb_native(data, indexed=False)
    runners["lancedb-native-indexed"] = lambda data: lancedb_native(data, indexed=True)
    runners["plaid"] = plaid_system
    return runners


def main(argv: list[str] | None = None) -> None:
    runners = system_runners()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("system", choices=sorted(runners))
    parser.add_argument("--out", type=Path, required=True, help="where the system's JSON row goes")
    add_scifact_arguments(parser)
    parser.add_argument("--exact", type=Path, required=True, help="exact rankings: written by 'exact', read by the rest")
    parser.add_argument("--queries", type=int, default=None, help="evaluate only the first N queries")
    parser.add_argument("--slow-queries", type=int, default=100, help="queries for the slow systems")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--keep-index", type=Path, default=None, help="build the index in this new folder and keep it")
    parser.add_argument("--padded", action="store_true", help="the queries padded with [MASK] to 32 tokens (not PLAID)")
    args = parser.parse_args(argv)
    if args.padded and args.system == "plaid":
        parser.error("PLAID reads the unpadded queries here; head_to_head --padded times it on the padded ones")

    use_search_threads()
    vectors = load_scifact_vectors(args.cache, data_dir=args.data, query_expansion=args.padded)
    queries = vectors.queries()[: args.queries]
    exact = [] if args.system == "exact" else json.loads(args.exact.read_text())["rankings"]
    if args.system != "exact" and len(exact) < len(queries):
        parser.error(f"{args.exact} ranks {len(exact)} queries, fewer than the {len(queries)} to score (rerun 'exact')")
    if args.keep_index:
        args.keep_index.mkdir(parents=True)
    workdir = args.keep_index or Path(tempfile.mkdtemp(prefix=f"colbert-store-{args.system}-"))
    data = BenchData(
        vectors=vectors,
        queries=queries[: args.slow_queries] if args.system in SLOW_SYSTEMS else queries,
        exact=exact,
        k=args.k,
        workdir=workdir,
        cache_dir=args.cache,
    )
    try:
        row = runners[args.system](data)
    finally:
        if not args.keep_index:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.system == "exact":
        args.exact.write_text(json.dumps({"query_ids": data.query_ids, "rankings": row.pop("rankings")}))
    args.out.write_text(json.dumps({"system": args.system, **row}, indent=2))


if __name__ == "__main__":
    main()
