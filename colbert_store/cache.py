"""An in-memory cache of stored documents keyed by revision, so searches skip most store reads.

A revision is unique to one write of one document: replacing a document gives it a new revision
and deleting it removes it from the store's candidate answers. The cache therefore never serves a
stale document; the store stays the source of truth.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from colbert_store.storage import DocumentBatch


@dataclass(frozen=True)
class CachedDocuments:
    """An immutable snapshot of the cache: the documents and lookups derived from them."""

    batch: DocumentBatch
    sorted_revisions: np.ndarray = field(init=False)
    order: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        order = np.argsort(self.batch.revisions, kind="stable")
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "sorted_revisions", self.batch.revisions[order])

    @property
    def nbytes(self) -> int:
        return int(self.batch.centroid_ids.nbytes + self.batch.residuals.nbytes)

    @cached_property
    def inverted_lists(self) -> tuple[np.ndarray, np.ndarray]:
        """Centroid -> cached documents: ``slots[offsets[c]:offsets[c + 1]]`` hold centroid ``c`` (ascending).

        A stable sort of the token centroid ids (a radix sort for 16-bit ids) keeps each centroid's
        tokens in slot order, so repeats within a document are neighbours and drop out in one pass.
        """
        centroid_ids = self.batch.centroid_ids
        order = np.argsort(centroid_ids, kind="stable")
        centroids = centroid_ids[order]
        slots = np.repeat(np.arange(len(self.batch), dtype=np.int64), np.diff(self.batch.token_offsets))[order]
        distinct = np.ones(len(order), dtype=bool)
        distinct[1:] = (centroids[1:] != centroids[:-1]) | (slots[1:] != slots[:-1])
        counts = np.bincount(centroids[distinct], minlength=1)
        return np.concatenate([[0], np.cumsum(counts)]), slots[distinct]

    def slots_holding(self, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (slot, centroid) pair of a cached document holding one of ``centroids``."""
        offsets, slots = self.inverted_lists
        last = len(offsets) - 1  # centroids past the largest cached id hold nothing
        starts = offsets[np.minimum(centroids, last)]
        lengths = offsets[np.minimum(centroids + 1, last)] - starts
        positions, owner = concatenated_ranges(starts, lengths)
        return slots[positions], centroids[owner]

    def slots(self, revisions: np.ndarray) -> np.ndarray:
        """Cache slot of each revision, -1 where absent."""
        if not len(self.sorted_revisions):
            return np.full(len(revisions), -1, dtype=np.int64)
        position = np.searchsorted(self.sorted_revisions, revisions).clip(max=len(self.sorted_revisions) - 1)
        found = self.sorted_revisions[position] == revisions
        return np.where(found, self.order[position], -1)


def _empty_batch() -> DocumentBatch:
    return DocumentBatch(
        ids=[],
        revisions=np.empty(0, np.int64),
        token_offsets=np.zeros(1, np.int64),
        centroid_ids=np.empty(0, np.uint16),
        residuals=np.empty((0, 0), np.uint8),
    )


def concat_batches(batches: list[DocumentBatch]) -> DocumentBatch:
    """One batch holding every document of ``batches`` in order."""
    batches = [b for b in batches if len(b)]
    if not batches:
        return _empty_batch()
    if len(batches) == 1:
        return batches[0]
    lengths = np.concatenate([np.diff(b.token_offsets) for b in batches])
    return DocumentBatch(
        ids=[doc_id for b in batches for doc_id in b.ids],
        revisions=np.concatenate([b.revisions for b in batches]),
        token_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        centroid_ids=np.concatenate([b.centroid_ids for b in batches]),
        residuals=np.concatenate([b.residuals for b in batches]),
        texts=[text for b in batches for text in (b.texts or [None] * len(b))],
        metadata=[entry for b in batches for entry in (b.metadata or [{}] * len(b))],
    )


def concatenated_ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``range(start, start + length)`` for each pair, concatenated, and the pair each value came from.

    >>> concatenated_ranges(np.array([5, 0]), np.array([1, 2]))
    (array([5, 0, 1]), array([0, 1, 1]))
    """
    owner = np.repeat(np.arange(len(starts)), lengths)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(starts) else np.empty(0, np.int64)
    positions = np.arange(int(lengths.sum())) - np.repeat(first - starts, lengths)
    return positions, owner


def token_positions(token_offsets: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token row numbers of the documents in ``slots`` and, for each, the index into ``slots``.

    >>> token_positions(np.array([0, 2, 5, 6]), np.array([2, 0]))
    (array([5, 0, 1]), array([0, 1, 1]))
    """
    starts = token_offsets[slots]
    return concatenated_ranges(starts, token_offsets[slots + 1] - starts)


class DocumentCache:
    """Thread-safe revision-keyed cache of encoded documents with a byte budget."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self._max_bytes = max_bytes
        self._snapshot = CachedDocuments(_empty_batch())
        self._lock = threading.Lock()

    def lookup(self, revisions: np.ndarray) -> tuple[CachedDocuments, np.ndarray]:
        """The current snapshot and the slot of each revision in it (-1 where not cached)."""
        snapshot = self._snapshot
        return snapshot, snapshot.slots(revisions)

    def insert(self, batch: DocumentBatch) -> None:
        """Add fetched documents; when over budget, the old entries are dropped first."""
        with self._lock:
            current = self._snapshot
            new = np.flatnonzero(current.slots(batch.revisions) < 0)
            if not len(new):
                return
            fresh = subset_batch(batch, new)
            keep = [] if current.nbytes + CachedDocuments(fresh).nbytes > self._max_bytes else [current.batch]
            self._snapshot = CachedDocuments(concat_batches([*keep, fresh]))

    def clear(self) -> None:
        with self._lock:
            self._snapshot = CachedDocuments(_empty_batch())


def subset_batch(batch: DocumentBatch, rows: np.ndarray) -> DocumentBatch:
    """The documents of ``batch`` at positions ``rows``, in that order."""
    if len(rows) == len(batch):
        return batch
    positions, _ = token_positions(batch.token_offsets, rows)
    lengths = np.diff(batch.token_offsets)[rows]
    return DocumentBatch(
        ids=[batch.ids[i] for i in rows],
        revisions=batch.revisions[rows],
        token_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        centroid_ids=batch.centroid_ids[positions],
        residuals=batch.residuals[positions],
        texts=[batch.texts[i] for i in rows] if batch.texts else [],
        metadata=[batch.metadata[i] for i in rows] if batch.metadata else [],
    )
