"""Hand-made encoded documents and manifests for tests of the storage protocol itself."""

from __future__ import annotations

from typing import Any

import numpy as np

from colbert_store.storage import FORMAT_VERSION, DocumentBatch

RESIDUAL_BYTES = 8


def manifest(version: int = 1, **extra: Any) -> dict[str, Any]:
    """A manifest as stores keep it (stores interpret only ``version``, and a compact Qdrant store the
    token size in ``settings``: :data:`RESIDUAL_BYTES` packed bytes)."""
    return {
        "format_version": FORMAT_VERSION, "version": version, "settings": {"dim": 4 * RESIDUAL_BYTES, "nbits": 2},
        "nested": {"a": [1, 2.5, None]}, **extra,
    }


def make_batch(
    ids: list[str],
    seed: int = 0,
    first_revision: int = 1,
    n_centroids: int = 64,
    dtype: Any = np.uint16,
    metadata: list[dict[str, Any]] | None = None,
) -> DocumentBatch:
    """Random encoded documents with revisions ``first_revision, first_revision + 1, ...``."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 12, len(ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return DocumentBatch(
        ids=list(ids),
        revisions=np.arange(first_revision, first_revision + len(ids), dtype=np.int64),
        token_offsets=offsets,
        centroid_ids=rng.integers(0, n_centroids, int(offsets[-1])).astype(dtype),
        residuals=rng.integers(0, 256, (int(offsets[-1]), RESIDUAL_BYTES), dtype=np.uint8),
        texts=[f"text of {doc_id}" if i % 3 else None for i, doc_id in enumerate(ids)],
        metadata=metadata if metadata is not None else [{"i": i, "tag": f"t{i % 4}"} for i in range(len(ids))],
    )


def by_id(batch: DocumentBatch) -> dict[str, tuple]:
    """Each document's (revision, centroid ids, residuals, text, metadata), keyed by id."""
    out = {}
    for i, doc_id in enumerate(batch.ids):
        a, b = batch.token_offsets[i], batch.token_offsets[i + 1]
        out[doc_id] = (
            int(batch.revisions[i]),
            batch.centroid_ids[a:b].tolist(),
            batch.residuals[a:b].tolist(),
            batch.texts[i],
            batch.metadata[i],
        )
    return out


def stored(store: Any, name: str = "papers") -> dict[str, int]:
    """Every stored document's revision, by id."""
    found = store.fetch(name, store.candidates(name, None, None))
    return dict(zip(found.ids, found.revisions.tolist()))


def candidate_ids(store: Any, probes: Any, where: Any, name: str = "papers") -> list[str]:
    """Sorted ids of the documents ``store.candidates`` names (it answers revisions)."""
    return sorted(store.fetch(name, store.candidates(name, probes, where)).ids)
