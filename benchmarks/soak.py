"""Soak: minutes of writer processes, searcher processes, retrains and killed writers on one index, per store.

    python -m benchmarks.soak --seconds 600 --retrains 5 --kills 5

Runs the concurrency harness of the test suite (``tests.concurrency``) for longer: writer processes
replace and delete documents of one pool of ids, overlapping each other; searcher processes search
and log every hit; a retrainer process retrains from text ``--retrains`` times, evenly spaced;
writers are SIGKILLed mid-call ``--kills`` times (each replaced by a new writer). Then every stored
document and every search is held against what the workers were told: lost writes, torn documents,
duplicated ids, documents left with a codec the index no longer holds, and searches that showed a
version already superseded when they began. Stores that one process only may open (qdrant-client's
local mode) run the same workers as threads, without kills. Results go to
``benchmarks/results/soak.json`` and a table.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.lib.paths import RESULTS_DIR
from benchmarks.lib.report import markdown_table, save_results
from tests.concurrency.checker import summary
from tests.concurrency.harness import run_processes, run_threads
from tests.concurrency.workload import open_store

STORES = ("lancedb", "qdrant-local")


def soak(kind: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One store's run: counts of calls, retrains, kills and every kind of failure."""
    started = time.perf_counter()
    workers = {"writers": args.writers, "searchers": args.searchers, "retrains": args.retrains, "seconds": args.seconds}
    if kind == "qdrant-local":
        store = open_store({"kind": "qdrant-path", "path": str(folder / "qdrant")})
        try:
            report = run_threads(store, folder / "logs", **workers)
        finally:
            store.close()
        report["kills"] = 0
    else:
        report = run_processes({"kind": "lancedb", "uri": str(folder / "db")}, folder / "logs", kills=args.kills, **workers)
    return {**summary(report), "wall_seconds": time.perf_counter() - started, "first_errors": report["errors"][:5]}


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
    for kind in args.stores:
        folder = Path(tempfile.mkdtemp(prefix=f"soak-{kind}-"))
        try:
            results[kind] = soak(kind, folder, args)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"{kind}: {results[kind]}", flush=True)
    save_results(args.out, results, soak_table(results))


def soak_table(results: dict[str, Any]) -> str:
    """One row per store: traffic, retrains, kills and every kind of failure."""
    columns = ["store", "seconds", "calls (acknowledged)", "searches", "retrains", "kills", "errors", "lost", "torn",
               "duplicated", "dead codec", "stale searches"]
    rows = [
        [kind, f"{row['wall_seconds']:.0f}", f"{row['calls']} ({row['acknowledged']})", row["searches"], row["retrains"],
         row["kills"], row["errors"] + row["retrain_errors"], row["lost"], row["torn"], row["duplicated"], row["dead_codec"],
         row["stale_searches"]]
        for kind, row in results.items() if kind != "settings"
    ]
    return markdown_table(columns, rows)


if __name__ == "__main__":
    main()
