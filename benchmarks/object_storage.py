"""What object storage costs a search: LanceDB on a loopback S3 server at several consistency intervals.

    python -m benchmarks.object_storage --docs 3000 --queries 200

Builds one index of synthetic clustered documents in a local folder and the same on S3 (moto's
server on 127.0.0.1, which the benchmark starts), then opens a searcher per setting: the folder, and
S3 with ``read_consistency_interval`` 0 (the default: every read checks for a newer version), 1 s,
10 s and never. Each searcher warms its cache and times single queries, unfiltered and with a
metadata filter (which LanceDB evaluates, so it always reads the table). Then a second connection
deletes the top hit of a query and the searcher repeats that query until the hit is gone: how late
the searcher saw the write. A loopback server answers in well under a millisecond; a real bucket
adds its round trip (typically 10-30 ms in the same region) to every request counted here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

import colbert_store as cs
from benchmarks.lib.paths import RESULTS_DIR
from benchmarks.lib.report import markdown_table, save_results
from benchmarks.lib.timing import latency_summary, time_each, use_search_threads
from colbert_store.adapters.lancedb import LanceDBStore
from tests import s3

DIM = 128
NAME = "bench"
INTERVALS: dict[str, timedelta | None] = {"0": timedelta(0), "1 s": timedelta(seconds=1), "10 s": timedelta(seconds=10),
                                          "never": None}


def synthetic_corpus(docs: int, seed: int = 0) -> list[np.ndarray]:
    """Documents of 40-200 unit tokens around 256 topic directions."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((256, DIM)).astype(np.float32)
    corpus = []
    for _ in range(docs):
        chosen = topics[rng.choice(len(topics), size=3)]
        tokens = chosen[rng.integers(3, size=int(rng.integers(40, 200)))]
        tokens = tokens + 0.6 * rng.standard_normal(tokens.shape).astype(np.float32)
        corpus.append(tokens / np.linalg.norm(tokens, axis=1, keepdims=True))
    return corpus


def build(store: LanceDBStore, corpus: list[np.ndarray]) -> None:
    index = cs.Index.create(store, NAME, dim=DIM, nbits=2)
    ids = [f"d{i}" for i in range(len(corpus))]
    index.add(ids, corpus, metadata=[{"shard": i % 4} for i in range(len(corpus))])


def measure(open_store: Any, interval: timedelta | None, queries: list[np.ndarray]) -> dict[str, Any]:
    """Warm a searcher at ``interval``; time its searches; then how long until it sees another connection's delete."""
    store = open_store(read_consistency_interval=interval)
    index = cs.Index.open(store, NAME)
    index.warm()
    _, plain = time_each(lambda query: index.search(query, k=10), queries, warmup=20)
    _, filtered = time_each(lambda query: index.search(query, k=10, filter={"shard": 1}), queries, warmup=0)
    probe = queries[0]
    victim = index.search(probe, k=1)[0].id
    writer = open_store(read_consistency_interval=timedelta(0))
    cs.Index.open(writer, NAME).delete([victim])
    returned = time.perf_counter()
    while victim in {hit.id for hit in index.search(probe, k=10)}:
        time.sleep(0.01)
        if time.perf_counter() - returned > 30:
            break
    seen_after = time.perf_counter() - returned
    writer.close()
    store.close()
    return {"plain": latency_summary(plain), "filtered": latency_summary(filtered), "write_seen_after_s": seen_after}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "object_storage.json")
    args = parser.parse_args(argv)
    use_search_threads()
    corpus = synthetic_corpus(args.docs)
    rng = np.random.default_rng(1)
    queries = [corpus[int(i)][rng.choice(len(corpus[int(i)]), size=32)] for i in rng.integers(len(corpus), size=args.queries)]
    folder = Path(tempfile.mkdtemp(prefix="object-storage-"))
    server, os.environ[s3.ENDPOINT_VARIABLE] = s3.start_server()
    results: dict[str, Any] = {"settings": {"docs": args.docs, "tokens": sum(map(len, corpus)), "queries": args.queries}}
    try:
        bucket = s3.bucket_for(folder)

        def on_s3(**options: Any) -> LanceDBStore:
            return LanceDBStore(f"s3://{bucket}/db", storage_options=s3.storage_options(), **options)

        def in_folder(**options: Any) -> LanceDBStore:
            return LanceDBStore(folder / "db", **options)

        for opener in (in_folder, on_s3):
            started = time.perf_counter()
            build(opener(), corpus)
            results[f"build_s_{opener.__name__}"] = time.perf_counter() - started
        results["folder, interval 0"] = measure(in_folder, timedelta(0), queries)
        for label, interval in INTERVALS.items():
            results[f"S3, interval {label}"] = measure(on_s3, interval, queries)
            print(label, results[f"S3, interval {label}"], flush=True)
    finally:
        server.kill()
        shutil.rmtree(folder, ignore_errors=True)
    save_results(args.out, results, table(results))


def table(results: dict[str, Any]) -> str:
    columns = ["searcher", "p50 ms", "p95 ms", "p50 ms with a filter", "p95 ms with a filter",
               "another connection's delete seen after s"]
    rows = [[label, f"{row['plain']['p50_ms']:.1f}", f"{row['plain']['p95_ms']:.1f}", f"{row['filtered']['p50_ms']:.1f}",
             f"{row['filtered']['p95_ms']:.1f}", f"{row['write_seen_after_s']:.2f}"]
            for label, row in results.items() if isinstance(row, dict) and "plain" in row]
    return markdown_table(columns, rows)


if __name__ == "__main__":
    main()
