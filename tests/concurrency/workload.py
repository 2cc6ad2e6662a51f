"""What the concurrency workers write: documents whose vectors follow from their id and version tag,
so any stored document can be checked token for token, and stores named by a JSON spec, so a
subprocess can open the same one."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from colbert_store.storage import Store

DIM = 32
POOL = 40
"""Writers pick ids from ``doc-0`` .. ``doc-39``: overlapping, so they replace and delete each other's writes."""


def doc_ids() -> list[str]:
    return [f"doc-{i}" for i in range(POOL)]


def document(doc_id: str, tag: str) -> np.ndarray:
    """The unit token vectors of version ``tag`` of ``doc_id``: 8-31 tokens, always the same."""
    rng = np.random.default_rng(zlib.crc32(f"{doc_id}|{tag}".encode()))
    vectors = rng.standard_normal((8 + int(rng.integers(24)), DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def text_of(doc_id: str, tag: str) -> str:
    """A version's stored text: what a retrain from text re-encodes (see :func:`encode_texts`)."""
    return f"{doc_id}|{tag}"


def encode_texts(texts: Sequence[str]) -> list[np.ndarray]:
    """The "encoder" of stored texts: each text names its version, whose vectors :func:`document` gives."""
    return [document(*text.split("|")) for text in texts]


def open_store(spec: dict[str, Any]) -> Store:
    """The store a spec names: ``{"kind": "lancedb", "uri": ..., "storage_options": {...}}``,
    ``{"kind": "qdrant-path", "path": ...}`` or ``{"kind": "qdrant-edge", "path": ...}``."""
    kind = spec["kind"]
    if kind == "lancedb":
        from colbert_store.adapters.lancedb import LanceDBStore

        options = {"storage_options": spec["storage_options"]} if spec.get("storage_options") else {}
        return LanceDBStore(spec["uri"], **options)
    if kind == "qdrant-path":
        from colbert_store.adapters.qdrant import QdrantStore

        return QdrantStore(Path(spec["path"]))
    if kind == "qdrant-edge":
        from colbert_store.adapters.qdrant_edge import QdrantEdgeStore

        return QdrantEdgeStore(spec["path"])
    raise ValueError(f"unknown store kind {kind!r}")
