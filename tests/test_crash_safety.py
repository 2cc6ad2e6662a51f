"""A writer killed with SIGKILL in the middle of an add leaves an index that opens, holds every
document entirely or not at all, keeps every acknowledged add, and a repeated add completes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import colbert_store as cs
from tests.conftest import STORE_FACTORIES
from tests.crash_writer import N_DOCS, doc_id, document

ROOT = Path(__file__).resolve().parent.parent
ON_DISK = ["lancedb", "qdrant-path"]


def run_writer(backend: str, folder: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.crash_writer", backend, str(folder)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)


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
