"""Paired latency of PLAID, colbert-store and exact MaxSim: the same queries in turn, each system in its own process.

    python -m benchmarks.head_to_head --plaid-index DIR --colbert-store-index DIR [--edge-index DIR] [--cache DIR] [--exact FILE]

A machine's speed drifts over tens of seconds, so p50s measured minutes apart, one system after the
other, can differ by as much as the systems do. Here the processes hold their index warm and take
turns: each block of queries goes to every system in turn (who goes first rotates), while the others
wait on their pipes. Drift then reaches all alike, and each query's time ratio is a paired
measurement. Exhaustive exact MaxSim, far slower, times one query in ``--exact-stride`` of each block,
so that its turns last about as long as the others' (a system idle through long turns of another
searches more slowly afterwards). ``benchmarks.run`` runs this on the indexes its systems built.

The colbert-store workers (LanceDB, and Qdrant Edge when given) open their folder and warm their
document cache, as a service would at start-up; PLAID's loads its whole index (``plaid_runner.py
--serve``); exact's holds every token vector in memory (``benchmarks.systems``' exact system). Each
runs ``WARMUP`` untimed queries first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TextIO

import numpy as np

import colbert_store as cs
from benchmarks.block_server import claim_stdout, serve
from benchmarks.lib.data import SCIFACT_INDEX, open_store
from benchmarks.lib.exhaustive import ExhaustiveMaxSim
from benchmarks.lib.metrics import overlap_at_k
from benchmarks.lib.paths import DEFAULT_CACHE_DIR, REPO_ROOT
from benchmarks.lib.plaid import serve_command
from benchmarks.lib.report import markdown_table
from benchmarks.lib.scifact import ScifactVectors, load_scifact_vectors
from benchmarks.lib.timing import BATCH_SIZE, WARMUP, latency_summary, use_search_threads

EDGE_WORKER = "colbert-store on Qdrant Edge"


def run_head_to_head(
    plaid_index: Path,
    colbert_store_index: Path,
    cache: Path,
    *,
    n_queries: int | None = None,
    block: int = 50,
    block_warmup: int = 5,
    passes: int = 4,
    exact_stride: int = 10,
    k: int = 10,
    exact: list[list[str]] | None = None,
    edge_index: Path | None = None,
    padded: bool = False,
) -> dict[str, Any]:
    """Time every query ``passes`` times on PLAID and colbert-store, in blocks of ``block`` queries
    that go to each system in turn; exhaustive exact MaxSim takes every ``exact_stride``-th query of
    each block (a different one each pass), so that its turns take about as long as the others'.
    ``exact_stride=0`` leaves exact out. ``edge_index``: a Qdrant Edge folder holding the same index,
    timed as one more system. ``padded``: every system gets the queries padded with ``[MASK]`` to 32 tokens.

    Returns per system its latency summary over all its timed searches and, given the ``exact``
    rankings, recall@k against them (first pass); ``paired``: the median over queries of
    colbert-store's time over PLAID's (each averaged over passes), the share of queries
    colbert-store answers faster, and that median ratio in each pass (its spread shows how far one
    pass can be trusted), and the same for colbert-store on Qdrant Edge under ``paired_edge``; and,
    when exact ran, ``paired_exact``: over the searches exact timed,
    exact's p50 over colbert-store's p50 on the same queries in the same passes, and the median of
    their per-search time ratios.
    """
    positions = list(range(n_queries if n_queries is not None else _query_count(cache)))
    if exact is not None and len(exact) < len(positions):
        raise ValueError(f"the exact rankings cover {len(exact)} queries, not all {len(positions)}")
    ours = [sys.executable, "-m", "benchmarks.head_to_head", "--cache", str(cache), "--k", str(k)]
    ours += ["--padded"] if padded else []
    commands = {
        "plaid": serve_command(plaid_index, cache, k=k, warmup=WARMUP, padded=padded),
        "colbert-store": [*ours, "--serve", str(colbert_store_index)],
    }
    if edge_index is not None:
        commands[EDGE_WORKER] = [*ours, "--serve", str(edge_index), "--serve-store", "qdrant-edge"]
    strides = dict.fromkeys(commands, 1)
    if exact_stride > 0:
        commands["exact"] = [*ours, "--serve-exact"]
        strides["exact"] = exact_stride
    workers = {name: subprocess.Popen(command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for name, command in commands.items()}
    try:
        for name, worker in workers.items():
            _receive(worker.stdout, name)  # ready: index open and warm
        seconds = {name: np.full((passes, len(positions)), np.nan) for name in workers}
        rankings: dict[str, list[list[str]]] = {name: [] for name in workers}
        turn = 0
        for pass_ in range(passes):
            for start in range(0, len(positions), block):
                # Untimed first: queries just before the block (not its own), so each system's caches
                # recover from the others' turns, whose memory traffic would land on its first searches.
                warmup = [positions[i] for i in range(start - block_warmup, start)]
                first = turn % len(workers)  # who goes first rotates
                turn += 1
                for name in list(workers)[first:] + list(workers)[:first]:
                    stride = strides[name]
                    picked = np.arange(start + pass_ % stride, min(start + block, len(positions)), stride)
                    answer = _ask(workers[name], picked.tolist(), warmup[len(warmup) - len(warmup) // stride :], name)
                    seconds[name][pass_, picked] = answer["seconds"]
                    if pass_ == 0 and stride == 1:
                        rankings[name] += answer["rankings"]
        batch_seconds = _time_batches(workers, positions, passes)
    finally:
        for worker in workers.values():
            worker.stdin.close()  # type: ignore[union-attr]
            worker.wait()
    ours_s = seconds["colbert-store"]
    systems: dict[str, dict[str, Any]] = {name: latency_summary(s[~np.isnan(s)]) for name, s in seconds.items()}
    if exact is not None:
        for name in systems.keys() - {"exact"}:
            recall = np.mean([overlap_at_k(r, e, k) for r, e in zip(rankings[name], exact)])
            systems[name]["recall_at_10_vs_exact"] = float(recall)
    for name, total in batch_seconds.items():
        systems[name]["qps_batch"] = len(positions) / total
    result: dict[str, Any] = {
        "systems": systems,
        "paired": _against_plaid(ours_s, seconds["plaid"]),
        "n_queries": len(positions),
        "passes": passes,
        "block": block,
    }
    if EDGE_WORKER in seconds:
        result["paired_edge"] = _against_plaid(seconds[EDGE_WORKER], seconds["plaid"])
        same = [r == e for r, e in zip(rankings[EDGE_WORKER], rankings["colbert-store"])]
        result["paired_edge"]["same_top_k_as_lancedb"] = float(np.mean(same))
    if "exact" in seconds:
        timed = ~np.isnan(seconds["exact"])
        exact_s, ours_same = seconds["exact"][timed], ours_s[timed]
        result["paired_exact"] = {
            "searches": int(timed.sum()),
            "p50_ratio": float(np.median(exact_s) / np.median(ours_same)),
            "median_speedup": float(np.median(exact_s / ours_same)),
            "colbert_store_p50_ms": latency_summary(ours_same)["p50_ms"],
        }
    return result


def _time_batches(workers: dict[str, subprocess.Popen[str]], positions: list[int], rounds: int) -> dict[str, float]:
    """Median seconds each worker but exact takes to answer every query in batches of :data:`BATCH_SIZE` with
    its batch search (colbert-store's ``search_batch``; PLAID's ``search_all`` loop), in ``rounds`` turns."""
    names = [name for name in workers if name != "exact"]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            worker = workers[name]
            worker.stdin.write(json.dumps({"batches": BATCH_SIZE, "queries": positions}) + "\n")  # type: ignore[union-attr]
            worker.stdin.flush()  # type: ignore[union-attr]
            seconds[name].append(_receive(worker.stdout, name)["seconds"])
    return {name: float(np.median(values)) for name, values in seconds.items()}


def _against_plaid(ours: np.ndarray, plaid: np.ndarray) -> dict[str, Any]:
    """Paired ratios of a colbert-store worker's times (passes x queries) over PLAID's."""
    ratio = ours.mean(axis=0) / plaid.mean(axis=0)
    return {
        "median_time_ratio": float(np.median(ratio)),
        "share_colbert_store_faster": float((ratio < 1).mean()),
        "median_time_ratio_by_pass": np.median(ours / plaid, axis=1).tolist(),
    }


def _query_count(cache: Path) -> int:
    return len(np.load(cache / "query_offsets.npy")) - 1


def _ask(worker: subprocess.Popen[str], positions: list[int], warmup: list[int], name: str) -> dict[str, Any]:
    worker.stdin.write(json.dumps({"queries": positions, "warmup": warmup}) + "\n")  # type: ignore[union-attr]
    worker.stdin.flush()  # type: ignore[union-attr]
    return _receive(worker.stdout, name)


def _receive(stream: IO[str] | None, name: str) -> dict[str, Any]:
    line = stream.readline() if stream else ""
    if not line:
        raise RuntimeError(f"the {name} worker stopped (see its error output above)")
    return json.loads(line)


def _serve_colbert_store(folder: Path, store_kind: str, cache: Path, k: int, padded: bool) -> None:
    """A colbert-store worker: open the index on its store, warm it, run untimed queries, then answer blocks."""
    channel = claim_stdout()
    _, queries = _worker_data(cache, padded)
    index = cs.Index.open(open_store(store_kind, folder), SCIFACT_INDEX)
    index.warm()
    for position in range(min(WARMUP, len(queries))):
        index.search(queries[position], k=k)
    serve(
        lambda position: [hit.id for hit in index.search(queries[position], k=k)],
        channel,
        lambda positions: index.search_batch([queries[position] for position in positions], k=k),
    )


def _serve_exact(cache: Path, k: int, padded: bool) -> None:
    """The exhaustive exact MaxSim worker (``benchmarks.systems``' exact system): vectors in memory."""
    channel = claim_stdout()
    vectors, queries = _worker_data(cache, padded)
    exhaustive = ExhaustiveMaxSim(vectors.doc_ids, vectors.doc_vectors, vectors.doc_offsets)
    _warm_up_and_serve(lambda position: [doc_id for doc_id, _ in exhaustive.search(queries[position], k)], len(queries), channel)


def _worker_data(cache: Path, padded: bool) -> tuple[ScifactVectors, list[np.ndarray]]:
    """The cached vectors and queries (padded or not), after setting the threads single queries are measured with."""
    use_search_threads()
    vectors = load_scifact_vectors(cache, query_expansion=padded)
    return vectors, vectors.queries()


def _warm_up_and_serve(search: Callable[[int], list[str]], n_queries: int, channel: TextIO) -> None:
    for position in range(min(WARMUP, n_queries)):
        search(position)
    serve(search, channel)


def paired_table(result: dict[str, Any]) -> str:
    """The head-to-head as a markdown table with its paired ratios."""
    rows = [
        [name, f"{row['p50_ms']:.1f}", f"{row['p95_ms']:.1f}",
         f"{row['recall_at_10_vs_exact']:.3f}" if "recall_at_10_vs_exact" in row else "–",
         f"{row['qps_batch']:.1f}" if "qps_batch" in row else "–"]
        for name, row in result["systems"].items()
    ]
    paired = result["paired"]
    lines = [
        f"Paired latency, {result['n_queries']} queries x {result['passes']} passes, alternating blocks of {result['block']}:",
        "",
        markdown_table(["system", "p50 ms", "p95 ms", "recall@10 vs exact", "QPS, batches of 32"], rows),
        "",
        f"colbert-store's time over PLAID's, median over queries: {paired['median_time_ratio']:.3f}; "
        f"colbert-store faster on {paired['share_colbert_store_faster']:.0%} of queries; "
        f"the median ratio in each pass: {', '.join(f'{r:.3f}' for r in paired['median_time_ratio_by_pass'])}.",
    ]
    if "paired_edge" in result:
        edge = result["paired_edge"]
        lines.append(
            f"{EDGE_WORKER}: its time over PLAID's, median over queries: {edge['median_time_ratio']:.3f}, faster on "
            f"{edge['share_colbert_store_faster']:.0%} of queries (by pass: "
            f"{', '.join(f'{r:.3f}' for r in edge['median_time_ratio_by_pass'])}); the same top 10 as on LanceDB for "
            f"{edge['same_top_k_as_lancedb']:.1%} of queries."
        )
    if "paired_exact" in result:
        versus = result["paired_exact"]
        lines.append(
            f"Exact MaxSim, on {versus['searches']} of those searches: its p50 over colbert-store's on the same ones "
            f"{versus['p50_ratio']:.2f}x (colbert-store {versus['colbert_store_p50_ms']:.1f} ms); its time over "
            f"colbert-store's, median over searches: {versus['median_speedup']:.2f}x."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plaid-index", type=Path, help="a PLAID index folder (plaid_runner.py --index-dir)")
    parser.add_argument("--colbert-store-index", type=Path, help=f"a LanceDB folder holding index {SCIFACT_INDEX!r}")
    parser.add_argument("--edge-index", type=Path, help=f"a Qdrant Edge folder holding index {SCIFACT_INDEX!r} (optional)")
    parser.add_argument("--serve", type=Path, metavar="FOLDER", help=argparse.SUPPRESS)  # a colbert-store worker
    parser.add_argument("--serve-store", default="lancedb", help=argparse.SUPPRESS)  # its store kind
    parser.add_argument("--serve-exact", action="store_true", help=argparse.SUPPRESS)  # the exact worker
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR, help="SciFact vector cache folder (default %(default)s)")
    parser.add_argument("--exact", type=Path, default=None, help="exact rankings, to report recall (benchmarks.systems)")
    parser.add_argument("--queries", type=int, default=None, help="only the first N queries")
    parser.add_argument("--block", type=int, default=50, help="queries per turn")
    parser.add_argument("--block-warmup", type=int, default=5, help="untimed queries at the start of each turn")
    parser.add_argument("--passes", type=int, default=4, help="times each query runs on PLAID and colbert-store")
    parser.add_argument("--exact-stride", type=int, default=10, help="exact MaxSim times every N-th query of a block (0: none)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    parser.add_argument("--padded", action="store_true", help="queries padded with [MASK] to 32 tokens "
                        "(then --exact must rank those: benchmarks.systems exact --padded)")
    args = parser.parse_args(argv)

    if args.serve:
        _serve_colbert_store(args.serve, args.serve_store, args.cache, args.k, args.padded)
        return
    if args.serve_exact:
        _serve_exact(args.cache, args.k, args.padded)
        return
    if not (args.plaid_index and args.colbert_store_index):
        parser.error("--plaid-index and --colbert-store-index are required")
    exact = json.loads(args.exact.read_text())["rankings"] if args.exact else None
    result = run_head_to_head(
        args.plaid_index, args.colbert_store_index, args.cache,
        n_queries=args.queries, block=args.block, block_warmup=args.block_warmup, passes=args.passes,
        exact_stride=args.exact_stride, k=args.k, exact=exact, edge_index=args.edge_index, padded=args.padded,
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(paired_table(result))


if __name__ == "__main__":
    main()
