"""Each document's distinct centroid ids and the inverted lists over them: all that candidate generation
and the approximate stages of a search read (the exact stage reads the documents themselves)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse


@dataclass(frozen=True)
class InvertedList:
    """Centroid -> documents for the slots ``first_slot`` up to ``end_slot``: ``slots[offsets[c]:offsets[c + 1]]``
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
        centroid ids (:meth:`DocumentBatch.distinct_centroids`): the transpose of that sparse
        document x centroid matrix, which scipy builds in linear time with each centroid's documents
        in slot order."""
        start, end = distinct_offsets[first_slot], distinct_offsets[end_slot]
        centroids = distinct_centroids[start:end]
        n_columns = int(centroids.max()) + 1 if len(centroids) else 1
        documents = scipy.sparse.csr_matrix(
            (np.ones(len(centroids), np.bool_), centroids, distinct_offsets[first_slot : end_slot + 1] - start),
            shape=(end_slot - first_slot, n_columns),
        )
        by_centroid = documents.tocsc()
        return cls(first_slot, end_slot, by_centroid.indptr, by_centroid.indices + np.int32(first_slot))

    def holder_counts(self, centroids: np.ndarray) -> np.ndarray:
        """How many listed documents hold each of ``centroids``."""
        last = len(self.offsets) - 1
        return self.offsets[np.minimum(centroids + 1, last)] - self.offsets[np.minimum(centroids, last)]

    def holding(self, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (slot, centroid) pair of a listed document holding one of ``centroids``."""
        last = len(self.offsets) - 1  # centroids past the largest listed id hold nothing
        starts = self.offsets[np.minimum(centroids, last)]
        lengths = self.offsets[np.minimum(centroids + 1, last)] - starts
        return self.slots[range_positions(starts, lengths)], np.repeat(centroids, lengths)


@dataclass(frozen=True)
class CentroidLists:
    """Documents numbered by slot: their revisions, each one's distinct centroid ids, ascending
    (``centroids[offsets[s]:offsets[s + 1]]`` for slot ``s``), and inverted lists covering every slot,
    or none (:meth:`unlisted`: the lists of one search's candidates, read through once)."""

    revisions: np.ndarray
    offsets: np.ndarray
    centroids: np.ndarray
    inverted_lists: tuple[InvertedList, ...]

    @cached_property
    def order(self) -> np.ndarray:
        """Slots in revision order (what :meth:`slots` searches; made at its first call)."""
        return np.argsort(self.revisions, kind="stable")

    @cached_property
    def sorted_revisions(self) -> np.ndarray:
        return self.revisions[self.order]

    @classmethod
    def of(cls, revisions: np.ndarray, offsets: np.ndarray, centroids: np.ndarray) -> CentroidLists:
        """The lists of these documents, with one inverted list over all of them."""
        return cls(revisions, offsets, centroids, (InvertedList.build(offsets, centroids, 0, len(revisions)),))

    @classmethod
    def posted(cls, documents: int, centroid_ids: np.ndarray, offsets: np.ndarray, positions: np.ndarray) -> CentroidLists:
        """The posting lists of some centroids (a store's, :meth:`Store.postings`) over ``documents`` documents
        numbered by position (slot = position; ``revisions`` holds the positions): the holders of
        ``centroid_ids[i]`` (ascending) are ``positions[offsets[i]:offsets[i + 1]]``. Inverted lists alone,
        what PLAID's stage 2 reads; every other centroid holds none."""
        lengths = np.zeros(int(centroid_ids.max(initial=-1)) + 2, np.int64)
        lengths[centroid_ids + 1] = np.diff(offsets)
        inverted = InvertedList(0, documents, np.cumsum(lengths), positions)
        no_forward_lists = np.broadcast_to(np.int64(0), documents + 1)  # every document's range empty, in no memory
        return cls(np.arange(documents, dtype=np.int64), no_forward_lists, np.empty(0, np.int32), (inverted,))

    @classmethod
    def unlisted(cls, revisions: np.ndarray, offsets: np.ndarray, centroids: np.ndarray) -> CentroidLists:
        """The lists of these documents without inverted lists: lookups scan them."""
        return cls(revisions, offsets, centroids, ())

    def __len__(self) -> int:
        return len(self.revisions)

    @property
    def nbytes(self) -> int:
        """Memory held: the per-document arrays and, per (document, centroid) pair, its id and inverted-list slot."""
        listed = sum(inverted.slots.nbytes + inverted.offsets.nbytes for inverted in self.inverted_lists)
        return int(self.revisions.nbytes * 3 + self.offsets.nbytes + self.centroids.nbytes + listed)

    def slots(self, revisions: np.ndarray) -> np.ndarray:
        """Slot of each revision, -1 where absent."""
        if not len(self.sorted_revisions):
            return np.full(len(revisions), -1, dtype=np.int64)
        position = np.searchsorted(self.sorted_revisions, revisions).clip(max=len(self.sorted_revisions) - 1)
        found = self.sorted_revisions[position] == revisions
        return np.where(found, self.order[position], -1)

    def holder_counts(self, centroids: np.ndarray) -> np.ndarray:
        """How many documents hold each of ``centroids`` (of all, or of the lists a scan would read)."""
        if not self.inverted_lists:
            counts = np.bincount(self.centroids, minlength=int(centroids.max(initial=0)) + 1)
            return counts[centroids]
        return np.sum([inverted.holder_counts(centroids) for inverted in self.inverted_lists], axis=0)

    def slots_holding(self, centroids: np.ndarray, among: np.ndarray | None = None) -> np.ndarray:
        """The slots (ascending, each once) of the documents holding one of ``centroids`` (and, given a
        mask over all the slots, marked in ``among``)."""
        marked = np.zeros(len(self), dtype=bool)
        if not self.inverted_lists:
            marked[self._scanned_pairs(centroids, np.arange(len(self)))[0]] = True
        for inverted in self.inverted_lists:
            marked[inverted.holding(centroids)[0]] = True
        return np.flatnonzero(marked if among is None else marked & among)

    def pairs_among(self, centroids: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (row, centroid) pair, once, where the document in ``slots[row]`` holds one of ``centroids``."""
        if not self.inverted_lists:
            return self._scanned_pairs(centroids, slots)
        row_of_slot = np.full(len(self), -1, dtype=np.int64)
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

    def _scanned_pairs(self, centroids: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`pairs_among` by reading through the lists of ``slots``."""
        held, rows = self.distinct_centroids_of(slots)
        wanted = np.zeros(max(int(held.max(initial=0)), int(centroids.max(initial=0))) + 1, dtype=bool)
        wanted[centroids] = True
        kept = np.flatnonzero(wanted[held])
        return rows.take(kept), held.take(kept).astype(np.int64)

    def distinct_centroids_of(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The distinct centroid ids of the documents in ``slots``, concatenated, and for each the index into ``slots``."""
        positions, owner = token_positions(self.offsets, slots)
        return self.centroids[positions], owner


class GrowingLists:
    """Append-only :class:`CentroidLists`. An append's work is proportional to the appended documents
    (only the revision order is redone): arrays grow in place, and the new documents get their own
    inverted list. Lists are merged while the newer of the last two is at least half the size of the
    older, so ``n`` (document, centroid) pairs are held in about ``log2(n)`` lists and every pair is
    re-listed ``O(log n)`` times. Snapshots stay valid after later appends; the owner serialises appends.
    """

    def __init__(self) -> None:
        self.snapshot = CentroidLists.of(np.empty(0, np.int64), np.zeros(1, np.int64), np.empty(0, np.uint16))
        self._revisions = GrowingArray(self.snapshot.revisions)
        self._offsets = GrowingArray(self.snapshot.offsets)
        self._centroids: GrowingArray | None = None  # typed by the first append

    def append(self, revisions: np.ndarray, offsets: np.ndarray, centroids: np.ndarray) -> CentroidLists:
        """Add documents (their revisions, and distinct centroid ids as ``offsets``/``centroids``); the new snapshot."""
        if self._centroids is None:
            self._centroids = GrowingArray(centroids[:0])
        held = self.snapshot
        first_slot = len(held)
        listed = self._centroids.extend(centroids)
        all_offsets = self._offsets.extend(offsets[1:] + held.offsets[-1])
        all_revisions = self._revisions.extend(revisions)
        held_lists = [inverted for inverted in held.inverted_lists if inverted.end_slot > inverted.first_slot]
        lists = [*held_lists, InvertedList.build(all_offsets, listed, first_slot, len(all_revisions))]
        while len(lists) > 1 and 2 * len(lists[-1].slots) >= len(lists[-2].slots):
            lists[-2:] = [InvertedList.build(all_offsets, listed, lists[-2].first_slot, lists[-1].end_slot)]
        self.snapshot = CentroidLists(all_revisions, all_offsets, listed, tuple(lists))
        return self.snapshot


class GrowingArray:
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


def range_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``range(start, start + length)`` for each pair, concatenated (int64).

    >>> range_positions(np.array([5, 9, 0]), np.array([1, 0, 2]))
    array([5, 0, 1])
    """
    ends = np.cumsum(lengths)
    # Output position p of a range is p shifted by (its start - the position its first value lands at).
    shifts = np.repeat(starts - (ends - lengths), lengths)
    return np.arange(len(shifts), dtype=np.int64) + shifts


def token_positions(token_offsets: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of the ranges of ``slots`` in ``token_offsets`` and, for each, the index into ``slots``.

    >>> token_positions(np.array([0, 2, 5, 6]), np.array([2, 0]))
    (array([5, 0, 1]), array([0, 1, 1]))
    """
    starts = token_offsets[slots]
    lengths = token_offsets[slots + 1] - starts
    return range_positions(starts, lengths), np.repeat(np.arange(len(slots)), lengths)
