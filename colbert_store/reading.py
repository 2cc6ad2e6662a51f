"""What a search reads of an index: candidate revisions, from the store's index or, while the store can
say cheaply that its documents have not changed, from the document cache's inverted lists; and the
candidates' encoded documents, from the cache (fetched from the store first where missing).

The store stays the source of truth: the cache answers only for a store version whose set of live
revisions it has read from the store, and only when every live document is cached; a search with a
metadata filter always asks the store, which evaluates the filter. The live set is read again when the
version changes or the cache is emptied. Until the cache holds it all, each unfiltered search also
reads the next :data:`FILL_DOCUMENTS` live documents into it (while they fit), so a cold process
answers its first search at once and its cache still comes to hold the whole index (``Index.warm``
fills it at once).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import numpy as np

from colbert_store.cache import CachedDocuments, DocumentCache
from colbert_store.filters import Filter
from colbert_store.storage import Store

FILL_DOCUMENTS = 256
"""Live documents an unfiltered search reads into the cache, besides its candidates, until it holds them all."""


@dataclass(frozen=True)
class _Live:
    """The revisions stored at one store version and whether, as of a cache epoch, the cache holds them
    all (while it does not, the store answers the searches of that version); ``filled``: how many of
    them, in order, have been read into the cache, or ``None`` once filling is over (all read, or they
    cannot all fit)."""

    version: int
    revisions: np.ndarray  # sorted
    epoch: int
    filled: int | None
    cached: bool


class DocumentSource:
    """One index's documents as the search pipeline reads them (see the module docstring)."""

    def __init__(self, store: Store, name: str, cache: DocumentCache) -> None:
        self.store = store
        self.name = name
        self.cache = cache
        self._live: _Live | None = None
        self._refresh_lock = threading.Lock()

    def documents(self, revisions: np.ndarray) -> tuple[CachedDocuments, np.ndarray]:
        """Cache slots of these revisions, fetching the missing ones from the store first; revisions
        no longer stored (replaced or deleted since they were named) drop out."""
        docs, slots = self.cache.lookup(revisions)
        missing = revisions[slots < 0]
        if len(missing):
            self.cache.insert(self.store.fetch(self.name, missing))
            docs, slots = self.cache.lookup(revisions)
        return docs, slots[slots >= 0]

    def text_search(self, text: str, limit: int, where: Filter | None) -> tuple[np.ndarray, np.ndarray]:
        """Revisions and BM25 scores of the best ``limit`` documents for ``text`` matching ``where``,
        answered by the store's full-text engine (always the store: the cache holds no text index)."""
        return self.store.text_search(self.name, text, limit, where)

    def candidates(self, centroid_ids: np.ndarray, where: Filter | None) -> np.ndarray:
        """Revisions of the documents holding any of ``centroid_ids`` and matching ``where``."""
        live = self._current() if where is None else None
        if live is not None:
            docs, _ = self.cache.lookup(live.revisions[:0])  # the current snapshot
            if self.cache.epoch == live.epoch:  # not emptied since the live set was read: it holds every one
                held = docs.batch.revisions[docs.slots_holding(centroid_ids)]
                return held[_contains(live.revisions, held)]
        return self.store.candidates(self.name, centroid_ids, where)

    def everything(self, where: Filter | None) -> np.ndarray:
        """Revisions of every document matching ``where``."""
        live = self._current() if where is None else None
        return self.store.candidates(self.name, None, where) if live is None else live.revisions

    def _current(self) -> _Live | None:
        """The live set of the store's current version if the cache holds all of it, after reading the
        next live documents into the cache if it does not (see the module docstring); ``None`` when the
        store has no cheap version or the cache does not hold every live document yet."""
        version = self.store.data_version(self.name)
        if version is None:
            return None
        live = self._live
        if live is None or live.version != version or live.epoch != self.cache.epoch:
            with self._refresh_lock:
                live = self._live = self._read_live(version)
        if not live.cached and live.filled is not None and self._refresh_lock.acquire(blocking=False):
            try:  # one search at a time fills; the others go on without waiting
                if self._live is live:
                    live = self._live = self._fill(live)
            finally:
                self._refresh_lock.release()
        return live if live.cached else None

    def _read_live(self, version: int) -> _Live:
        """The revisions the store holds now (labelled ``version``: a later write makes the next version
        check read them again) and whether the cache holds them all."""
        epoch = self.cache.epoch
        revisions = np.sort(self.store.candidates(self.name, None, None))
        _, slots = self.cache.lookup(revisions)
        return _Live(version, revisions, epoch, 0, cached=bool((slots >= 0).all()) and self.cache.epoch == epoch)

    def _fill(self, live: _Live) -> _Live:
        """``live`` after reading its next :data:`FILL_DOCUMENTS` revisions into the cache (those it lacks)."""
        assert live.filled is not None
        chunk = live.revisions[live.filled : live.filled + FILL_DOCUMENTS]
        _, slots = self.cache.lookup(chunk)
        if (slots < 0).any():
            fetched = self.store.fetch(self.name, chunk[slots < 0])
            if not self.cache.fits(fetched):
                return replace(live, filled=None)
            self.cache.insert(fetched)
        filled = live.filled + len(chunk)
        if filled < len(live.revisions):
            return replace(live, filled=filled)
        _, slots = self.cache.lookup(live.revisions)  # all read: one whole check, then no more filling
        return replace(live, filled=None, cached=bool((slots >= 0).all()) and self.cache.epoch == live.epoch)


def _contains(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` is in ``sorted_values``."""
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    at = np.searchsorted(sorted_values, values).clip(max=len(sorted_values) - 1)
    return sorted_values[at] == values
