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
from colbert_store.storage import revision_generations
from tests import s3
from tests.conftest import STORE_FACTORIES
from tests.crash_writer import DELETED, N_DOCS, doc_id, document

ROOT = Path(__file__).resolve().parent.parent
ON_DISK = ["lancedb", "lancedb-s3", "qdrant-edge", "qdrant-edge-compact", "qdrant-path"]
"""Stores whose data outlives the writer process (in-memory Qdrant dies with it)."""


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


def stored_documents(index: cs.Index) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
    """Each stored document's revision, centroid ids and residuals, by id."""
    stored = {}
    for batch in index.documents():
        for row, stored_id in enumerate(batch.ids):
            tokens = slice(batch.token_offsets[row], batch.token_offsets[row + 1])
            stored[stored_id] = (int(batch.revisions[row]), batch.centroid_ids[tokens], batch.residuals[tokens])
    return stored


def assert_whole(index: cs.Index, stored: dict[str, tuple[int, np.ndarray, np.ndarray]]) -> None:
    """Every stored document is exactly what the writer meant to write, token for token, under the codec
    of its generation (one the index still holds: none is left with a codec the index dropped)."""
    codecs = index._state.by_generation()
    for stored_id, (revision, centroid_ids, residuals) in stored.items():
        codec = codecs[int(revision_generations(np.array([revision]))[0])]
        expected_ids, expected_residuals = codec.compress(document(int(stored_id.split("-")[1])))
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
    if backend == "lancedb-s3":
        s3.copy_bucket(folder, tmp_path / "copy")
    else:
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
def test_killed_retrain_leaves_a_searchable_index_and_a_rerun_finishes_the_move(
    full_index: tuple[str, Path], delay: float, tmp_path: Path
) -> None:
    backend, folder = copy_of(full_index, tmp_path)
    kill_after(run_writer(backend, folder, "retrain"), "retraining", delay)

    store = STORE_FACTORIES[backend](folder)
    index = cs.Index.open(store, "crash")
    stored = stored_documents(index)
    assert sorted(stored) == sorted(doc_id(i) for i in range(N_DOCS))
    assert_whole(index, stored)  # each document under the old codec or the new one
    assert index.search(document(2345), k=1)[0].id == doc_id(2345)
    store.close()

    assert run_writer(backend, folder, "retrain").wait(timeout=600) == 0
    store = STORE_FACTORIES[backend](folder)
    index = cs.Index.open(store, "crash")
    assert store.list_indexes() == ["crash"]
    codecs = index._state.manifest.codecs
    assert codecs.current is not None and codecs.current.generation >= 1 and codecs.retiring is None
    stored = stored_documents(index)
    assert sorted(stored) == sorted(doc_id(i) for i in range(N_DOCS))
    generations = revision_generations(np.array([revision for revision, _, _ in stored.values()]))
    assert set(generations.tolist()) == {codecs.current.generation}  # every document moved to the new codec
    assert_whole(index, stored)
    hit = index.search(document(2345), k=1)[0]
    assert (hit.id, hit.metadata) == (doc_id(2345), {"i": 2345})
    store.close()
