"""Writer process for the crash-safety tests: writes to index "crash", reporting each call.

    python -m tests.crash_writer BACKEND FOLDER [add | delete | retrain]

``add`` (the default) creates the index when missing (its first add trains the codec), then adds
the documents in calls of ``CALL_SIZE``, printing ``added N`` after each call returns. ``delete``
prints ``deleting``, deletes the first ``DELETED`` documents in one call, then prints ``deleted``.
``retrain`` prints ``retraining``, retrains the codec (re-encoding each document from its text, which
is its id), then prints ``retrained``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import colbert_store as cs
from tests.conftest import DIM, STORE_FACTORIES

N_DOCS = 2_400
FIRST_ADD = 200
CALL_SIZE = 700
DELETED = 2_000


def document(i: int) -> np.ndarray:
    """Document ``i``'s unit-norm token vectors: the same on every run."""
    vectors = np.random.default_rng(i).standard_normal((20 + i % 30, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def doc_id(i: int) -> str:
    return f"doc-{i}"


def encode(texts: list[str]) -> list[np.ndarray]:
    """What an encoder would return for the stored texts (each document's text is its id)."""
    return [document(int(text.split("-")[1])) for text in texts]


def add_all(index: cs.Index) -> None:
    starts = [0, *range(FIRST_ADD, N_DOCS, CALL_SIZE)]
    for start, stop in zip(starts, [*starts[1:], N_DOCS]):
        ids = [doc_id(i) for i in range(start, stop)]
        index.add(ids, [document(i) for i in range(start, stop)], texts=ids, metadata=[{"i": i} for i in range(start, stop)])
        print(f"added {stop}", flush=True)


def main(backend: str, folder: str, mode: str = "add") -> None:
    store = STORE_FACTORIES[backend](Path(folder))
    if "crash" in store.list_indexes():
        index = cs.Index.open(store, "crash")
    else:
        index = cs.Index.create(store, "crash", dim=DIM, n_centroids=64)
    if mode == "add":
        add_all(index)
    elif mode == "delete":
        print("deleting", flush=True)
        index.delete([doc_id(i) for i in range(DELETED)])
        print("deleted", flush=True)
    elif mode == "retrain":
        print("retraining", flush=True)
        index.retrain(encode_texts=encode)
        print("retrained", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    store.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
