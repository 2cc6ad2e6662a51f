"""Soak test: minutes of mixed add / replace / delete / search (and a retrain) from threads, on each store.

    python -m benchmarks.soak --seconds 180

Two writer threads own disjoint id ranges: each step adds a batch of new documents, replaces
some of its live ones (metadata ``v`` counts the versions) or deletes some. Reader threads search
with a noisy copy of a live document's vectors and check every hit: it was not deleted before the
search began. Halfway through, the index is retrained while all of that goes on. At the end the
stored documents are compared with what the writers were told: none lost, none resurrected, every
one at its last acknowledged version. Results go to benchmarks/results/soak.json and a table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import colbert_store as cs
from benchmarks.lib.paths import RESULTS_DIR
from benchmarks.lib.report import markdown_table, save_results
from benchmarks.lib.timing import latency_summary
from colbert_store.adapters.lancedb import LanceDBStore
from colbert_store.adapters.qdrant import QdrantStore

DIM = 64
TOPICS = np.random.default_rng(0).standard_normal((64, 8, DIM)).astype(np.float32)


def document(rng: np.random.Generator) -> np.ndarray:
    """A random document: 16-63 unit token vectors around the directions of one topic."""
    topic = TOPICS[rng.integers(len(TOPICS))]
    n = int(rng.integers(16, 64))
    vectors = topic[rng.integers(0, len(topic), n)] + 0.3 * rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@dataclass
class Ledger:
    """What the writers were told: each live id's version and when each deleted id's delete returned."""

    live: dict[str, int] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    deleted_at: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Tally:
    """What the threads did: operation counts, error tracebacks and search seconds."""

    operations: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    search_seconds: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, operation: str, n: int = 1) -> None:
        with self.lock:
            self.operations[operation] += n

    def fail(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)


def writer(index: cs.Index, ledger: Ledger, tally: Tally, worker: int, stop: threading.Event) -> None:
    """Add, replace and delete documents of this worker's own ids until ``stop``, recording each in the ledger."""
    rng = np.random.default_rng(100 + worker)
    next_id = 0
    mine: list[str] = []
    while not stop.is_set():
        try:
            action = rng.choice(["add", "replace", "delete"], p=[0.4, 0.35, 0.25]) if mine else "add"
            if action == "add":
                ids = [f"w{worker}-{next_id + i}" for i in range(int(rng.integers(1, 40)))]
                next_id += len(ids)
                docs = [document(rng) for _ in ids]
                index.add(ids, docs, metadata=[{"v": 0, "w": worker}] * len(ids))
                with ledger.lock:
                    ledger.live.update(dict.fromkeys(ids, 0))
                    ledger.vectors.update(zip(ids, docs))
                mine += ids
            elif action == "replace":
                ids = list(rng.choice(mine, size=min(len(mine), int(rng.integers(1, 20))), replace=False))
                with ledger.lock:
                    versions = [ledger.live[doc_id] + 1 for doc_id in ids]
                docs = [document(rng) for _ in ids]
                index.add(ids, docs, metadata=[{"v": v, "w": worker} for v in versions])
                with ledger.lock:
                    ledger.live.update(zip(ids, versions))
                    ledger.vectors.update(zip(ids, docs))
            else:
                ids = list(rng.choice(mine, size=min(len(mine), int(rng.integers(1, 20))), replace=False))
                index.delete(ids)
                returned = time.monotonic()
                with ledger.lock:
                    for doc_id in ids:
                        del ledger.live[doc_id]
                        del ledger.vectors[doc_id]
                        ledger.deleted_at[doc_id] = returned
                gone = set(ids)
                mine = [doc_id for doc_id in mine if doc_id not in gone]
            tally.count(str(action))
        except Exception:  # noqa: BLE001 - counted and reported
            tally.fail(traceback.format_exc())


def reader(index: cs.Index, ledger: Ledger, tally: Tally, worker: int, stop: threading.Event) -> None:
    """Search near live documents until ``stop``; a hit deleted before its search began is an error."""
    rng = np.random.default_rng(200 + worker)
    while not stop.is_set():
        try:
            with ledger.lock:
                if not ledger.vectors:
                    continue
                target = list(ledger.vectors)[int(rng.integers(len(ledger.vectors)))]
                base = ledger.vectors[target]
            query = base[: min(len(base), 32)] + 0.05 * rng.standard_normal((min(len(base), 32), DIM)).astype(np.float32)
            began = time.monotonic()
            hits = index.search(query, k=10, filter={"w": {"$in": [0, 1]}} if rng.random() < 0.3 else None)
            tally.search_seconds.append(time.monotonic() - began)
            with ledger.lock:
                stale = [hit.id for hit in hits if ledger.deleted_at.get(hit.id, np.inf) < began]
            if stale:
                tally.fail(f"search returned documents deleted before it began: {stale}")
            tally.count("search")
        except Exception:  # noqa: BLE001 - counted and reported
            tally.fail(traceback.format_exc())


def soak(store: Any, seconds: float, readers: int) -> dict[str, Any]:
    """Run two writers and ``readers`` readers on a new index in ``store`` for ``seconds`` (a retrain halfway),
    then check every stored document against the ledger."""
    index = cs.Index.create(store, "soak", dim=DIM, n_centroids=256)
    ledger, tally = Ledger(), Tally()
    rng = np.random.default_rng(1)
    seed_ids = [f"seed-{i}" for i in range(2000)]
    seed_docs = [document(rng) for _ in seed_ids]
    index.add(seed_ids, seed_docs, metadata=[{"v": 0, "w": -1}] * len(seed_ids))
    ledger.live.update(dict.fromkeys(seed_ids, 0))
    ledger.vectors.update(zip(seed_ids, seed_docs))

    stop = threading.Event()
    threads = [threading.Thread(target=writer, args=(index, ledger, tally, w, stop)) for w in range(2)]
    threads += [threading.Thread(target=reader, args=(index, ledger, tally, r, stop)) for r in range(readers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(seconds / 2)
    try:
        index.retrain()
        tally.count("retrain")
    except Exception:  # noqa: BLE001 - counted and reported
        tally.fail(traceback.format_exc())
    time.sleep(max(0.0, started + seconds - time.monotonic()))
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    stored = {doc_id: meta["v"] for batch in index.documents() for doc_id, meta in zip(batch.ids, batch.metadata)}
    lost = sorted(set(ledger.live) - set(stored))
    resurrected = sorted(set(stored) & set(ledger.deleted_at))
    wrong_version = sorted(d for d in set(ledger.live) & set(stored) if stored[d] != ledger.live[d])
    return {
        "seconds": elapsed,
        "operations": dict(tally.operations),
        "operations_total": sum(tally.operations.values()),
        "errors": len(tally.errors),
        "first_errors": tally.errors[:3],
        "documents_at_end": len(stored),
        "documents_lost": len(lost),
        "documents_resurrected": len(resurrected),
        "documents_at_wrong_version": len(wrong_version),
        "search_latency_under_load": latency_summary(tally.search_seconds),
        "generation_at_end": index.health().generation,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="duration per store (default 180)")
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--stores", nargs="+", default=["lancedb", "qdrant-local"])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "soak.json")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {}
    for backend in args.stores:
        workdir = Path(tempfile.mkdtemp(prefix="colbert-store-soak-"))
        try:
            store = LanceDBStore(workdir) if backend == "lancedb" else QdrantStore(workdir / "qdrant")
            results[backend] = soak(store, args.seconds, args.readers)
            store.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"{backend}: {json.dumps(results[backend])}", flush=True)
    save_results(args.out, results, soak_table(results))


def soak_table(results: dict[str, Any]) -> str:
    """One row per store, as a markdown table."""
    rows = []
    for backend, row in results.items():
        counts = " / ".join(str(row["operations"].get(op, 0)) for op in ("add", "replace", "delete", "search", "retrain"))
        latency = row["search_latency_under_load"]
        rows.append([
            backend, f"{row['seconds']:.0f}", counts, row["errors"], row["documents_lost"], row["documents_resurrected"],
            row["documents_at_wrong_version"], f"{latency['p50_ms']:.1f} / {latency['p95_ms']:.1f}",
        ])
    columns = ["store", "seconds", "operations (add / replace / delete / search / retrain)", "errors", "lost", "resurrected",
               "wrong version", "search p50 / p95 ms under load"]
    return markdown_table(columns, rows)


if __name__ == "__main__":
    main()
