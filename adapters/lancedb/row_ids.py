"""Reading documents by Lance row id: where each revision was when the store last read the whole live set.

A fetch of a search's finalists by ``rev IN (...)`` spends much of its time in the ``rev`` B-tree; taking the
rows by id skips it. An id found this way may be stale: a deleted or replaced document's row is gone from
the table, and compaction moves rows to new ids (Lance never reuses a fragment's ids), so a take returns
only rows still stored. Each row taken is kept only if it holds one of the revisions asked for, and the
revisions it did not return are looked up by ``rev`` as before: the answer is what ``rev IN`` would give.
The ids take 16 bytes a document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

ROW_ID = "_rowid"
"""The column LanceDB adds to a query's rows ``with_row_id``."""


@dataclass(frozen=True)
class RowIds:
    """Row id of each revision of one documents table, as of one read (immutable: replaced whole)."""

    revisions: np.ndarray  # int64, sorted
    row_ids: np.ndarray  # uint64, in the order of ``revisions``

    @classmethod
    def of(cls, rows: pa.Table) -> RowIds:
        """The ids in ``rows``, which hold the ``rev`` and ``_rowid`` columns."""
        revisions = rows.column("rev").to_numpy().astype(np.int64, copy=False)
        order = np.argsort(revisions)
        by_revision = revisions[order]
        by_revision.flags.writeable = False  # handed to callers of the live-set read as well
        return cls(by_revision, rows.column(ROW_ID).to_numpy()[order])

    def take(self, table: Any, revisions: np.ndarray, columns: Sequence[str]) -> tuple[pa.Table | None, np.ndarray]:
        """``columns`` (``rev`` among them) of the rows still holding these revisions at the ids known for
        them (``None`` if no id is known), and the revisions this read did not return (unknown ids, or rows
        deleted or moved since)."""
        if not len(self.revisions):
            return None, revisions
        at = np.searchsorted(self.revisions, revisions).clip(max=len(self.revisions) - 1)
        known = self.revisions[at] == revisions
        if not known.any():
            return None, revisions
        taken = table.take_row_ids(self.row_ids[at[known]].tolist()).select(list(columns)).to_arrow()
        held = taken.column("rev").to_numpy().astype(np.int64, copy=False)
        kept = np.isin(held, revisions) & _first_occurrences(held)
        return taken.filter(pa.array(kept)), np.setdiff1d(revisions, held[kept])


def _first_occurrences(values: np.ndarray) -> np.ndarray:
    """Whether each value is the first of its kind in ``values``."""
    first = np.zeros(len(values), dtype=bool)
    first[np.unique(values, return_index=True)[1]] = True
    return first
