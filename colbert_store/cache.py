"""An in-memory cache of stored documents keyed by revision, so searches skip most store reads.

A revision is unique to one write of one document: replacing a document gives it a new revision
and deleting it removes it from the store's candidate answers. The cache therefore never serves a
stale document; the store stays the source of truth. When full, it keeps the documents that searches
found in it since it was last full (the most recently found first, up to half its budget) and drops the
rest: what a search needs again survives, and the copy an eviction makes is no larger than that.

Besides the encoded documents, the cache remembers each token's renormalisation factor once a
search has needed it, so exact scoring of a cached document decodes no vectors (see
:meth:`CachedDocuments.inverse_norms`).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

import numpy as np

from colbert_store.centroid_lists import CentroidLists, GrowingArray, GrowingLists, token_positions
from colbert_store.codec import ResidualCodec
from colbert_store.storage import DocumentBatch

_NORM_BYTES = np.dtype(np.float32).itemsize
_DOCUMENT_BYTES = 16  # a distinct-centroid offset and a hit time
DEFAULT_CACHE_BYTES = 1 << 30
"""Memory an index's cached documents may take (``Index.open(..., cache_bytes=...)``)."""


@dataclass(frozen=True)
class CachedDocuments:
    """A snapshot of the cache: the documents, their centroid lists, per token the memo of
    :meth:`inverse_norms` (NaN where not computed yet) and per document when a search last found it
    in the cache (0: never); the memo and those times are the parts that change."""

    batch: DocumentBatch
    lists: CentroidLists
    known_inverse_norms: np.ndarray
    last_hit: np.ndarray

    @classmethod
    def of(cls, batch: DocumentBatch) -> CachedDocuments:
        """A snapshot holding ``batch`` alone."""
        lists = CentroidLists.of(batch.revisions, *batch.distinct_centroids())
        return cls(batch, lists, _unknown_norms(len(batch.centroid_ids)), np.zeros(len(batch), np.int64))

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


@dataclass(frozen=True)
class CacheInfo:
    """An index's document cache (``Index.cache_info()``): what it holds, and what searches asked of it
    since the index was opened.

    Attributes:
        documents: documents held.
        bytes: their size as the budget counts it (about 40 bytes per token at 128 dimensions, nbits=2).
        max_bytes: the budget (``cache_bytes``).
        hits: finalists that searches found in the cache.
        misses: finalists read from the store instead.
        evictions: times the cache was full and dropped documents.
    """

    documents: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int


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
        self._clock = itertools.count(1)
        self._last_eviction = 0  # the clock's reading then
        self._counts_lock = threading.Lock()
        self._hits = self._misses = self._evictions = 0
        self.epoch = 0
        """Counts the times documents were dropped: what the cache held before an epoch may be gone since."""

    def lookup(self, revisions: np.ndarray, searched: bool = False) -> tuple[CachedDocuments, np.ndarray]:
        """The current snapshot and the slot of each revision in it (-1 where not cached); ``searched``: a
        search asks for these documents, and those found count as hits, which a full cache keeps."""
        snapshot = self._snapshot
        slots = snapshot.slots(revisions)
        if searched:
            found = slots[slots >= 0]
            snapshot.last_hit[found] = next(self._clock)
            with self._counts_lock:
                self._hits += len(found)
                self._misses += len(slots) - len(found)
        return snapshot, slots

    def info(self) -> CacheInfo:
        """What the cache holds and how searches used it."""
        snapshot = self._snapshot
        with self._counts_lock:
            return CacheInfo(len(snapshot.batch), snapshot.nbytes, self._max_bytes, self._hits, self._misses, self._evictions)

    def fits(self, batch: DocumentBatch) -> bool:
        """Whether ``batch`` can be added without dropping what is cached."""
        return self._snapshot.nbytes + cached_bytes(batch) <= self._max_bytes

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def insert(self, batch: DocumentBatch) -> None:
        """Add documents; when over budget, first drop all but the documents hit since the last eviction,
        the most recent first, up to half the budget (less where ``batch`` needs more room). ``batch`` is
        then cached whole, even beyond the budget, so that a search's documents stay together."""
        with self._lock:
            fresh = self._uncached(batch)
            if not len(fresh):
                return
            if self._snapshot.nbytes + cached_bytes(fresh) > self._max_bytes:
                self._keep_recent_hits(min(self._max_bytes // 2, self._max_bytes - cached_bytes(fresh)))
                fresh = self._uncached(batch)
            self._snapshot = self._appended(fresh)

    def clear(self) -> None:
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        self._arrays = {}
        self._lists = GrowingLists()
        self._snapshot = CachedDocuments.of(_empty_batch())
        self.epoch += 1

    def _uncached(self, batch: DocumentBatch) -> DocumentBatch:
        return subset_batch(batch, np.flatnonzero(self._snapshot.slots(batch.revisions) < 0))

    def _keep_recent_hits(self, budget: int) -> None:
        """Drop every document but those hit since the last eviction, the most recent first, as many as fit
        ``budget`` bytes together (the kept ones get new slots, and keep their distinct centroid ids,
        remembered norms and hit times)."""
        docs = self._snapshot
        hit = np.flatnonzero(docs.last_hit > self._last_eviction)
        self._last_eviction = next(self._clock)
        with self._counts_lock:
            self._evictions += 1
        recent_first = hit[np.argsort(-docs.last_hit[hit], kind="stable")]
        kept = np.sort(recent_first[np.cumsum(_document_bytes(docs.batch)[recent_first]) <= budget])
        positions, _ = token_positions(docs.batch.token_offsets, kept)
        centroids, _ = docs.lists.distinct_centroids_of(kept)
        distinct_offsets = np.concatenate([[0], np.cumsum(np.diff(docs.lists.offsets)[kept])])
        carried = _Carried((distinct_offsets, centroids), docs.known_inverse_norms[positions], docs.last_hit[kept])
        survivors = subset_batch(docs.batch, kept)
        self._reset()
        if len(kept):
            self._snapshot = self._appended(survivors, carried)

    def _appended(self, fresh: DocumentBatch, carried: _Carried | None = None) -> CachedDocuments:
        """A snapshot of the cached documents followed by ``fresh`` (new to the cache, unless ``carried``)."""
        cached = self._snapshot.batch
        if not self._arrays:
            self._arrays = {
                "token_offsets": GrowingArray(cached.token_offsets),
                "centroid_ids": GrowingArray(fresh.centroid_ids[:0]),
                "residuals": GrowingArray(fresh.residuals[:0]),
                "inverse_norms": GrowingArray(_unknown_norms(0)),
                "last_hit": GrowingArray(np.zeros(0, np.int64)),
            }
        if carried is None:
            carried = _Carried(
                fresh.distinct_centroids(), _unknown_norms(len(fresh.centroid_ids)), np.zeros(len(fresh), np.int64)
            )
        lists = self._lists.append(fresh.revisions, *carried.distinct)
        batch = DocumentBatch(
            ids=cached.ids + fresh.ids,
            revisions=lists.revisions,
            token_offsets=self._arrays["token_offsets"].extend(fresh.token_offsets[1:] + cached.token_offsets[-1]),
            centroid_ids=self._arrays["centroid_ids"].extend(fresh.centroid_ids),
            residuals=self._arrays["residuals"].extend(fresh.residuals),
            texts=cached.texts + (fresh.texts or [None] * len(fresh)),
            metadata=cached.metadata + (fresh.metadata or [{}] * len(fresh)),
        )
        inverse_norms = self._arrays["inverse_norms"].extend(carried.known_inverse_norms)
        return CachedDocuments(batch, lists, inverse_norms, self._arrays["last_hit"].extend(carried.last_hit))


@dataclass(frozen=True)
class _Carried:
    """What the cache holds beside a batch's own arrays, for documents being appended: their distinct
    centroid ids (offsets, ids), remembered inverse norms and hit times (unknown and none for documents new
    to the cache; carried over for those kept through an eviction)."""

    distinct: tuple[np.ndarray, np.ndarray]
    known_inverse_norms: np.ndarray
    last_hit: np.ndarray


def cached_bytes(batch: DocumentBatch) -> int:
    """Bytes the cache counts for ``batch``: its codes and residuals, a remembered norm per token, and
    each document's distinct centroid ids (counted as if every token's were distinct), their offset and
    when it was last hit."""
    return int(len(batch.centroid_ids) * _token_bytes(batch) + _DOCUMENT_BYTES * len(batch))


def _document_bytes(batch: DocumentBatch) -> np.ndarray:
    """:func:`cached_bytes` of each document of ``batch``."""
    return np.diff(batch.token_offsets) * _token_bytes(batch) + _DOCUMENT_BYTES


def _token_bytes(batch: DocumentBatch) -> int:
    return 2 * batch.centroid_ids.itemsize + batch.residuals.shape[1] + _NORM_BYTES


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
