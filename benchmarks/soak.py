"""Soak: minutes of writer processes, searcher processes, retrains and killed writers on one index, per store.

    python -m benchmarks.soak --seconds 600 --retrains 5 --kills 5
    python -m benchmarks.soak --seconds 600 --writers 1 --searchers 4 --retrains 1 --kills 0

Runs the concurrency harness of the test suite (``tests.concurrency``) for longer: writer processes
replace and delete documents of one pool of ids, overlapping each other; searcher processes search
and log every hit; a retrainer process retrains from text ``--retrains`` times, evenly spaced;
writers are SIGKILLed mid-call ``--kills`` times (each replaced by a new writer). Then every stored
document and every search is held against what the workers were told: lost writes, torn documents,
duplicated ids, documents left with a codec the index no longer holds, documents their own vectors do
not retrieve first, and searches that showed a version already superseded when they began (the
bound is 0: a search that begins after a write returned sees it). LanceDB on S3 runs against a
loopback moto server the benchmark starts. Stores that one process only may open (Qdrant Edge,
qdrant-client's local mode) run the same workers as threads of one process, without kills. Results
go to ``benchmarks/results/soak.json`` and a table, with the searchers' throughput and latency.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.lib.paths import RESULTS_DIR
from benchmarks.lib.report import markdown_table, save_results
from benchmarks.lib.timing import latency_summary
from tests import s3
from tests.concurrency.checker import read_events, summary
from tests.concurrency.harness import run_processes, run_threads
from tests.concurrency.workload import open_store

PROCESS_STORES = ("lancedb", "lancedb-s3")
THREAD_STORES = {"qdrant-edge": "qdrant-edge", "qdrant-local": "qdrant-path"}
STORES = (*PROCESS_STORES, *THREAD_STORES)


def soak(kind: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One store's run: counts of calls, retrains, kills, every kind of failure, and search speed."""
    started = time.perf_counter()
    logs = folder / "logs"
    workers = {"writers": args.writers, "searchers": args.searchers, "retrains": args.retrains, "seconds": args.seconds}
    if kind in THREAD_STORES:
        store = open_store({"kind": THREAD_STORES[kind], "path": str(folder / "store")})
        try:
            report = run_threads(store, logs, **workers)
        finally:
            store.close()
        report["kills"] = 0
    else:
        spec: dict[str, Any] = {"kind": "lancedb", "uri": str(folder / "db")}
        if kind == "lancedb-s3":
            spec = {"kind": "lancedb", "uri": f"s3://{s3.bucket_for(folder)}/index", "storage_options": s3.storage_options()}
        report = run_processes(spec, logs, kills=args.kills, **workers)
    searches = [event for event in read_events(sorted(logs.glob("searcher-*.log"))) if event["event"] == "search"]
    latencies = latency_summary([(event["end"] - event["start"]) / 1e9 for event in searches]) if searches else None
    return {
        **summary(report),
        "wall_seconds": time.perf_counter() - started,
        "searches_per_second": len(searches) / args.seconds,
        "search_p50_ms": latencies["p50_ms"] if latencies else None,
        "search_p95_ms": latencies["p95_ms"] if latencies else None,
        "first_errors": report["errors"][:5],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="traffic per store (default 600)")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--searchers", type=int, default=2)
    parser.add_argument("--retrains", type=int, default=5)
    parser.add_argument("--kills", type=int, default=5, help="writers SIGKILLed mid-call (process stores only)")
    parser.add_argument("--stores", nargs="+", default=list(STORES), choices=STORES)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "soak.json")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"settings": {key: value for key, value in vars(args).items() if key != "out"}}
    server = None
    if "lancedb-s3" in args.stores:
        server, os.environ[s3.ENDPOINT_VARIABLE] = s3.start_server()
    try:
        for kind in args.stores:
            folder = Path(tempfile.mkdtemp(prefix=f"soak-{kind}-"))
            try:
                results[kind] = soak(kind, folder, args)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            print(f"{kind}: {results[kind]}", flush=True)
    finally:
        if server is not None:
            server.kill()
    save_results(args.out, results, soak_table(results))


def soak_table(results: dict[str, Any]) -> str:
    """One row per store: traffic, retrains, kills, every kind of failure and the searchers' speed."""
    columns = ["store", "seconds", "calls (acknowledged)", "searches", "searches/s", "search p50 / p95 ms", "retrains",
               "kills", "errors", "lost", "torn", "duplicated", "dead codec", "not self-retrieved", "stale searches"]
    rows = [
        [kind, f"{row['wall_seconds']:.0f}", f"{row['calls']} ({row['acknowledged']})", row["searches"],
         f"{row['searches_per_second']:.1f}", _latencies(row), row["retrains"], row["kills"],
         row["errors"] + row["retrain_errors"], row["lost"], row["torn"], row["duplicated"], row["dead_codec"],
         row["not_self_retrieved"], row["stale_searches"]]
        for kind, row in results.items() if kind != "settings"
    ]
    return markdown_table(columns, rows)


def _latencies(row: dict[str, Any]) -> str:
    return "–" if row["search_p50_ms"] is None else f"{row['search_p50_ms']:.1f} / {row['search_p95_ms']:.1f}"


if __name__ == "__main__":
    main()
