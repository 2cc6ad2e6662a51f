"""Ordinary write concurrency: several writer processes on overlapping ids, a retrain in another
process and writers killed mid-call, then every acknowledged call held against the store
(:mod:`tests.concurrency.checker`): nothing lost, torn, duplicated or left with a dead codec, and no
search showing a version superseded before it began."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import colbert_store as cs
from colbert_store.storage import revision_generations
from tests import s3
from tests.concurrency.harness import ROOT, run_processes, run_threads
from tests.concurrency.workload import DIM, document, open_store
from tests.conftest import STORE_FACTORIES

PROCESS_STORES = {
    "lancedb": lambda folder: {"kind": "lancedb", "uri": str(folder / "db")},
    "lancedb-s3": lambda folder: {"kind": "lancedb", "uri": f"s3://{s3.bucket_for(folder)}/index",
                                  "storage_options": s3.storage_options()},
}
"""Stores several processes can open at once, as the specs their worker processes open."""
THREAD_STORES = ["qdrant-edge", "qdrant-edge-compact", "qdrant-memory", "qdrant-path"]
"""Qdrant Edge and qdrant-client's local mode lock their folder to one process: their workers are threads."""


def assert_nothing_went_wrong(report: dict[str, Any]) -> None:
    failures = {key: report[key] for key in
                ("lost", "torn", "duplicated", "dead_codec", "not_self_retrieved", "errors", "retrain_errors")}
    assert failures == {key: [] for key in failures}, failures
    assert report["stale_searches"] == 0 and report["searches"] > 0
    assert report["acknowledged"] >= 5 and report["retrains"] == 1


@pytest.mark.parametrize("kind", sorted(PROCESS_STORES))
def test_writer_processes_a_retrain_and_killed_writers_lose_nothing(kind: str, tmp_path: Path) -> None:
    report = run_processes(PROCESS_STORES[kind](tmp_path), tmp_path / "logs", writers=4, searchers=1, retrains=1,
                           kills=3, seconds=20)
    assert report["kills"] == 3 and report["calls"] - report["acknowledged"] == 3  # each kill landed mid-call
    assert report["worker_exit_failures"] == []
    assert_nothing_went_wrong(report)


@pytest.mark.parametrize("kind", THREAD_STORES)
def test_writer_threads_and_a_retrain_lose_nothing(kind: str, tmp_path: Path) -> None:
    store = STORE_FACTORIES[kind](tmp_path)
    try:
        report = run_threads(store, tmp_path / "logs", writers=4, searchers=1, retrains=1, seconds=15)
    finally:
        store.close()
    assert report["calls"] == report["acknowledged"]
    assert_nothing_went_wrong(report)


@pytest.mark.parametrize("kind", sorted(PROCESS_STORES))
def test_searcher_processes_beside_a_writer_and_a_retrain_never_see_a_superseded_version(kind: str, tmp_path: Path) -> None:
    """One writer process, four searcher processes and a retrain: every search that began after a write
    or delete was acknowledged reflects it (the stated bound is zero: every search asks the store)."""
    report = run_processes(PROCESS_STORES[kind](tmp_path), tmp_path / "logs", writers=1, searchers=4, retrains=1,
                           kills=0, seconds=20)
    assert report["calls"] == report["acknowledged"] and report["worker_exit_failures"] == []
    assert_nothing_went_wrong(report)


def test_searcher_threads_beside_a_writer_on_qdrant_edge_never_see_a_superseded_version(tmp_path: Path) -> None:
    """Qdrant Edge admits one process per shard: a serving process with a writer and searcher threads."""
    store = STORE_FACTORIES["qdrant-edge"](tmp_path)
    try:
        report = run_threads(store, tmp_path / "logs", writers=1, searchers=4, retrains=1, seconds=15)
    finally:
        store.close()
    assert report["calls"] == report["acknowledged"]
    assert_nothing_went_wrong(report)


@pytest.mark.parametrize("kind", sorted(PROCESS_STORES))
def test_two_processes_making_the_first_add_end_with_one_codec(kind: str, tmp_path: Path) -> None:
    spec = PROCESS_STORES[kind](tmp_path)
    store = open_store(spec)
    cs.Index.create(store, "first", dim=DIM, n_centroids=16)
    start_at = time.time() + 15  # both processes imported and waiting
    adders = [
        subprocess.Popen([sys.executable, "-m", "tests.concurrency.roles", "first_adder", json.dumps(spec), "first",
                          str(tmp_path / f"adder-{i}.log"), json.dumps({"first": 100 * i, "count": 60, "start_at": start_at})],
                         cwd=ROOT)
        for i in range(2)
    ]
    assert [adder.wait(timeout=300) for adder in adders] == [0, 0]
    index = cs.Index.open(store, "first")
    current = index._state.manifest.codecs.current
    assert current is not None and index._state.manifest.codecs.retired == ()  # one codec, never replaced
    stored = {doc_id: (revision, batch) for batch in index.documents() for doc_id, revision in zip(batch.ids, batch.revisions)}
    assert sorted(stored) == sorted(f"new-{i}" for i in [*range(60), *range(100, 160)])
    generations = revision_generations(np.array([revision for revision, _ in stored.values()]))
    assert set(generations.tolist()) == {current.generation}
    for batch in index.documents():  # every document encoded with that codec, token for token
        for row, doc_id in enumerate(batch.ids):
            tokens = slice(batch.token_offsets[row], batch.token_offsets[row + 1])
            expected_ids, _ = index.codec.compress(document(doc_id, "init"))
            np.testing.assert_array_equal(batch.centroid_ids[tokens], expected_ids)
    store.close()
