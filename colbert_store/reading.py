"""What a search reads of an index: candidates and their centroid lists, for the approximate stages, and
the finalists' encoded documents, for exact scoring.

The store stays the source of truth. Candidates and their lists come from the store's index, or from
memory while the store can say cheaply that its documents have not changed (a data version): from the
document cache when it holds every live document, or from the centroid map
(:mod:`colbert_store.centroid_map`) when the live documents do not fit the cache. Either answers only
for a store version whose set of live revisions it has read from the store; with a metadata filter the
store still evaluates the filter. The live set is read again when the version changes or the cache
drops documents. Until the cache holds it all, each search also reads the next :data:`FILL_DOCUMENTS` live
documents into it, so a cold process answers its first search at once and its cache still comes to
hold the whole index (``Index.warm`` fills it at once). Once they look too many for the cache, a
background thread brings the map up to date instead, at each new version, while searches ask the store.

Where memory cannot answer yet, an unfiltered search reads the store's posting lists instead, if it keeps
some built at the current version (:meth:`Store.posting_holders`; LanceDB's ``optimize`` writes them): the
lists of the centroids the pruned stage counts, and then its survivors whole. A process that has read
nothing yet answers its first search so, without reading the live set first; that is read after the search.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from colbert_store.cache import CachedDocuments, DocumentCache, cached_bytes, subset_batch
from colbert_store.centroid_lists import CentroidLists
from colbert_store.centroid_map import CentroidMap
from colbert_store.filters import Filter
from colbert_store.storage import PostingHolders, Store, concatenated_batches

logger = logging.getLogger(__name__)

FILL_DOCUMENTS = 256
"""Live documents an unfiltered search reads into the cache, besides its finalists, until it holds them all."""


@dataclass(frozen=True)
class _Live:
    """The revisions stored at one store version and whether, as of a cache epoch, the cache holds them
    all; ``filled``: how many of them, in order, have been read into the cache, or ``None`` once filling
    is over; ``mapped``: once filling found them too many for the cache (``uncacheable``), the centroid
    map's lists covering them (``None`` until the background update lands).
    """

    version: int
    revisions: np.ndarray  # sorted
    epoch: int
    filled: int | None
    cached: bool
    uncacheable: bool = False
    mapped: CentroidLists | None = None
    alive: np.ndarray | None = None  # over the map's slots: which hold one of ``revisions``


class DocumentSource:
    """One index's documents as the search pipeline reads them (see the module docstring)."""

    def __init__(self, store: Store, name: str, cache: DocumentCache) -> None:
        self.store = store
        self.name = name
        self.cache = cache
        self._map = CentroidMap(store, name, cache.max_bytes)
        self._live: _Live | None = None
        self._refresh_lock = threading.Lock()
        self._mapping = False  # a thread is updating the map (guarded by the refresh lock)
        self._reading_live = threading.Lock()  # held while a thread reads the live set
        self._live_wanted = False  # a search answered from postings: read the live set after it
        self._postings: tuple[int, PostingHolders | None] | None = None  # (data version, the postings answering it)
        self._pinned = threading.local()  # .live: the live set this thread's searches use (one_version)

    def candidate_lists(self, centroid_ids: np.ndarray | None, where: Filter | None) -> tuple[CentroidLists, np.ndarray]:
        """Slots, in centroid lists that the approximate stages read, of the documents holding one of
        ``centroid_ids`` (``None``: any) and matching ``where`` (see the module docstring for whose lists)."""
        return self._candidate_lists(self._current(posted=False)[0], centroid_ids, where)

    def candidates_or_postings(
        self, centroid_ids: np.ndarray, where: Filter | None
    ) -> tuple[CentroidLists, np.ndarray] | PostingHolders:
        """:meth:`candidate_lists`, or where the store's posting lists answer instead (see the module
        docstring), their snapshot, to read the lists of the centroids a search needs (:meth:`posted_lists`)."""
        live, snapshot = self._current(posted=where is None)
        return snapshot if snapshot is not None else self._candidate_lists(live, centroid_ids, where)

    def _candidate_lists(
        self, live: _Live | None, centroid_ids: np.ndarray | None, where: Filter | None
    ) -> tuple[CentroidLists, np.ndarray]:
        lists = None if live is None else self._lists_of(live)
        if live is None or lists is None:
            found = CentroidLists.unlisted(*self.store.candidate_lists(self.name, centroid_ids, where))
            return found, np.arange(len(found))
        if where is not None:  # the store evaluates the filter
            slots = lists.slots(self.store.candidates(self.name, centroid_ids, where))
            return lists, slots[slots >= 0]
        if live.alive is not None:  # the map: a mask of its live entries, made once per version
            return lists, np.flatnonzero(live.alive) if centroid_ids is None else lists.slots_holding(centroid_ids, live.alive)
        if centroid_ids is None:
            slots = lists.slots(live.revisions)
            return lists, slots[slots >= 0]
        held = lists.slots_holding(centroid_ids)
        return lists, held[_contains(live.revisions, lists.revisions[held])]

    def posted_lists(
        self, snapshot: PostingHolders, centroid_ids: Mapping[int, np.ndarray]
    ) -> dict[int, CentroidLists] | None:
        """Per codec generation, the posting lists of its ``centroid_ids`` (ascending) in ``snapshot``, over
        documents numbered by position; ``None`` if the store holds another snapshot now."""
        found = self.store.postings(self.name, snapshot, centroid_ids)
        if found is None:
            return None
        return {g: CentroidLists.posted(snapshot.documents, centroid_ids[g], *lists) for g, lists in found.items()}

    def posted_documents(self, positions: np.ndarray) -> tuple[CentroidLists, np.ndarray]:
        """Read the documents at these positions of the store's posting snapshot into the cache; their slots
        in the cache's lists (those no longer stored left out)."""
        fetched = self.store.fetch_posted(self.name, positions)
        self._live_wanted = True
        self.cache.insert(fetched)
        docs, slots = self.cache.lookup(fetched.revisions)
        return docs.lists, slots[slots >= 0]

    def documents(self, revisions: np.ndarray) -> tuple[CachedDocuments, np.ndarray]:
        """Cache slots of these revisions, fetching the missing ones from the store first; revisions
        no longer stored (replaced or deleted since they were named) drop out."""
        docs, slots = self.cache.lookup(revisions, searched=True)
        missing = revisions[slots < 0]
        if len(missing):
            fetched = self.store.fetch(self.name, missing)
            if not self.cache.fits(fetched):  # the insert drops documents first: bring this call's cached ones along
                fetched = concatenated_batches([subset_batch(docs.batch, slots[slots >= 0]), fetched])
            self.cache.insert(fetched)
            docs, slots = self.cache.lookup(revisions)
        return docs, slots[slots >= 0]

    def after_search(self) -> None:
        """Start what a search put off: where postings answered it, reading the live set in the background
        (after the search, so that a process's first search has the machine to itself)."""
        if self._live_wanted:
            self._live_wanted = False
            self._read_live_in_background()

    def text_search(self, text: str, limit: int, where: Filter | None) -> tuple[np.ndarray, np.ndarray]:
        """Revisions and BM25 scores of the best ``limit`` documents for ``text`` matching ``where``,
        answered by the store's full-text engine (always the store: the cache holds no text index)."""
        return self.store.text_search(self.name, text, limit, where)

    def prepare(self) -> None:
        """Read the live set and fill the cache, or bring the centroid map up to date where the cache
        cannot hold them all, at once rather than a step per search (``Index.warm``)."""
        version = self.store.data_version(self.name)
        if version is None:
            return
        with self._refresh_lock:
            live = self._read_live(version, self._live)
            while live.filled is not None:
                live = self._fill(live)
            if live.uncacheable:
                live = self._mapped(live, self._map.covering(live.revisions))
            self._live = live

    @contextmanager
    def one_version(self, shared: _Live | None = None) -> Iterator[None]:
        """Within the block, this thread's searches read the live set of the store's version at its start
        (checked once) and, where one search's read brings new documents into memory, those of the next.
        ``shared``: the live set another thread pinned (:meth:`pinned_live`), for threads that answer parts
        of its batch at its version."""
        if getattr(self._pinned, "active", False):
            yield
            return
        self._pinned.active, self._pinned.live = True, shared
        try:
            yield
        finally:
            self._pinned.active, self._pinned.live = False, None

    def pinned_live(self) -> _Live | None:
        """Inside :meth:`one_version`, the live set this thread's searches read (the store's version is
        checked now if no search has yet); ``None`` where the store has no cheap version."""
        return self._current(posted=False)[0]

    def _lists_of(self, live: _Live) -> CentroidLists | None:
        """The lists that answer for ``live`` from memory, if any."""
        if live.cached:
            docs, _ = self.cache.lookup(live.revisions[:0])  # the current snapshot
            # Unless it dropped documents since the live set was read, it holds every one of them.
            return docs.lists if self.cache.epoch == live.epoch else None
        return live.mapped

    def _current(self, posted: bool) -> tuple[_Live | None, PostingHolders | None]:
        """The live set of the store's current version, after reading the next live documents into the
        cache if it does not hold them all yet (see the module docstring); ``None`` when the store has no
        cheap version. With ``posted``, also the store's posting lists where they answer that version and
        nothing in memory does; a live set not read yet is then read in the background."""
        if getattr(self._pinned, "active", False) and self._pinned.live is not None:
            live = self._live  # the version pinned, as the latest fill or map update left it
            return (live if live is not None and live.version == self._pinned.live.version else self._pinned.live), None
        version = self.store.data_version(self.name)
        if version is None:
            return None, None
        live = self._live
        if (live is None or live.version != version) and posted and (snapshot := self._postings_at(version)) is not None:
            return None, snapshot  # the live set is read after the search (after_search)
        # The map does not depend on what the cache holds: only a cached live set is read again when documents are dropped.
        if live is None or live.version != version or (live.epoch != self.cache.epoch and not live.uncacheable):
            with self._refresh_lock:
                live = self._live = self._read_live(version, live)
        if not live.cached and live.filled is not None and self._refresh_lock.acquire(blocking=False):
            try:  # one search at a time fills; the others go on without waiting
                if self._live is live:
                    live = self._live = self._fill(live)
            finally:
                self._refresh_lock.release()
        if live.uncacheable and live.mapped is None:
            self._update_map_in_background()
        if getattr(self._pinned, "active", False):
            self._pinned.live = live
        answers = posted and self._lists_of(live) is None
        return live, self._postings_at(version) if answers else None

    def _postings_at(self, version: int) -> PostingHolders | None:
        """The store's posting lists if they were built at ``version`` (asked once per version)."""
        checked = self._postings
        if checked is None or checked[0] != version:
            snapshot = self.store.posting_holders(self.name)
            checked = self._postings = (version, snapshot if snapshot is not None and snapshot.version == version else None)
        return checked[1]

    def _read_live_in_background(self) -> None:
        """Start a thread reading the live set of the store's version, unless one runs or it is read."""
        if not self._reading_live.acquire(blocking=False):
            return

        def read() -> None:
            try:
                version = self.store.data_version(self.name)
                with self._refresh_lock:
                    if version is not None and (self._live is None or self._live.version != version):
                        self._live = self._read_live(version, self._live)
            except Exception:
                logger.warning("could not read the live documents of index %r; the next search will", self.name, exc_info=True)
            finally:
                self._reading_live.release()

        threading.Thread(target=read, name="colbert-store-live-set").start()

    def _read_live(self, version: int, earlier: _Live | None) -> _Live:
        """The revisions the store holds now (labelled ``version``: a later write makes the next version
        check read them again) and whether the cache holds them all; an index found too large for the
        cache at the ``earlier`` version goes on with the centroid map."""
        epoch = self.cache.epoch
        revisions = self.store.candidates(self.name, None, None)
        if len(revisions) and not (revisions[1:] >= revisions[:-1]).all():  # a store may answer them sorted
            revisions = np.sort(revisions)
        if earlier is not None and earlier.uncacheable:
            return _Live(version, revisions, epoch, None, cached=False, uncacheable=True)
        _, slots = self.cache.lookup(revisions)
        return _Live(version, revisions, epoch, 0, cached=bool((slots >= 0).all()) and self.cache.epoch == epoch)

    def _fill(self, live: _Live) -> _Live:
        """``live`` after reading its next :data:`FILL_DOCUMENTS` revisions into the cache (those it lacks),
        or marked ``uncacheable`` once they look too many for the cache."""
        assert live.filled is not None
        chunk = live.revisions[live.filled : live.filled + FILL_DOCUMENTS]
        _, slots = self.cache.lookup(chunk)
        if (slots < 0).any():
            fetched = self.store.fetch(self.name, chunk[slots < 0])
            expected_bytes = cached_bytes(fetched) / max(len(fetched), 1) * len(live.revisions)
            if not self.cache.fits(fetched) or expected_bytes > self.cache.max_bytes:
                return replace(live, filled=None, uncacheable=True)
            self.cache.insert(fetched)
        filled = live.filled + len(chunk)
        if filled < len(live.revisions):
            return replace(live, filled=filled)
        _, slots = self.cache.lookup(live.revisions)  # all read: one whole check, then no more filling
        return replace(live, filled=None, cached=bool((slots >= 0).all()) and self.cache.epoch == live.epoch)

    def _update_map_in_background(self) -> None:
        """Start the thread that brings the centroid map up to the current live set, unless it runs."""
        with self._refresh_lock:
            if self._mapping:
                return
            self._mapping = True
        # Not a daemon: an exit waits for its store reads rather than tearing them down mid-call.
        threading.Thread(target=self._update_map, name="colbert-store-centroid-map").start()

    def _update_map(self) -> None:
        """Bring the map up to date with each new live set until one is covered (then the thread ends)."""
        while True:
            with self._refresh_lock:
                live = self._live
                if live is None or not live.uncacheable or live.mapped is not None:
                    self._mapping = False
                    return
            try:
                lists = self._map.covering(live.revisions)
            except Exception:
                logger.warning("could not read the centroid lists of index %r; searches ask the store", self.name, exc_info=True)
                with self._refresh_lock:
                    self._mapping = False
                return
            with self._refresh_lock:
                if self._live is live:
                    self._live = self._mapped(live, lists)

    @staticmethod
    def _mapped(live: _Live, lists: CentroidLists | None) -> _Live:
        """``live`` with the map's lists, or no longer ``uncacheable`` where they do not fit either (the
        store answers; the next version tries filling again)."""
        if lists is None:
            return replace(live, uncacheable=False)
        alive = np.zeros(len(lists), dtype=bool)
        slots = lists.slots(live.revisions)
        alive[slots[slots >= 0]] = True
        return replace(live, mapped=lists, alive=alive)


def _contains(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` is in ``sorted_values``."""
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    at = np.searchsorted(sorted_values, values).clip(max=len(sorted_values) - 1)
    return sorted_values[at] == values
