"""Scale curve on synthetic clustered token vectors: build time, peak memory, size on disk and latency per corpus size.

    python -m benchmarks.scale_synthetic --tokens 100000 1000000 10000000

Each size is indexed (dim 128, nbits 2, LanceDB) in its own fresh subprocess (``--child``), so the memory it reports
belongs to that size alone. The corpus streams: documents come in chunks from a seeded RNG and are added chunk by chunk,
so nothing holds all the vectors. The codec is trained first on the corpus's leading documents (at most the index's
``sample_tokens`` plus held-out tokens), with the centroid count the first ``add`` of the whole corpus would pick; every
``add`` then reuses it. Build time counts create + train + add (not generating the vectors); the folder is then compacted
(old versions deleted) before its size is measured. Peak RSS (VmHWM, what ``ru_maxrss`` reports) is read per phase and
reset in between: training (with its sample), the adds, then compaction + searches + size. Latency ("warm": the folder
read into the OS page cache first, as on a machine that has served it for a while): single queries of 32 tokens drawn
from a random document's topics, ``--queries`` timed after ``--warmup`` untimed ones, k=10, default search knobs; then
the same queries again, every finalist now in the document cache ("hot"). Cold start: ``--cold-runs``
fresh processes (``--cold-child``), each after the index folder has been dropped from the OS page cache, open the index
and answer one of those queries; their open and first-search times are timed from the store's construction (interpreter
start and ``import colbert_store`` left out; lancedb, which the first ``LanceDBStore`` imports, counted in the open).
One more fresh process (``--cold-process-child``), after the same drop, answers all of them in turn from its first,
with no ``warm()``: the latencies of a process started into traffic.
Results go to benchmarks/results/scale_synthetic.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

import colbert_store as cs
from benchmarks.lib.data import evict_page_cache, folder_bytes, load_page_cache
from benchmarks.lib.paths import REPO_ROOT, RESULTS_DIR
from benchmarks.lib.report import markdown_table, save_results
from benchmarks.lib.timing import latency_summary, time_searches, use_search_threads
from colbert_store.adapters.lancedb import LanceDBStore
from colbert_store.codec import default_centroid_count
from colbert_store.fitting import HOLDOUT_TOKENS

NAME = "scale"
DIM = 128
NBITS = 2
K = 10
QUERY_TOKENS = 32
COLD_QUERIES = "cold_queries.npy"
TRAIN_TOKENS = cs.IndexSettings(dim=DIM).sample_tokens + HOLDOUT_TOKENS  # what train() uses: k-means sample + held out


@dataclass(frozen=True)
class Chunk:
    """Consecutive documents: ids, unit-norm token matrices, and each one's topics (``topics[i, :n_topics[i]]``)."""

    ids: list[str]
    embeddings: list[np.ndarray]
    topics: np.ndarray
    n_topics: np.ndarray


@dataclass(frozen=True)
class SyntheticCorpus:
    """Clustered token vectors totalling exactly ``n_tokens``: ``n_topic_directions`` random unit directions drawn with
    Zipf-like popularity; each document mixes 2-5 topics over 50-400 tokens, each token its topic plus gaussian noise
    (cosine to the topic about 0.7), renormalised. Chunk ``i`` comes from its own RNG, so any chunk is reproducible."""

    n_tokens: int
    seed: int = 0
    dim: int = DIM
    n_topic_directions: int = 4096
    noise: float = 0.09
    zipf: float = 0.8
    lengths: tuple[int, int] = (50, 400)
    max_topics: int = 5

    @cached_property
    def directions(self) -> np.ndarray:
        """The topic directions, ``(n_topic_directions, dim)`` unit rows."""
        rng = np.random.default_rng([self.seed, 0])
        return _unit(rng.standard_normal((self.n_topic_directions, self.dim), dtype=np.float32))

    @cached_property
    def popularity(self) -> np.ndarray:
        """Each topic's probability, falling as ``rank ** -zipf``."""
        weights = np.arange(1, self.n_topic_directions + 1) ** -self.zipf
        return weights / weights.sum()

    def chunks(self, chunk_docs: int) -> Iterator[Chunk]:
        """The documents, ``chunk_docs`` at a time; the last document is cut so the total is ``n_tokens``.

        A chunk is drawn whole before it is cut, so a smaller ``n_tokens`` gives a prefix of the same documents.
        """
        produced, first = 0, 0
        while produced < self.n_tokens:
            rng = np.random.default_rng([self.seed, 1, first])
            lengths = rng.integers(self.lengths[0], self.lengths[1] + 1, chunk_docs)
            topics = rng.choice(self.n_topic_directions, size=(chunk_docs, self.max_topics), p=self.popularity)
            n_topics = rng.integers(2, self.max_topics + 1, chunk_docs)
            owner = np.repeat(np.arange(chunk_docs), lengths)
            vectors = self.tokens(rng, topics[owner, rng.integers(0, n_topics[owner])])
            offsets = np.minimum(np.concatenate([[0], np.cumsum(lengths)]), self.n_tokens - produced)
            n_docs = min(chunk_docs, int(np.searchsorted(offsets, offsets[-1])))
            yield Chunk(
                ids=[f"d{first + i}" for i in range(n_docs)],
                embeddings=[vectors[offsets[i] : offsets[i + 1]] for i in range(n_docs)],
                topics=topics[:n_docs],
                n_topics=n_topics[:n_docs],
            )
            produced, first = produced + int(offsets[n_docs]), first + n_docs

    def tokens(self, rng: np.random.Generator, topic_ids: np.ndarray) -> np.ndarray:
        """One unit vector per topic id: its direction plus noise."""
        noise = rng.standard_normal((len(topic_ids), self.dim), dtype=np.float32)
        noise *= self.noise
        noise += self.directions[topic_ids]
        return _unit(noise)

    def query(self, rng: np.random.Generator, topics: np.ndarray) -> np.ndarray:
        """``QUERY_TOKENS`` tokens drawn from ``topics`` (a document's), like its own tokens."""
        return self.tokens(rng, topics[rng.integers(0, len(topics), QUERY_TOKENS)])


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _status_mib(field: str) -> float:
    """A memory line of ``/proc/self/status`` (kB) in MiB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def restart_peak() -> float:
    """This process's RSS high-water mark so far (VmHWM, what ``ru_maxrss`` reports), then reset it to the current RSS."""
    peak = _status_mib("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")
    return peak


def measure(n_tokens: int, workdir: Path, chunk_docs: int, n_queries: int, warmup: int, seed: int) -> dict[str, Any]:
    """Build the index of ``n_tokens`` synthetic tokens in ``workdir`` and measure it (run in a fresh process).

    Peak RSS is reset between phases, so the adds' own peak shows even when training's is higher.
    """
    threads = use_search_threads()
    corpus = SyntheticCorpus(n_tokens, seed=seed)
    store = LanceDBStore(workdir)
    peak_startup = restart_peak()

    sample = [m for chunk in replace(corpus, n_tokens=min(n_tokens, TRAIN_TOKENS)).chunks(chunk_docs) for m in chunk.embeddings]
    start = time.perf_counter()
    n_centroids = default_centroid_count(n_tokens, cs.IndexSettings(dim=DIM).sample_tokens)
    index = cs.Index.create(store, NAME, dim=DIM, nbits=NBITS, n_centroids=n_centroids)
    index.train(sample)
    train_seconds = time.perf_counter() - start
    del sample
    peak_train = restart_peak()

    add_seconds, topics, n_topics = 0.0, [], []
    for chunk in corpus.chunks(chunk_docs):
        start = time.perf_counter()
        index.add(chunk.ids, chunk.embeddings)
        add_seconds += time.perf_counter() - start
        topics.append(chunk.topics)
        n_topics.append(chunk.n_topics)
        print(f"  {n_tokens}: {chunk.ids[-1]} added, {add_seconds:.0f} s, RSS {_status_mib('VmRSS'):.0f} MiB", file=sys.stderr)
    rss_added = _status_mib("VmRSS")
    peak_adds = restart_peak()

    start = time.perf_counter()
    store.optimize(NAME, cleanup_older_than=timedelta(0))
    optimize_seconds = time.perf_counter() - start
    rng = np.random.default_rng([seed, 2])
    all_topics, all_n_topics = np.concatenate(topics), np.concatenate(n_topics)
    sources = rng.choice(len(all_topics), size=warmup + n_queries, replace=False)
    queries = [corpus.query(rng, all_topics[d, : all_n_topics[d]]) for d in sources]
    load_page_cache(workdir)
    for query in queries[:warmup]:
        index.search(query, k=K)
    rankings, seconds = time_searches(index, queries[warmup:], K, warmup=0)
    source_at_k = np.mean([f"d{d}" in ranking for d, ranking in zip(sources[warmup:], rankings)])
    _, hot_seconds = time_searches(index, queries[warmup:], K, warmup=0)
    hot = latency_summary(hot_seconds)
    folder, codes = folder_bytes(workdir), store.size_bytes(NAME)
    store.close()
    np.save(workdir / COLD_QUERIES, np.stack(queries[warmup:]))  # for the fresh-process runs

    build_seconds = train_seconds + add_seconds
    return {
        "tokens": n_tokens,
        "docs": len(all_topics),
        "centroids": n_centroids,
        "build_seconds": build_seconds,
        "train_seconds": train_seconds,
        "add_seconds": add_seconds,
        "tokens_per_second": n_tokens / build_seconds,
        "optimize_seconds": optimize_seconds,
        "peak_rss_startup_mib": peak_startup,
        "peak_rss_train_mib": peak_train,
        "peak_rss_adds_mib": peak_adds,
        "peak_rss_indexing_mib": max(peak_train, peak_adds),
        "rss_after_adds_mib": rss_added,
        "peak_rss_search_mib": restart_peak(),
        "folder_bytes_per_token": folder / n_tokens,
        "codes_bytes_per_token": codes / n_tokens,
        **latency_summary(seconds),
        "hot_p50_ms": hot["p50_ms"],
        "hot_p95_ms": hot["p95_ms"],
        "source_doc_at_10": float(source_at_k),
        "torch_threads": threads,
    }


def measure_reused(n_tokens: int, workdir: Path, chunk_docs: int, n_queries: int, warmup: int, seed: int) -> dict[str, Any]:
    """Search measurements of an index kept by an earlier run (``--keep``) with the same sizes and seed, in a fresh
    process: the folder dropped from the page cache, ``index.warm()`` (timed), ``warmup`` untimed queries and
    ``n_queries`` timed ones drawn from the first chunk's documents (what a warm process answers while the disk is
    still cold); then the folder read into the page cache and the kept queries timed twice, as :func:`measure` times
    them. Build figures are not re-measured."""
    threads = use_search_threads()
    corpus = SyntheticCorpus(n_tokens, seed=seed)
    evict_page_cache(workdir)
    store = LanceDBStore(workdir)
    index = cs.Index.open(store, NAME)
    start = time.perf_counter()
    index.warm()
    warm_seconds = time.perf_counter() - start
    rng = np.random.default_rng([seed, 2])
    sources = rng.choice(len(index), size=warmup + n_queries, replace=False)[warmup:]  # as measure() drew them
    first = next(corpus.chunks(chunk_docs))
    first_queries = [corpus.query(rng, first.topics[d, : first.n_topics[d]]) for d in range(warmup + n_queries)]
    for query in first_queries[:warmup]:
        index.search(query, k=K)
    _, disk_seconds = time_searches(index, first_queries[warmup:], K, warmup=0)
    load_page_cache(workdir)
    queries = list(np.load(workdir / COLD_QUERIES, allow_pickle=False))
    rankings, seconds = time_searches(index, queries, K, warmup=0)
    _, hot_seconds = time_searches(index, queries, K, warmup=0)
    hot, disk_cold = latency_summary(hot_seconds), latency_summary(disk_seconds)
    return {
        "tokens": n_tokens,
        "docs": len(index),
        "reused": True,
        "warm_seconds": warm_seconds,
        "peak_rss_search_mib": _status_mib("VmHWM"),
        "folder_bytes_per_token": (folder_bytes(workdir) - (workdir / COLD_QUERIES).stat().st_size) / n_tokens,
        **latency_summary(seconds),
        "hot_p50_ms": hot["p50_ms"],
        "hot_p95_ms": hot["p95_ms"],
        "disk_cold_p50_ms": disk_cold["p50_ms"],
        "disk_cold_p95_ms": disk_cold["p95_ms"],
        "source_doc_at_10": float(np.mean([f"d{d}" in ranking for d, ranking in zip(sources, rankings)])),
        "torch_threads": threads,
    }


def measure_cold(workdir: Path, query: int) -> dict[str, float]:
    """Open the index in ``workdir`` (page cache dropped first) and answer query ``query`` of the saved ones."""
    use_search_threads()
    queries = np.load(workdir / COLD_QUERIES, allow_pickle=False)
    evict_page_cache(workdir)
    start = time.perf_counter()
    index = cs.Index.open(LanceDBStore(workdir), NAME)
    opened = time.perf_counter()
    index.search(queries[query % len(queries)], k=K)
    searched = time.perf_counter()
    return {"open_ms": (opened - start) * 1000, "first_search_ms": (searched - opened) * 1000,
            "total_ms": (searched - start) * 1000}


def measure_cold_process(workdir: Path) -> dict[str, float]:
    """Open the index in ``workdir`` (page cache dropped first) and answer every saved query in turn, timing each."""
    use_search_threads()
    queries = list(np.load(workdir / COLD_QUERIES, allow_pickle=False))
    evict_page_cache(workdir)
    index = cs.Index.open(LanceDBStore(workdir), NAME)
    _, seconds = time_searches(index, queries, K, warmup=0)
    summary = latency_summary(seconds)
    return {"cold_process_p50_ms": summary["p50_ms"], "cold_process_p95_ms": summary["p95_ms"],
            "cold_process_max_ms": max(seconds) * 1000, "cold_process_total_s": sum(seconds)}


def cold_summary(runs: list[dict[str, float]]) -> dict[str, float]:
    """Medians and maxima over the fresh-process runs."""
    return {f"cold_{key}_{stat}": float(fn([run[key] for run in runs]))
            for key in ("open_ms", "first_search_ms", "total_ms") for stat, fn in (("p50", np.median), ("max", np.max))}


def _child(*options: str) -> str:
    """The last line a fresh ``python -m benchmarks.scale_synthetic`` process with ``options`` printed."""
    command = [sys.executable, "-m", "benchmarks.scale_synthetic", *options]
    done = subprocess.run(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def scale_rows(
    sizes: list[int],
    *,
    chunk_docs: int = 1000,
    n_queries: int = 100,
    warmup: int = 20,
    seed: int = 0,
    tmpdir: str | None = None,
    keep: bool = False,
    cold_runs: int = 10,
) -> list[dict[str, Any]]:
    """One measured row per corpus size, each built in a fresh ``python -m benchmarks.scale_synthetic --child`` process."""
    rows = []
    for n_tokens in sizes:
        workdir = Path(tempfile.mkdtemp(prefix=f"colbert-store-scale-{n_tokens}-", dir=tmpdir))
        try:
            row = json.loads(_child(
                "--child", "--tokens", str(n_tokens), "--workdir", str(workdir), "--chunk-docs", str(chunk_docs),
                "--queries", str(n_queries), "--warmup", str(warmup), "--seed", str(seed),
            ))
            cold = [json.loads(_child("--cold-child", "--workdir", str(workdir), "--query", str(run)))
                    for run in range(cold_runs)]
            process = json.loads(_child("--cold-process-child", "--workdir", str(workdir)))
            rows.append({**row, **cold_summary(cold), "cold_runs": cold_runs, **process})
            print(json.dumps(rows[-1]), file=sys.stderr)
        finally:
            if keep:
                print(f"kept {workdir}", file=sys.stderr)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    return rows


def scale_table(rows: list[dict[str, Any]]) -> str:
    """One row per corpus size, as a markdown table."""
    columns = ["tokens", "docs", "centroids", "build s", "tokens/s", "peak RSS MiB indexing", "training", "adds",
               "folder B/token", "codes B/token", "p50 ms", "p95 ms", "hot p50 ms", "fresh-process open + first search ms",
               "fresh process p50 ms", "source doc in top 10"]
    return markdown_table(columns, [
        [f"{row['tokens']:,}", f"{row['docs']:,}", f"{row['centroids']:,}", f"{row['build_seconds']:.1f}",
         f"{row['tokens_per_second']:,.0f}", f"{row['peak_rss_indexing_mib']:.0f}", f"{row['peak_rss_train_mib']:.0f}",
         f"{row['peak_rss_adds_mib']:.0f}", f"{row['folder_bytes_per_token']:.1f}", f"{row['codes_bytes_per_token']:.1f}",
         f"{row['p50_ms']:.1f}", f"{row['p95_ms']:.1f}", f"{row['hot_p50_ms']:.1f}",
         f"{row['cold_open_ms_p50']:.0f} + {row['cold_first_search_ms_p50']:.0f}", f"{row['cold_process_p50_ms']:.1f}",
         f"{row['source_doc_at_10']:.2f}"]
        for row in rows
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--chunk-docs", type=int, default=1000, help="documents generated and added at a time")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmpdir", default=None, help="where the index folders go (default: the system temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the index folders")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "scale_synthetic.json")
    parser.add_argument("--cold-runs", type=int, default=10, help="fresh processes timed opening the index cold")
    parser.add_argument("--reuse", type=Path, default=None, metavar="FOLDER",
                        help="measure only the searches of a folder kept (--keep) by a run of this --tokens size and seed")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cold-process-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--query", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        measured = measure_reused if args.reuse else measure
        row = measured(args.tokens[0], Path(args.workdir), args.chunk_docs, args.queries, args.warmup, args.seed)
        print(json.dumps(row))
        return
    if args.cold_child:
        print(json.dumps(measure_cold(Path(args.workdir), args.query)))
        return
    if args.cold_process_child:
        print(json.dumps(measure_cold_process(Path(args.workdir))))
        return
    if args.reuse:
        folder = str(args.reuse)
        row = json.loads(_child("--child", "--tokens", str(args.tokens[0]), "--workdir", folder, "--chunk-docs",
                                str(args.chunk_docs), "--queries", str(args.queries), "--warmup", str(args.warmup),
                                "--seed", str(args.seed), "--reuse", folder))
        cold = [json.loads(_child("--cold-child", "--workdir", folder, "--query", str(run))) for run in range(args.cold_runs)]
        process = json.loads(_child("--cold-process-child", "--workdir", folder))
        print(json.dumps({**row, **cold_summary(cold), "cold_runs": args.cold_runs, **process}))
        return
    rows = scale_rows(
        args.tokens, chunk_docs=args.chunk_docs, n_queries=args.queries, warmup=args.warmup, seed=args.seed,
        tmpdir=args.tmpdir, keep=args.keep, cold_runs=args.cold_runs,
    )
    results = {
        "dim": DIM, "nbits": NBITS, "store": "lancedb", "k": K, "query_tokens": QUERY_TOKENS,
        "chunk_docs": args.chunk_docs, "rows": rows,
    }
    save_results(args.out, results, scale_table(rows))


if __name__ == "__main__":
    main()
