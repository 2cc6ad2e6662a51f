"""A writer killed with SIGKILL in the middle of an add, a delete or a retrain leaves an index that
opens, holds every document entirely or not at all, keeps every acknowledged write, and repeating the
killed call completes it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import colbert_store as cs
from tests.conftest import STORE_FACTORIES
from tests.crash_writer import DELETED, N_DOCS, doc_id, document

ROOT = Path(__file__).resolve().parent.parent
ON_DISK = ["lancedb", "qdrant-path"]


def run_writer(backend: str, folder: Path, mode: str = "add") -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.crash_writer", backend, str(folder), mode], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)


def kill_after(writer: subprocess.Popen[str], announcement: str, delay: float) -> None:
    """SIGKILL ``writer`` ``delay`` seconds after it prints ``announcement``; it must not have finished."""
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == announcement
    time.sleep(delay)
    os.kill(writer.pid, signal.SIGKILL)
    assert writer.wait(timeout=60) == -signal.SIGKILL, "the writer finished before it was killed"


def kill_during_an_add(backend: str, folder: Path, delay: float) -> int:
    """Start the writer, SIGKILL it ``delay`` seconds after its second add returned; the docs acknowledged."""
    writer = run_writer(backend, folder)
    assert writer.stdout is not None
    acknowledged = [int(writer.stdout.readline().split()[1]) for _ in range(2)]
    time.sleep(delay)
    os.kill(writer.pid, signal.SIGKILL)
    assert writer.wait(timeout=60) == -signal.SIGKILL, "the writer finished before it was killed"
    return max(acknowledged)


def stored_documents(index: cs.Index) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    stored = {}
    for batch in index.documents():
        for row, stored_id in enumerate(batch.ids):
            tokens = slice(batch.token_offsets[row], batch.token_offsets[row + 1])
            stored[stored_id] = (batch.centroid_ids[tokens], batch.residuals[tokens])
    return stored


def assert_whole(index: cs.Index, stored: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Every stored document is exactly what the writer meant to write, token for token."""
    assert index.codec is not None
    for stored_id, (centroid_ids, residuals) in stored.items():
        expected_ids, expected_residuals = index.codec.compress(document(int(stored_id.split("-")[1])))
        np.testing.assert_array_equal(centroid_ids, expected_ids, err_msg=stored_id)
        np.testing.assert_array_equal(residuals, expected_residuals, err_msg=stored_id)


@pytest.mark.parametrize("backend", ON_DISK)
@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_killed_add_leaves_whole_documents_and_a_rerun_completes(backend: str, delay: float, tmp_path: Path) -> None:
    acknowledged = kill_during_an_add(backend, tmp_path, delay)

    store = STORE_FACTORIES[backend](tmp_path)
    index = cs.Index.open(store, "crash")
    stored = stored_documents(index)
    assert {doc_id(i) for i in range(acknowledged)} <= set(stored)
    assert len(index) == len(stored)
    assert_whole(index, stored)
    store.close()

    rerun = run_writer(backend, tmp_path)
    assert rerun.wait(timeout=600) == 0
    store = STORE_FACTORIES[backend](tmp_path)
    index = cs.Index.open(store, "crash")
    stored = stored_documents(index)
    assert sorted(stored) == sorted(doc_id(i) for i in range(N_DOCS))
    assert_whole(index, stored)
    hit = index.search(document(2345), k=1)[0]
    assert (hit.id, hit.metadata) == (doc_id(2345), {"i": 2345})
    store.close()


@pytest.fixture(scope="module", params=ON_DISK)
def full_index(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A folder holding the writer's complete index, copied by each test that kills a writer on it."""
    folder = tmp_path_factory.mktemp(request.param)
    assert run_writer(request.param, folder).wait(timeout=600) == 0
    return request.param, folder


def copy_of(full_index: tuple[str, Path], tmp_path: Path) -> tuple[str, Path]:
    backend, folder = full_index
    shutil.copytree(folder, tmp_path / "copy")
    return backend, tmp_path / "copy"


@pytest.mark.parametrize("delay", [0.05, 0.4])
def test_killed_delete_leaves_whole_documents_and_a_rerun_completes(
    full_index: tuple[str, Path], delay: float, tmp_path: Path
) -> None:
    backend, folder = copy_of(full_index, tmp_path)
    kill_after(run_writer(backend, folder, "delete"), "deleting", delay)

    store = STORE_FACTORIES[backend](folder)
    index = cs.Index.open(store, "crash")
    stored = stored_documents(index)
    assert {doc_id(i) for i in range(DELETED, N_DOCS)} <= set(stored)
    assert len(index) == len(stored)
    assert_whole(index, stored)
    store.close()

    assert run_writer(backend, folder, "delete").wait(timeout=600) == 0
    store = STORE_FACTORIES[backend](folder)
    index = cs.Index.open(store, "crash")
    assert sorted(stored_documents(index)) == sorted(doc_id(i) for i in range(DELETED, N_DOCS))
    assert index.search(document(5), k=3)[0].id != doc_id(5)
    store.close()


@pytest.mark.parametrize("delay", [0.1, 1.0])
def test_killed_retrain_leaves_the_old_or_new_index_and_a_rerun_completes(
    full_index: tuple[str, Path], delay: float, tmp_path: Path
) -> None:
    backend, folder = copy_of(full_index, tmp_path)
    kill_after(run_writer(backend, folder, "retrain"), "retraining", delay)

    store = STORE_FACTORIES[backend](folder)
    index = cs.Index.open(store, "crash")
    stored = stored_documents(index)
    assert sorted(stored) == sorted(doc_id(i) for i in range(N_DOCS))
    if index.health().generation == 0:
        assert_whole(index, stored)  # the old codec and documents, untouched
    assert index.search(document(2345), k=1)[0].id == doc_id(2345)
    store.close()

    assert run_writer(backend, folder, "retrain").wait(timeout=600) == 0
    store = STORE_FACTORIES[backend](folder)
    index = cs.Index.open(store, "crash")
    assert store.list_indexes() == ["crash"]  # the killed retrain's copy was dropped
    assert index.health().generation >= 1
    assert sorted(stored_documents(index)) == sorted(doc_id(i) for i in range(N_DOCS))
    hit = index.search(document(2345), k=1)[0]
    assert (hit.id, hit.metadata) == (doc_id(2345), {"i": 2345})
    store.close()
