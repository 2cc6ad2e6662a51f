"""The workers: a writer, a searcher and a retrainer, each logging one JSON line per event.

    python -m tests.concurrency.roles ROLE SPEC NAME LOG OPTIONS

``SPEC`` is a store spec (:func:`tests.concurrency.workload.open_store`) and ``OPTIONS`` the role's
keyword arguments, both as JSON. Times are ``time.monotonic_ns()``: one clock for every process of
the machine, so the checker can order events of different processes.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import colbert_store as cs
from tests.concurrency.workload import POOL, document, encode_texts, open_store, text_of

Log = Callable[[dict[str, Any]], None]


def writer(index: cs.Index, log: Log, *, writer: int, seconds: float, seed: int) -> None:
    """Replace (add) and delete 1-3 documents of the pool at a time, until ``seconds`` have passed."""
    rng = np.random.default_rng(seed)
    until = time.monotonic() + seconds
    seq = 0
    while time.monotonic() < until:
        seq += 1
        ids = [f"doc-{i}" for i in sorted(rng.choice(POOL, size=int(rng.integers(1, 4)), replace=False))]
        op = "delete" if rng.random() < 0.25 else "upsert"
        tag = f"w{writer}s{seq}"
        log({"event": "begin", "writer": writer, "seq": seq, "op": op, "ids": ids, "tag": tag, "t": time.monotonic_ns()})
        try:
            if op == "upsert":
                index.add(ids, [document(i, tag) for i in ids], texts=[text_of(i, tag) for i in ids],
                          metadata=[{"tag": tag} for _ in ids])
            else:
                index.delete(ids)
        except Exception as error:  # logged for the checker, which counts every one as a failure
            error_text = f"{type(error).__name__}: {error}"
            log({"event": "error", "writer": writer, "seq": seq, "t": time.monotonic_ns(), "error": error_text})
            continue
        log({"event": "end", "writer": writer, "seq": seq, "t": time.monotonic_ns()})


def searcher(index: cs.Index, log: Log, *, seconds: float, seed: int, writer_logs: list[str]) -> None:
    """Search with the vectors of versions the writers acknowledged, logging every hit's version."""
    rng = np.random.default_rng(seed)
    until = time.monotonic() + seconds
    initial = [(f"doc-{i}", "init") for i in range(POOL)]
    versions = initial
    refreshed = 0.0
    while time.monotonic() < until:
        if time.monotonic() - refreshed > 0.5:
            versions = initial + _acknowledged_upserts(writer_logs)
            refreshed = time.monotonic()
        doc_id, tag = versions[int(rng.integers(len(versions)))]
        start = time.monotonic_ns()
        try:
            hits = index.search(document(doc_id, tag), k=5)
        except Exception as error:
            log({"event": "error", "t": time.monotonic_ns(), "error": f"{type(error).__name__}: {error}"})
            continue
        log({"event": "search", "start": start, "end": time.monotonic_ns(), "query": [doc_id, tag],
             "hits": [[hit.id, hit.metadata.get("tag")] for hit in hits]})


def retrainer(index: cs.Index, log: Log, *, retrains: int, interval: float) -> None:
    """Retrain from text ``retrains`` times, ``interval`` seconds apart (and before the first)."""
    for _ in range(retrains):
        time.sleep(interval)
        log({"event": "begin", "t": time.monotonic_ns()})
        try:
            index.retrain(encode_texts=encode_texts)
        except Exception as error:
            log({"event": "error", "t": time.monotonic_ns(), "error": f"{type(error).__name__}: {error}"})
            continue
        log({"event": "end", "t": time.monotonic_ns()})


def first_adder(index: cs.Index, log: Log, *, first: int, count: int, start_at: float) -> None:
    """Wait until wall-clock time ``start_at``, then add documents ``first .. first + count - 1``: with the
    index still untrained, this add trains its codec unless another process's add did first."""
    ids = [f"new-{i}" for i in range(first, first + count)]
    time.sleep(max(0.0, start_at - time.time()))
    log({"event": "begin", "t": time.monotonic_ns()})
    index.add(ids, [document(i, "init") for i in ids], texts=[text_of(i, "init") for i in ids],
              metadata=[{"tag": "init"} for _ in ids])
    log({"event": "end", "t": time.monotonic_ns()})


ROLES: dict[str, Callable[..., None]] = {
    "writer": writer, "searcher": searcher, "retrainer": retrainer, "first_adder": first_adder,
}


def line_log(path: str | Path) -> Log:
    """Append JSON lines to ``path``, each written through to the OS before the call returns (so a
    line survives its process being killed right after)."""
    handle = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's lifetime

    def log(event: dict[str, Any]) -> None:
        handle.write(json.dumps(event) + "\n")

    return log


def _acknowledged_upserts(writer_logs: list[str]) -> list[tuple[str, str]]:
    """(id, tag) of every acknowledged upsert in the logs."""
    begun: dict[tuple[int, int], dict[str, Any]] = {}
    found: list[tuple[str, str]] = []
    for path in writer_logs:
        if not Path(path).exists():
            continue
        for line in Path(path).read_text().splitlines():
            event = json.loads(line)
            key = (event["writer"], event["seq"])
            if event["event"] == "begin" and event["op"] == "upsert":
                begun[key] = event
            elif event["event"] == "end" and key in begun:
                found += [(doc_id, begun[key]["tag"]) for doc_id in begun[key]["ids"]]
    return found


def main(role: str, spec: str, name: str, log_path: str, options: str) -> None:
    store = open_store(json.loads(spec))
    try:
        ROLES[role](cs.Index.open(store, name), line_log(log_path), **json.loads(options))
    finally:
        store.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
