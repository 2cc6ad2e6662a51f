"""What a search reads of an index: candidate revisions, from the store's index or, while the store can
say cheaply that its documents have not changed, from the document cache's inverted lists; and the
candidates' encoded documents, from the cache (fetched from the store first where missing).

The store stays the source of truth: the cache answers only for a store version whose set of live
revisions it has read from the store, and only when every live document is cached; a search with a
metadata filter always asks the store, which evaluates the filter. A search never fetches more than
its own candidates: the cache fills as searches go (or all at once by ``Index.warm``), and the live set
is read again when the version changes, or when the cache has come to hold as many documents as it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from colbert_store.cache import CachedDocuments, DocumentCache
from colbert_store.filters import Filter
from colbert_store.storage import Store


@dataclass(frozen=True)
class _Live:
    """The revisions stored at one store version and whether, as of a cache epoch, the cache holds them
    all (while it does not, the store answers every search of that version); ``held``: how many
    documents the cache held when that was checked."""

    version: int
    revisions: np.ndarray  # sorted
    epoch: int
    held: int
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
        """The live set of the store's current version if the cache holds all of it (read again when the
        version changed, the cache was emptied, or it may now hold them all); ``None`` when the store has
        no cheap version or the cache does not hold every live document."""
        version = self.store.data_version(self.name)
        if version is None:
            return None
        live = self._live
        if live is None or live.version != version or live.epoch != self.cache.epoch or self._may_hold_all(live):
            with self._refresh_lock:
                live = self._live = self._read_live(version)
        return live if live.cached else None

    def _may_hold_all(self, live: _Live) -> bool:
        """Whether the cache, not holding every live document when last checked, has grown to as many."""
        held = self.cache.size
        return not live.cached and held != live.held and held >= len(live.revisions)

    def _read_live(self, version: int) -> _Live:
        """The revisions the store holds now (labelled ``version``: a later write makes the next version
        check read them again) and whether the cache holds them all; nothing is fetched."""
        epoch, held = self.cache.epoch, self.cache.size
        revisions = np.sort(self.store.candidates(self.name, None, None))
        _, slots = self.cache.lookup(revisions)
        return _Live(version, revisions, epoch, held, cached=bool((slots >= 0).all()) and self.cache.epoch == epoch)


def _contains(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` is in ``sorted_values``."""
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    at = np.searchsorted(sorted_values, values).clip(max=len(sorted_values) - 1)
    return sorted_values[at] == values
