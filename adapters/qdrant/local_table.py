"""Candidate lookups for qdrant-client's local mode, which has no payload indexes.

Local mode tests ``MatchAny`` point by point in Python and deep-copies every payload it returns, so a
centroid lookup over a whole collection costs a full scan. A :class:`LocalTable` answers it from numpy
instead. A Qdrant server (or Qdrant Edge) answers from its integer payload index and needs none.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from colbert_store.centroid_lists import range_positions


class LocalTable:
    """Point ids, revisions and distinct centroids of one local-mode collection, in numpy.

    Built from one scroll and dropped by every write to the collection through any store on the same
    client (writes and reads of a local client hold its lock), so it always matches the collection.
    Centroid lookups use an inverted list: ``(centroid, row)`` pairs sorted by centroid.
    """

    def __init__(self, records: Sequence[Any]) -> None:
        self.point_ids = [str(record.id) for record in records]
        self.revisions = np.fromiter((record.payload["rev"] for record in records), np.int64, len(records))
        lists = [record.payload["centroids"] for record in records]
        lengths = np.fromiter(map(len, lists), np.int64, len(lists))
        flat = np.fromiter(itertools.chain.from_iterable(lists), np.int64, int(lengths.sum()))
        order = np.argsort(flat, kind="stable")
        self._centroids = flat[order]
        self._rows = np.repeat(np.arange(len(lists), dtype=np.int64), lengths)[order]
        self._revision_order = np.argsort(self.revisions, kind="stable")
        self._sorted_revisions = self.revisions[self._revision_order]

    def holding_any(self, probes: np.ndarray) -> np.ndarray:
        """Sorted rows of the documents holding any of the (sorted, distinct) ``probes``.

        >>> from types import SimpleNamespace as Point
        >>> table = LocalTable([Point(id=i, payload={"rev": i, "centroids": c})
        ...                     for i, c in enumerate([[3, 5], [5], [7]])])
        >>> table.holding_any(np.array([5])).tolist(), table.holding_any(np.array([3, 7, 9])).tolist()
        ([0, 1], [0, 2])
        """
        starts = np.searchsorted(self._centroids, probes, side="left")
        lengths = np.searchsorted(self._centroids, probes, side="right") - starts
        return np.unique(self._rows[range_positions(starts, lengths)])

    def point_ids_of(self, revisions: np.ndarray) -> list[str]:
        """Point ids of the stored documents with these revisions (the others are left out)."""
        if not len(self.revisions):
            return []
        at = np.searchsorted(self._sorted_revisions, revisions).clip(max=len(self.revisions) - 1)
        found = self._sorted_revisions[at] == revisions
        return [self.point_ids[i] for i in self._revision_order[at[found]].tolist()]
