"""An in-memory cache of stored documents keyed by revision, so searches skip most store reads.

A revision is unique to one write of one document: replacing a document gives it a new revision
and deleting it removes it from the store's candidate answers. The cache therefore never serves a
stale document; the store stays the source of truth.

Besides the encoded documents, the cache remembers each token's renormalisation factor once a
search has needed it, so exact scoring of a cached document decodes no vectors (see
:meth:`CachedDocuments.inverse_norms`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from colbert_store.centroid_lists import CentroidLists, GrowingArray, GrowingLists, token_positions
from colbert_store.codec import ResidualCodec
from colbert_store.storage import DocumentBatch

_NORM_BYTES = np.dtype(np.float32).itemsize
DEFAULT_CACHE_BYTES = 1 << 30
"""Memory an index's cached documents may take (``Index.open(..., cache_bytes=...)``)."""


@dataclass(frozen=True)
class CachedDocuments:
    """A snapshot of the cache: the documents, their centroid lists and, per token, the memo of
    :meth:`inverse_norms` (NaN where not computed yet; the only part that changes)."""

    batch: DocumentBatch
    lists: CentroidLists
    known_inverse_norms: np.ndarray

    @classmethod
    def of(cls, batch: DocumentBatch) -> CachedDocuments:
        """A snapshot holding ``batch`` alone."""
        lists = CentroidLists.of(batch.revisions, *batch.distinct_centroids())
        return cls(batch, lists, _unknown_norms(len(batch.centroid_ids)))

    @property
    def nbytes(self) -> int:
        return cached_bytes(self.batch)

    def inverse_norms(self, positions: np.ndarray, codec: ResidualCodec) -> np.ndarray:
        """``codec.inverse_norms`` of the tokens at ``positions``, decoding only those never asked for before.

        Concurrent searches may compute the same factors and write them twice; the values are equal.
        """
        values = self.known_inverse_norms[positions]
        unknown = np.flatnonzero(np.isnan(values))
        if len(unknown):
            todo = positions[unknown]
            values[unknown] = codec.inverse_norms(self.batch.centroid_ids[todo], self.batch.residuals[todo])
            self.known_inverse_norms[todo] = values[unknown]
        return values

    def slots(self, revisions: np.ndarray) -> np.ndarray:
        """Cache slot of each revision, -1 where absent."""
        return self.lists.slots(revisions)


def _empty_batch() -> DocumentBatch:
    return DocumentBatch(
        ids=[],
        revisions=np.empty(0, np.int64),
        token_offsets=np.zeros(1, np.int64),
        centroid_ids=np.empty(0, np.uint16),
        residuals=np.empty((0, 0), np.uint8),
    )


def _unknown_norms(n_tokens: int) -> np.ndarray:
    return np.full(n_tokens, np.nan, dtype=np.float32)


class DocumentCache:
    """Thread-safe revision-keyed cache of encoded documents with a byte budget.

    An insert's per-token work is proportional to the inserted documents, not to the cache: token
    arrays grow in place (searches keep reading their own snapshot) and the centroid lists are a
    :class:`~colbert_store.centroid_lists.GrowingLists`.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._arrays: dict[str, GrowingArray] = {}
        self._lists = GrowingLists()
        self._snapshot = CachedDocuments.of(_empty_batch())
        self.epoch = 0
        """Counts the times the cache was emptied: what it held before an epoch may be gone since."""

    def lookup(self, revisions: np.ndarray) -> tuple[CachedDocuments, np.ndarray]:
        """The current snapshot and the slot of each revision in it (-1 where not cached)."""
        snapshot = self._snapshot
        return snapshot, snapshot.slots(revisions)

    def fits(self, batch: DocumentBatch) -> bool:
        """Whether ``batch`` can be added without dropping what is cached."""
        return self._snapshot.nbytes + cached_bytes(batch) <= self._max_bytes

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def insert(self, batch: DocumentBatch) -> None:
        """Add documents; when over budget, the cache is emptied first and then holds ``batch`` alone
        (all of it, even beyond the budget, so that a search's documents stay together)."""
        with self._lock:
            new = np.flatnonzero(self._snapshot.slots(batch.revisions) < 0)
            if not len(new):
                return
            fresh = subset_batch(batch, new)
            if self._snapshot.nbytes + cached_bytes(fresh) > self._max_bytes:
                self._reset()
                fresh = batch
            self._snapshot = self._appended(fresh)

    def clear(self) -> None:
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        self._arrays = {}
        self._lists = GrowingLists()
        self._snapshot = CachedDocuments.of(_empty_batch())
        self.epoch += 1

    def _appended(self, fresh: DocumentBatch) -> CachedDocuments:
        """A snapshot of the cached documents followed by ``fresh``."""
        cached = self._snapshot.batch
        if not self._arrays:
            self._arrays = {
                "token_offsets": GrowingArray(cached.token_offsets),
                "centroid_ids": GrowingArray(fresh.centroid_ids[:0]),
                "residuals": GrowingArray(fresh.residuals[:0]),
                "inverse_norms": GrowingArray(_unknown_norms(0)),
            }
        lists = self._lists.append(fresh.revisions, *fresh.distinct_centroids())
        batch = DocumentBatch(
            ids=cached.ids + fresh.ids,
            revisions=lists.revisions,
            token_offsets=self._arrays["token_offsets"].extend(fresh.token_offsets[1:] + cached.token_offsets[-1]),
            centroid_ids=self._arrays["centroid_ids"].extend(fresh.centroid_ids),
            residuals=self._arrays["residuals"].extend(fresh.residuals),
            texts=cached.texts + (fresh.texts or [None] * len(fresh)),
            metadata=cached.metadata + (fresh.metadata or [{}] * len(fresh)),
        )
        inverse_norms = self._arrays["inverse_norms"].extend(_unknown_norms(len(fresh.centroid_ids)))
        return CachedDocuments(batch, lists, inverse_norms)


def cached_bytes(batch: DocumentBatch) -> int:
    """Bytes the cache counts for ``batch``: its codes and residuals, a remembered norm per token, and
    each document's distinct centroid ids (counted as if every token's were distinct) and their offset."""
    per_token = 2 * batch.centroid_ids.itemsize + batch.residuals.shape[1] + _NORM_BYTES
    return int(len(batch.centroid_ids) * per_token + 8 * len(batch))


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
        sq_errors=None if batch.sq_errors is None else batch.sq_errors[rows],
    )
