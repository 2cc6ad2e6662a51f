"""The whole side-by-side benchmark in one command: every system on the same SciFact vectors, then the scale curve.

    pip install -c constraints.txt -e ".[bench]"
    python -m benchmarks.run --data ../shared/data/scifact

Encodes the corpus once (cached by ``benchmarks.scifact_vectors``), then measures each system of
``benchmarks.systems`` in a process of its own, one after the other, and records that process's peak
memory; then times PLAID, colbert-store (LanceDB, nbits=2) and exact MaxSim again, taking turns in
blocks of queries on the indexes the systems built (``benchmarks.head_to_head``), which is what the
latency targets are judged on; then runs ``benchmarks.scale_synthetic``. Writes
``run_scifact.json``, ``run_scifact.md`` (the table and how colbert-store fares against its targets),
``latency_recall.png`` and ``scale.png`` into ``--results``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.head_to_head import paired_table, run_head_to_head
from benchmarks.lib.paths import PLAID_VENV, REPO_ROOT, RESULTS_DIR
from benchmarks.lib.plaid import PLAID_RUNNER
from benchmarks.lib.report import markdown_table
from benchmarks.lib.scifact import add_scifact_arguments, load_scifact_vectors
from benchmarks.systems import system_runners

SCALE_TOKENS = (100_000, 1_000_000, 10_000_000)
HEAD_TO_HEAD = ("plaid", "colbert-store-lancedb-nbits2")
"""Systems whose indexes are kept for the paired latency run (``benchmarks.head_to_head``)."""
EDGE = "colbert-store-qdrant-edge-nbits2"
"""Joins the paired run when measured."""
EDGE_COMPACT = "colbert-store-qdrant-edge-compact-nbits2"
LABELS = {
    "exact": "exhaustive exact MaxSim (fp32, in memory)",
    "edge-native-float32": "Qdrant Edge native multivector MAX_SIM, float32, HNSW off",
    "edge-native-float16": "Qdrant Edge native multivector MAX_SIM, float16, HNSW off",
    "qdrant-native": "Qdrant native multivector MAX_SIM (qdrant-client local mode, an emulation)",
    "lancedb-native-flat": "LanceDB native multivector, flat",
    "lancedb-native-indexed": "LanceDB native multivector, vector index",
    "plaid": "Stanford PLAID (colbert-ai), nbits=2",
}


STORE_NAMES = {
    "lancedb": "LanceDB", "qdrant": "Qdrant local", "qdrant-edge": "Qdrant Edge", "qdrant-edge-compact": "Qdrant Edge compact",
}


def label(system: str) -> str:
    """Human name of a system for tables and plots."""
    if system.startswith("colbert-store-"):
        store, nbits = system.removeprefix("colbert-store-").rsplit("-", 1)
        return f"colbert-store on {STORE_NAMES[store]}, nbits={nbits[-1]}"
    return LABELS[system]


def run_system(system: str, args: argparse.Namespace, exact_path: Path, keep_index: Path | None = None) -> dict[str, Any]:
    """Measure ``system`` in a child process; its row plus the child's peak resident memory. Its
    index is kept in ``keep_index`` if given."""
    out = args.results / "systems" / f"{system}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "benchmarks.systems", system, "--out", str(out), "--cache", str(args.cache),
        "--exact", str(exact_path), "--slow-queries", str(args.slow_queries),
    ]
    if args.queries:
        command += ["--queries", str(args.queries)]
    if keep_index:
        command += ["--keep-index", str(keep_index)]
    print(f"== {system}", flush=True)
    started = time.perf_counter()
    # Qdrant local mode scores with one small numpy matmul per document: multi-threaded BLAS only adds contention.
    child = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{system} failed with exit code {child.returncode}")
    row = json.loads(out.read_text())
    row.update(peak_rss_mib=usage.ru_maxrss / 1024, wall_seconds=time.perf_counter() - started)  # KiB on Linux
    out.write_text(json.dumps(without_per_query(row), indent=2))
    print(f"   {row['recall_at_10_vs_exact']:.3f} recall, p50 {row['p50_ms']:.1f} ms, {row['wall_seconds']:.0f} s", flush=True)
    return row


PER_QUERY = ("rankings", "seconds")
"""Row fields with one entry per query: used by the checks, left out of the saved results."""


def without_per_query(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in PER_QUERY}


def run_scale(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The synthetic scale curve (each size in its own process, see ``benchmarks.scale_synthetic``)."""
    out = args.results / "scale_synthetic.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.scale_synthetic", "--tokens", *map(str, args.scale_tokens), "--out", str(out)],
        cwd=REPO_ROOT,
        check=True,
    )
    return json.loads(out.read_text())["rows"]


def target_checks(rows: dict[str, dict[str, Any]], paired: dict[str, Any] | None = None) -> list[tuple[str, bool, str]]:
    """colbert-store (LanceDB, nbits=2 unless said) against the targets of the benchmark issue: (target, met, measured).
    The latency targets are judged on the paired run (:func:`benchmarks.head_to_head.run_head_to_head`) when given."""
    ours, ours4 = rows.get("colbert-store-lancedb-nbits2"), rows.get("colbert-store-lancedb-nbits4")
    checks: list[tuple[str, bool, str]] = []

    def at_most(target: str, value: float, bound: float, unit: str = "") -> None:
        checks.append((target, value <= bound, f"{value:.4g} (bound {bound:.4g}){unit}"))

    def at_least(target: str, value: float, bound: float) -> None:
        checks.append((target, value >= bound, f"{value:.4g} (bound {bound:.4g})"))

    if ours:
        at_least("recall@10 vs exact >= 0.92", ours["recall_at_10_vs_exact"], 0.92)
    if ours4:
        at_least("recall@10 vs exact >= 0.96 (nbits=4)", ours4["recall_at_10_vs_exact"], 0.96)
    if ours and "exact" in rows:
        at_least("nDCG@10 >= exact - 0.01", ours["ndcg_at_10"], rows["exact"]["ndcg_at_10"] - 0.01)
        if paired and "paired_exact" in paired:
            at_least("p50 >= 10x lower than exact's (paired run)", paired["paired_exact"]["p50_ratio"], 10)
        else:
            at_least("p50 >= 10x lower than exact's", rows["exact"]["p50_ms"] / ours["p50_ms"], 10)
    if ours and "plaid" in rows:
        plaid = rows["plaid"]
        if paired:
            systems = paired["systems"]
            at_most("p50 <= PLAID's p50 (paired run, alternating blocks)", systems["colbert-store"]["p50_ms"],
                    systems["plaid"]["p50_ms"], " ms")
        else:
            at_most("p50 <= PLAID's p50", ours["p50_ms"], plaid["p50_ms"], " ms")
        at_most("disk bytes/token <= PLAID's", ours["bytes_per_token"], plaid["bytes_per_token"])
        at_most("build time <= 1/5 of PLAID's", ours["build_seconds"], plaid["build_seconds"] / 5, " s")
    for native in ("qdrant-native", "lancedb-native-flat"):
        if ours and native in rows:
            at_most(f"disk bytes/token <= 1/6 of {label(native)}", ours["bytes_per_token"], rows[native]["bytes_per_token"] / 6)
    checks += edge_checks(rows, paired)
    return checks


def edge_checks(rows: dict[str, dict[str, Any]], paired: dict[str, Any] | None) -> list[tuple[str, bool, str]]:
    """colbert-store on Qdrant Edge (nbits=2) against the targets of the real-engines issue."""
    edge, ours, native = rows.get(EDGE), rows.get("colbert-store-lancedb-nbits2"), rows.get("edge-native-float32")
    checks: list[tuple[str, bool, str]] = []
    if edge is None:
        return checks
    checks.append(("Edge: disk bytes/token <= 48", edge["bytes_per_token"] <= 48, f"{edge['bytes_per_token']:.1f}"))
    checks.append(("Edge: recall@10 vs exact >= 0.92", edge["recall_at_10_vs_exact"] >= 0.92,
                   f"{edge['recall_at_10_vs_exact']:.3f}"))
    if ours:
        same = float(np.mean([a == b for a, b in zip(edge["rankings"], ours["rankings"])]))
        checks.append(("Edge: same top 10 as LanceDB for >= 99% of queries", same >= 0.99, f"{same:.1%}"))
    if native:
        n = native["n_queries"]
        edge_p50 = float(np.median(edge["seconds"][:n])) * 1000
        speedup = native["p50_ms"] / edge_p50
        checks.append((f"Edge: >= 10x faster than {label('edge-native-float32')} (first {n} queries)", speedup >= 10,
                       f"{speedup:.1f}x ({native['p50_ms']:.0f} vs {edge_p50:.1f} ms)"))
        share = edge["bytes_per_token"] / native["bytes_per_token"]
        checks.append(("Edge: <= 1/15 of its bytes per token", share <= 1 / 15, f"1/{1 / share:.0f}"))
    if paired and "paired_edge" in paired:
        ratio = paired["paired_edge"]["median_time_ratio"]
        checks.append(("Edge: p50 <= 0.7x PLAID's (paired run)", ratio <= 0.7, f"{ratio:.3f}"))
    compact = rows.get(EDGE_COMPACT)
    if compact:
        checks.append(("Edge compact: disk bytes/token <= 48", compact["bytes_per_token"] <= 48,
                       f"{compact['bytes_per_token']:.1f}"))
        same = float(np.mean([a == b for a, b in zip(compact["rankings"], edge["rankings"])]))
        checks.append(("Edge compact: the same top 10 as Edge for every query", same == 1, f"{same:.1%}"))
    return checks


def markdown(rows: dict[str, dict[str, Any]], scale: list[dict[str, Any]], paired: dict[str, Any] | None = None) -> str:
    """The results table, the paired latency run, the target checks and the scale curve as markdown."""
    parts = [markdown_table(
        ["system", "recall@10 vs exact", "nDCG@10", "p50 ms", "p95 ms", "QPS, batches of 32", "build s", "disk B/token",
         "peak RSS MiB", "queries"],
        [
            [label(system), f"{row['recall_at_10_vs_exact']:.3f}", f"{row['ndcg_at_10']:.4f}", f"{row['p50_ms']:.1f}",
             f"{row['p95_ms']:.1f}", f"{row['qps_batch']:.1f}" if row.get("qps_batch") else "–", f"{row['build_seconds']:.1f}",
             f"{row['bytes_per_token']:.1f}", f"{row['peak_rss_mib']:.0f}", row["n_queries"]]
            for system, row in rows.items()
        ],
    )]
    if paired:
        parts.append(paired_table(paired))
    parts.append(markdown_table(
        ["target (colbert-store, LanceDB, nbits=2)", "met", "measured"],
        [[name, "yes" if met else "no", measured] for name, met, measured in target_checks(rows, paired)],
    ))
    if scale:
        parts.append(markdown_table(
            ["synthetic tokens", "build s", "tokens/s", "peak RSS while indexing MiB", "folder B/token", "p50 ms", "p95 ms",
             "p50 ms, cache hot"],
            [
                [f"{row['tokens']:,}", f"{row['build_seconds']:.1f}", f"{row['tokens'] / row['build_seconds']:,.0f}",
                 f"{row['peak_rss_indexing_mib']:.0f}", f"{row['folder_bytes_per_token']:.1f}", f"{row['p50_ms']:.1f}",
                 f"{row['p95_ms']:.1f}", f"{row['hot_p50_ms']:.1f}"]
                for row in scale
            ],
        ))
    return "\n\n".join(parts)


def plot_latency_recall(rows: dict[str, dict[str, Any]], path: Path) -> None:
    """colbert-store's latency-vs-recall curves across :data:`benchmarks.systems.SWEEP`, other systems as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5.5))
    colours = {system: plt.get_cmap("tab20")(i % 20) for i, system in enumerate(rows)}  # a sweep shares its star's
    for system, row in rows.items():
        if "sweep" in row:
            points = row["sweep"]
            recalls, latencies = [p["recall_at_10_vs_exact"] for p in points], [p["p50_ms"] for p in points]
            axes.plot(recalls, latencies, marker="o", markersize=4, color=colours[system],
                      label=f"{label(system)}: search settings")
    for system, row in rows.items():
        ours = system.startswith("colbert")
        axes.scatter(row["recall_at_10_vs_exact"], row["p50_ms"], marker="*" if ours else "s", s=90, zorder=3,
                     color=colours[system], label=label(system) + (" (defaults)" if ours else ""))
    axes.set_yscale("log")
    axes.set_xlabel("recall@10 against exact MaxSim")
    axes.set_ylabel("p50 latency per query, ms (log)")
    axes.set_title("SciFact, 809 train queries, 2-core CPU")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_scale(scale: list[dict[str, Any]], path: Path) -> None:
    """Build time, peak memory while indexing and p50 latency against corpus size (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = [row["tokens"] for row in scale]
    figure, panels = plt.subplots(1, 3, figsize=(12, 4.8))
    panel_lines = {
        "build s": {"build": "build_seconds"},
        "peak RSS while indexing, MiB": {"indexing": "peak_rss_indexing_mib"},
        "p50 latency, ms": {"document cache cold": "p50_ms", "cache hot": "hot_p50_ms",
                            "fresh process, page cache dropped (open + search)": "cold_total_ms_p50",
                            "fresh process, page cache dropped, 100 searches": "cold_process_p50_ms"},
    }
    for axes, (title, lines) in zip(panels, panel_lines.items()):
        for name, key in lines.items():
            axes.plot(tokens, [row[key] for row in scale], marker="o", label=name)
        if len(lines) > 1:
            axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("token vectors (synthetic, clustered)")
        axes.set_title(title)
        axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def entry_points() -> list[tuple[str, str]]:
    """Every runnable benchmark (a ``benchmarks/*.py`` with a ``__main__`` block): its command and the first line
    of its docstring."""
    commands = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        source = path.read_text()
        if 'if __name__ == "__main__":' not in source:
            continue
        summary = (ast.get_docstring(ast.parse(source)) or "").split("\n")[0]
        if path == PLAID_RUNNER:
            command = f"{(PLAID_VENV / 'bin' / 'python').relative_to(REPO_ROOT)} {path.relative_to(REPO_ROOT)}"
        else:
            command = f"python -m benchmarks.{path.stem}"
        commands.append((command, summary))
    return commands


def _epilog() -> str:
    lines = ["entry points (each takes --help; benchmarks/README.md says what each writes and how it measures):"]
    for command, summary in entry_points():
        lines += [f"  {command}", f"      {summary}"]
    return "\n".join(lines)


@contextmanager
def _indexes_folder(folder: Path | None) -> Iterator[Path]:
    """``folder``, created and kept, or a temporary folder deleted afterwards."""
    if folder is not None:
        folder.mkdir(parents=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="colbert-store-run-") as temporary:
        yield Path(temporary)


def main(argv: list[str] | None = None) -> None:
    systems = list(system_runners())
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_scifact_arguments(parser)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="output folder (default benchmarks/results)")
    parser.add_argument("--systems", nargs="+", choices=systems, default=systems, metavar="SYSTEM",
                        help=f"systems to measure (default: all): {', '.join(systems)}")
    parser.add_argument("--queries", type=int, default=None, help="evaluate only the first N queries")
    parser.add_argument("--slow-queries", type=int, default=100, help="queries for the slow native systems")
    parser.add_argument("--keep-indexes", type=Path, default=None, metavar="DIR",
                        help="keep the paired run's indexes in this new folder, one subfolder per system (for head_to_head)")
    parser.add_argument("--scale-tokens", type=int, nargs="*", default=list(SCALE_TOKENS), help="scale curve sizes (none: skip)")
    args = parser.parse_args(argv)

    load_scifact_vectors(args.cache, data_dir=args.data)  # encodes the corpus once if the cache is missing
    exact_path = args.cache / "exact_rankings.json"  # next to the vectors it was computed from
    selected = ["exact", *[s for s in args.systems if s != "exact"]]
    paired = None
    with _indexes_folder(args.keep_indexes) as kept:
        keep = {system: kept / system for system in (*HEAD_TO_HEAD, EDGE) if system in selected}
        rows = {system: run_system(system, args, exact_path, keep.get(system)) for system in selected}
        if all(system in keep for system in HEAD_TO_HEAD):
            print("== paired latency: PLAID, colbert-store and exact taking turns", flush=True)
            plaid_index, ours_index = (keep[system] for system in HEAD_TO_HEAD)
            exact = json.loads(exact_path.read_text())["rankings"]
            paired = run_head_to_head(plaid_index, ours_index, args.cache, n_queries=args.queries, exact=exact,
                                      edge_index=keep.get(EDGE))
    scale = run_scale(args) if args.scale_tokens else []

    checks = target_checks(rows, paired)
    saved_rows = {system: without_per_query(row) for system, row in rows.items()}
    results = {"rows": saved_rows, "paired": paired, "scale": scale, "checks": checks, "cpu_count": os.cpu_count()}
    (args.results / "run_scifact.json").write_text(json.dumps(results, indent=2))
    table = markdown(rows, scale, paired)
    (args.results / "run_scifact.md").write_text(table + "\n")
    plot_latency_recall(rows, args.results / "latency_recall.png")
    if scale:
        plot_scale(scale, args.results / "scale.png")
    print(table)


if __name__ == "__main__":
    main()
