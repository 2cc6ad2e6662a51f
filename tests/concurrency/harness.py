"""Runs writers, searchers and a retrainer on one index, kills writers on the way, and checks the result.

:func:`run_processes` gives every worker a process of its own (stores several processes can open);
:func:`run_threads` runs the same workers as threads of this process (qdrant-client's local mode,
which locks its folder to one process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import colbert_store as cs
from colbert_store.storage import Store
from tests.concurrency.checker import INITIAL, check
from tests.concurrency.roles import ROLES, line_log
from tests.concurrency.workload import DIM, doc_ids, document, open_store, text_of

ROOT = Path(__file__).resolve().parents[2]
NAME = "stress"


def create_index(store: Store) -> None:
    """The index every run starts from: the whole pool at its initial version."""
    index = cs.Index.create(store, NAME, dim=DIM, n_centroids=16)
    ids = doc_ids()
    index.add(ids, [document(i, INITIAL) for i in ids], texts=[text_of(i, INITIAL) for i in ids],
              metadata=[{"tag": INITIAL} for _ in ids])


def run_processes(
    spec: dict[str, Any], workdir: Path, *, writers: int = 4, searchers: int = 0, retrains: int = 1, kills: int = 3,
    seconds: float = 20.0, bound_ns: int = 0,
) -> dict[str, Any]:
    """Workers in processes of their own, ``kills`` writers SIGKILLed (each replaced by a new one) at
    even intervals; then the final index is checked (:func:`tests.concurrency.checker.check`)."""
    store = open_store(spec)
    create_index(store)
    store.close()
    workdir.mkdir(parents=True, exist_ok=True)
    writer_logs: list[Path] = []
    searcher_logs = [workdir / f"searcher-{i}.log" for i in range(searchers)]
    started = time.monotonic()

    def start(role: str, log: Path, **options: Any) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "tests.concurrency.roles", role, json.dumps(spec), NAME, str(log), json.dumps(options)]
        return subprocess.Popen(command, cwd=ROOT)

    def start_writer(number: int) -> subprocess.Popen[bytes]:
        writer_logs.append(workdir / f"writer-{number}.log")
        remaining = max(1.0, seconds - (time.monotonic() - started))
        return start("writer", writer_logs[-1], writer=number, seconds=remaining, seed=number)

    running = {number: start_writer(number) for number in range(writers)}
    others = [start("searcher", log, seconds=seconds, seed=100 + i, writer_logs=[str(p) for p in writer_logs])
              for i, log in enumerate(searcher_logs)]
    if retrains:
        others.append(start("retrainer", workdir / "retrainer.log", retrains=retrains, interval=seconds / (retrains + 1)))
    kill_times: dict[int, int] = {}
    rng = np.random.default_rng(0)
    while not all(_last_event(log) for log in writer_logs):  # the kills count from when writing began
        time.sleep(0.05)
    started = time.monotonic()
    for kill in range(kills):
        time.sleep(max(0.0, started + seconds * (kill + 1) / (kills + 1) - time.monotonic()))
        victim = _writer_in_a_call(running, writer_logs, rng, deadline=time.monotonic() + seconds / (kills + 1) / 2)
        if victim is None:
            continue
        os.kill(running[victim].pid, signal.SIGKILL)
        running[victim].wait()
        kill_times[victim] = time.monotonic_ns()
        running[writers + kill] = start_writer(writers + kill)
    failures = [process.wait() for process in [*running.values(), *others]]
    failures = [code for number, code in zip([*running, *range(len(others))], failures) if code and number not in kill_times]
    store = open_store(spec)
    try:
        report = check(cs.Index.open(store, NAME), writer_logs, searcher_logs, kill_times, time.monotonic_ns(), bound_ns)
    finally:
        store.close()
    retrainer_events = [json.loads(line) for line in (workdir / "retrainer.log").read_text().splitlines()] if retrains else []
    report.update(
        kills=len(kill_times), worker_exit_failures=failures,
        retrains=sum(event["event"] == "end" for event in retrainer_events),
        retrain_errors=[event["error"] for event in retrainer_events if event["event"] == "error"],
    )
    return report


def _writer_in_a_call(
    running: dict[int, subprocess.Popen[bytes]], logs: list[Path], rng: np.random.Generator, deadline: float
) -> int | None:
    """A live writer whose last logged event is the start of a call (so a kill lands mid-call), polled until ``deadline``."""
    while time.monotonic() < deadline:
        busy = [number for number, process in running.items()
                if process.poll() is None and _last_event(logs[number]).get("event") == "begin"]
        if busy:
            return int(rng.choice(busy))
        time.sleep(0.005)
    return None


def _last_event(log: Path) -> dict[str, Any]:
    lines = log.read_text().splitlines() if log.exists() else []
    return json.loads(lines[-1]) if lines else {}


def run_threads(store: Store, workdir: Path, *, writers: int = 4, searchers: int = 0, retrains: int = 1,
                seconds: float = 20.0) -> dict[str, Any]:
    """The same workers as threads sharing ``store`` (no kills: a thread cannot be killed)."""
    create_index(store)
    workdir.mkdir(parents=True, exist_ok=True)
    writer_logs = [workdir / f"writer-{number}.log" for number in range(writers)]
    searcher_logs = [workdir / f"searcher-{i}.log" for i in range(searchers)]
    jobs = [("writer", log, {"writer": number, "seconds": seconds, "seed": number}) for number, log in enumerate(writer_logs)]
    jobs += [("searcher", log, {"seconds": seconds, "seed": 100 + i, "writer_logs": [str(p) for p in writer_logs]})
             for i, log in enumerate(searcher_logs)]
    if retrains:
        jobs.append(("retrainer", workdir / "retrainer.log", {"retrains": retrains, "interval": seconds / (retrains + 1)}))
    threads = [threading.Thread(target=ROLES[role], args=(cs.Index.open(store, NAME), line_log(log)), kwargs=options)
               for role, log, options in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = check(cs.Index.open(store, NAME), writer_logs, searcher_logs, {}, time.monotonic_ns())
    retrainer_events = [json.loads(line) for line in (workdir / "retrainer.log").read_text().splitlines()] if retrains else []
    report.update(retrains=sum(event["event"] == "end" for event in retrainer_events),
                  retrain_errors=[event["error"] for event in retrainer_events if event["event"] == "error"])
    return report
