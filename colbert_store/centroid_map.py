"""Every live document's distinct centroid ids, in memory, for an index too large for the document cache.

With the map, candidate generation and the approximate stages of a search run in memory, and a
search reads from the store only the few finalists it scores exactly (and the version check), where
it would otherwise fetch every candidate whole. The map costs about 12 bytes per (document,
centroid) pair, a fraction of the documents' codes and residuals.
"""

from __future__ import annotations

import threading

import numpy as np

from colbert_store.centroid_lists import CentroidLists, GrowingLists
from colbert_store.storage import Store

REBUILD_STALE_SHARE = 0.5
"""A map whose entries are more than this share replaced or deleted documents is read anew."""


class CentroidMap:
    """The centroid lists of one index's stored documents, brought up to date one store version at a time.

    Thread-safe (updates take turns); the snapshots it returns never change.
    """

    def __init__(self, store: Store, name: str, max_bytes: int) -> None:
        self._store = store
        self._name = name
        self._max_bytes = max_bytes
        self._lists = GrowingLists()
        self._lock = threading.Lock()

    def covering(self, live: np.ndarray) -> CentroidLists | None:
        """Lists holding every one of the ``live`` revisions (and perhaps documents replaced or deleted
        since, which callers leave out by ``live``), reading from the store only the lists it lacks;
        ``None`` when they do not fit the byte budget."""
        with self._lock:
            return self._covering(live)

    def _covering(self, live: np.ndarray) -> CentroidLists | None:
        held = self._lists.snapshot
        missing = live[held.slots(live) < 0]
        stale = len(held) - (len(live) - len(missing))
        if not len(held) or stale > REBUILD_STALE_SHARE * len(held) or len(missing) > len(live) // 2:
            self._lists = GrowingLists()  # read all at once: cheaper than most of them by revision
            self._append(None)
        elif len(missing):
            self._append(missing)
        lists = self._lists.snapshot
        if lists.nbytes > self._max_bytes:
            self._lists = GrowingLists()
            return None
        return lists

    def _append(self, revisions: np.ndarray | None) -> None:
        found, offsets, centroids = self._store.centroid_lists(self._name, revisions)
        self._lists.append(found, offsets, centroids.astype(np.uint32, copy=False))  # one type across codecs
