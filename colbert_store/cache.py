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
from dataclasses import dataclass, field

import numpy as np

from colbert_store.codec import ResidualCodec
from colbert_store.storage import DocumentBatch

_NORM_BYTES = np.dtype(np.float32).itemsize


@dataclass(frozen=True)
class InvertedList:
    """Centroid -> documents for the cache slots ``first_slot`` up to ``end_slot``: ``slots[offsets[c]:offsets[c + 1]]``
    are the slots (ascending, each once) holding centroid ``c``."""

    first_slot: int
    end_slot: int
    offsets: np.ndarray
    slots: np.ndarray

    @classmethod
    def build(
        cls, distinct_offsets: np.ndarray, distinct_centroids: np.ndarray, first_slot: int, end_slot: int
    ) -> InvertedList:
        """The inverted list of the documents ``first_slot:end_slot``, from each document's distinct
        centroid ids (:meth:`DocumentBatch.distinct_centroids`): a stable sort by centroid id (a radix sort for
        16-bit ids) keeps each centroid's documents in slot order."""
        start, end = distinct_offsets[first_slot], distinct_offsets[end_slot]
        centroids = distinct_centroids[start:end]
        order = np.argsort(centroids, kind="stable")
        lengths = np.diff(distinct_offsets[first_slot : end_slot + 1])
        slots = np.repeat(np.arange(first_slot, end_slot, dtype=np.int64), lengths)[order]
        offsets = np.concatenate([[0], np.cumsum(np.bincount(centroids, minlength=1))])
        return cls(first_slot, end_slot, offsets, slots)

    def holding(self, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (slot, centroid) pair of a listed document holding one of ``centroids``."""
        last = len(self.offsets) - 1  # centroids past the largest listed id hold nothing
        starts = self.offsets[np.minimum(centroids, last)]
        lengths = self.offsets[np.minimum(centroids + 1, last)] - starts
        return self.slots[range_positions(starts, lengths)], np.repeat(centroids, lengths)


@dataclass(frozen=True)
class CachedDocuments:
    """A snapshot of the cache: the documents, inverted lists covering all of them, each document's
    distinct centroid ids (``distinct_centroids[distinct_offsets[s]:distinct_offsets[s + 1]]`` for
    slot ``s``; computed from ``batch`` when not given) and, per token, the memo of
    :meth:`inverse_norms` (NaN where not computed yet; the only part that changes)."""

    batch: DocumentBatch
    inverted_lists: tuple[InvertedList, ...] = ()
    known_inverse_norms: np.ndarray | None = None
    distinct_offsets: np.ndarray | None = None
    distinct_centroids: np.ndarray | None = None
    sorted_revisions: np.ndarray = field(init=False)
    order: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        order = np.argsort(self.batch.revisions, kind="stable")
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "sorted_revisions", self.batch.revisions[order])
        if self.known_inverse_norms is None:
            object.__setattr__(self, "known_inverse_norms", _unknown_norms(len(self.batch.centroid_ids)))
        if self.distinct_offsets is None or self.distinct_centroids is None:
            offsets, centroids = self.batch.distinct_centroids()
            object.__setattr__(self, "distinct_offsets", offsets)
            object.__setattr__(self, "distinct_centroids", centroids)

    @property
    def nbytes(self) -> int:
        return cached_bytes(self.batch)

    def pairs_among(self, centroids: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (row, centroid) pair, once, where the document in ``slots[row]`` holds one of ``centroids``."""
        row_of_slot = np.full(len(self.batch), -1, dtype=np.int64)
        row_of_slot[slots] = np.arange(len(slots))
        rows, held = [np.empty(0, np.int64)], [centroids[:0]]
        for inverted in self.inverted_lists:
            holders, found = inverted.holding(centroids)
            holder_rows = row_of_slot[holders]
            # Indices then take: on these unpredictable masks, much faster than boolean indexing.
            kept = np.flatnonzero(holder_rows >= 0)
            rows.append(holder_rows.take(kept))
            held.append(found.take(kept))
        return np.concatenate(rows), np.concatenate(held)

    def slots_holding(self, centroids: np.ndarray) -> np.ndarray:
        """The slots (ascending, each once) of the cached documents holding one of ``centroids``."""
        found = [inverted.holding(centroids)[0] for inverted in self.inverted_lists]
        return np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)

    def distinct_centroids_of(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The distinct centroid ids of the documents in ``slots``, concatenated, and for each the index into ``slots``."""
        assert self.distinct_offsets is not None and self.distinct_centroids is not None
        positions, owner = token_positions(self.distinct_offsets, slots)
        return self.distinct_centroids[positions], owner

    def inverse_norms(self, positions: np.ndarray, codec: ResidualCodec) -> np.ndarray:
        """``codec.inverse_norms`` of the tokens at ``positions``, decoding only those never asked for before.

        Concurrent searches may compute the same factors and write them twice; the values are equal.
        """
        assert self.known_inverse_norms is not None
        values = self.known_inverse_norms[positions]
        unknown = np.flatnonzero(np.isnan(values))
        if len(unknown):
            todo = positions[unknown]
            values[unknown] = codec.inverse_norms(self.batch.centroid_ids[todo], self.batch.residuals[todo])
            self.known_inverse_norms[todo] = values[unknown]
        return values

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


def _unknown_norms(n_tokens: int) -> np.ndarray:
    return np.full(n_tokens, np.nan, dtype=np.float32)


def range_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``range(start, start + length)`` for each pair, concatenated (int64).

    >>> range_positions(np.array([5, 9, 0]), np.array([1, 0, 2]))
    array([5, 0, 1])
    """
    nonempty = np.flatnonzero(lengths)
    starts, lengths = starts[nonempty], lengths[nonempty]
    ends = np.cumsum(lengths)
    # One cumulative sum over steps of 1, with a jump where each range begins.
    steps = np.ones(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
    if len(steps):
        steps[0] = starts[0]
        steps[ends[:-1]] = starts[1:] - (starts[:-1] + lengths[:-1]) + 1
    return np.cumsum(steps)


def token_positions(token_offsets: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token row numbers of the documents in ``slots`` and, for each, the index into ``slots``.

    >>> token_positions(np.array([0, 2, 5, 6]), np.array([2, 0]))
    (array([5, 0, 1]), array([0, 1, 1]))
    """
    starts = token_offsets[slots]
    lengths = token_offsets[slots + 1] - starts
    return range_positions(starts, lengths), np.repeat(np.arange(len(slots)), lengths)


class _GrowingArray:
    """An append-only array. Every view it hands out stays valid: appends write past the end of
    earlier views, and outgrowing the buffer copies into a new one (earlier views keep the old)."""

    def __init__(self, first: np.ndarray) -> None:
        self._buffer = first.copy()
        self._length = len(first)

    def __len__(self) -> int:
        return self._length

    def extend(self, values: np.ndarray) -> np.ndarray:
        """Append ``values``; return a view of everything appended so far."""
        end = self._length + len(values)
        if end > len(self._buffer):
            grown = np.empty((max(end, 2 * len(self._buffer)), *self._buffer.shape[1:]), self._buffer.dtype)
            grown[: self._length] = self._buffer[: self._length]
            self._buffer = grown
        self._buffer[self._length : end] = values
        self._length = end
        return self._buffer[:end]


class DocumentCache:
    """Thread-safe revision-keyed cache of encoded documents with a byte budget.

    An insert's per-token work is proportional to the inserted documents, not to the cache (only
    the per-document ids and revision order are redone): token arrays grow in place (searches keep
    reading their own snapshot), and the new documents get their own inverted list. Lists are
    merged while the newer of the last two is at least half the size of the older, so a cache of
    ``n`` (document, centroid) pairs holds about ``log2(n)`` of them and every pair is re-listed
    ``O(log n)`` times.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._arrays: dict[str, _GrowingArray] = {}
        self._snapshot = CachedDocuments(_empty_batch())
        self.epoch = 0
        """Counts the times the cache was emptied: what it held before an epoch may be gone since."""

    def lookup(self, revisions: np.ndarray) -> tuple[CachedDocuments, np.ndarray]:
        """The current snapshot and the slot of each revision in it (-1 where not cached)."""
        snapshot = self._snapshot
        return snapshot, snapshot.slots(revisions)

    def fits(self, batch: DocumentBatch) -> bool:
        """Whether ``batch`` can be added without dropping what is cached."""
        return self._snapshot.nbytes + cached_bytes(batch) <= self._max_bytes

    def insert(self, batch: DocumentBatch) -> None:
        """Add fetched documents; when over budget, the old entries are dropped first."""
        with self._lock:
            new = np.flatnonzero(self._snapshot.slots(batch.revisions) < 0)
            if not len(new):
                return
            fresh = subset_batch(batch, new)
            if self._snapshot.nbytes + cached_bytes(fresh) > self._max_bytes:
                self._reset()
            self._snapshot = self._appended(fresh)

    def clear(self) -> None:
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        self._arrays = {}
        self._snapshot = CachedDocuments(_empty_batch())
        self.epoch += 1

    def _appended(self, fresh: DocumentBatch) -> CachedDocuments:
        """A snapshot of the cached documents followed by ``fresh``."""
        cached = self._snapshot.batch
        if not self._arrays:
            self._arrays = {
                "revisions": _GrowingArray(cached.revisions),
                "token_offsets": _GrowingArray(cached.token_offsets),
                "centroid_ids": _GrowingArray(fresh.centroid_ids[:0]),
                "residuals": _GrowingArray(fresh.residuals[:0]),
                "inverse_norms": _GrowingArray(_unknown_norms(0)),
                "distinct_offsets": _GrowingArray(np.zeros(1, np.int64)),
                "distinct_centroids": _GrowingArray(fresh.centroid_ids[:0]),
            }
        first_slot = len(cached)
        batch = DocumentBatch(
            ids=cached.ids + fresh.ids,
            revisions=self._arrays["revisions"].extend(fresh.revisions),
            token_offsets=self._arrays["token_offsets"].extend(fresh.token_offsets[1:] + cached.token_offsets[-1]),
            centroid_ids=self._arrays["centroid_ids"].extend(fresh.centroid_ids),
            residuals=self._arrays["residuals"].extend(fresh.residuals),
            texts=cached.texts + (fresh.texts or [None] * len(fresh)),
            metadata=cached.metadata + (fresh.metadata or [{}] * len(fresh)),
        )
        offsets, centroids = fresh.distinct_centroids()
        listed = self._arrays["distinct_centroids"]
        distinct_offsets = self._arrays["distinct_offsets"].extend(offsets[1:] + len(listed))
        distinct = listed.extend(centroids)
        lists = [*self._snapshot.inverted_lists, InvertedList.build(distinct_offsets, distinct, first_slot, len(batch))]
        while len(lists) > 1 and 2 * len(lists[-1].slots) >= len(lists[-2].slots):
            merged = InvertedList.build(distinct_offsets, distinct, lists[-2].first_slot, lists[-1].end_slot)
            lists[-2:] = [merged]
        inverse_norms = self._arrays["inverse_norms"].extend(_unknown_norms(len(fresh.centroid_ids)))
        return CachedDocuments(batch, tuple(lists), inverse_norms, distinct_offsets, distinct)


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
