"""Per-centroid posting lists of an index's documents, in a table beside them that
``LanceDBStore.optimize`` rewrites: what a process that has read nothing of the index yet answers its
first searches from, reading the lists of the centroids a query needs rather than every candidate's.

The table ``<documents table>__postings`` holds one row per codec generation and centroid held: how many
documents hold it and their positions (``int32``, as bytes: 4 bytes a document and centroid), the
positions being where a scan of one version of the documents table returns them; every row names that
version and how many documents it holds. One overwrite writes the table, so a reader sees one snapshot
whole. A search uses the lists only while the documents table is still at that version, so they name
exactly the stored documents, and reads its candidates at those positions (Lance's ``take_offsets``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa

from colbert_store.adapters.lancedb.filters import sql_integers
from colbert_store.adapters.lancedb.records import (
    STORED_COLUMNS,
    arrow_to_batch,
    binary_from_numpy,
    centroid_lists_of,
    numpy_from_binary,
)
from colbert_store.adapters.lancedb.retries import retrying
from colbert_store.centroid_lists import InvertedList, range_positions, token_positions
from colbert_store.storage import DocumentBatch, PostingHolders, revision_generations

_SCHEMA = pa.schema(
    [
        ("version", pa.int64()),
        ("documents", pa.int64()),
        ("generation", pa.int32()),
        ("centroid", pa.int32()),
        ("holders", pa.int64()),
        ("positions", pa.large_binary()),
    ]
)
_KEY = np.dtype("<i4")  # as the inverted lists of :mod:`colbert_store.centroid_lists` number documents


def postings_table(docs: str) -> str:
    """The name of the postings table of documents table ``docs``."""
    return f"{docs}__postings"


def write_postings(db: Any, docs: str, cleanup_older_than: timedelta | None) -> None:
    """Rewrite the postings of documents table ``docs`` from its latest version (read pinned to it), then
    delete their versions older than ``cleanup_older_than`` (LanceDB's default when ``None``)."""
    table = db.open_table(docs)
    version = int(table.version)
    table.checkout(version)
    rows = table.search().select(["rev", "centroids"]).limit(None).to_arrow()  # in position order
    if rows.num_rows > np.iinfo(_KEY).max:
        raise ValueError(f"{docs!r} holds {rows.num_rows} documents: more than posting lists of int32 positions can name")
    revisions, offsets, centroids = centroid_lists_of(rows)
    generations = revision_generations(revisions)
    parts = [_generation_rows(version, g, np.flatnonzero(generations == g), offsets, centroids) for g in np.unique(generations)]
    snapshot = pa.concat_tables([_SCHEMA.empty_table(), *parts])
    retrying(partial(_replace, db, postings_table(docs), snapshot), f"writing the posting lists of {docs!r}")
    db.open_table(postings_table(docs)).optimize(cleanup_older_than=cleanup_older_than)


def _generation_rows(version: int, generation: int, members: np.ndarray, offsets: np.ndarray, centroids: np.ndarray) -> pa.Table:
    """The rows of one generation's documents (at positions ``members``): one per centroid they hold."""
    n_documents = len(offsets) - 1
    if len(members) < n_documents:  # a retrain is under way: this generation's lists alone
        positions, _ = token_positions(offsets, members)
        offsets, centroids = np.concatenate([[0], np.cumsum(np.diff(offsets)[members])]), centroids[positions]
    inverted = InvertedList.build(offsets, centroids, 0, len(members))
    holders = np.diff(inverted.offsets)
    held = np.flatnonzero(holders)  # each held centroid's holders follow the previous one's in ``inverted.slots``
    positions = members[inverted.slots].astype(_KEY)
    lists = binary_from_numpy(positions.view(np.uint8), np.append(inverted.offsets[held], inverted.offsets[-1]) * _KEY.itemsize)
    return pa.table(
        {
            "version": pa.array(np.full(len(held), version, np.int64)),
            "documents": pa.array(np.full(len(held), n_documents, np.int64)),
            "generation": pa.array(np.full(len(held), generation, np.int32)),
            "centroid": pa.array(held.astype(np.int32)),
            "holders": pa.array(holders[held].astype(np.int64)),
            "positions": lists,
        },
        schema=_SCHEMA,
    )


def _replace(db: Any, name: str, data: pa.Table) -> None:
    """Write table ``name`` anew with ``data`` (created where absent: an overwrite of none logs a warning)."""
    if name in db.list_tables().tables:
        db.create_table(name, data, mode="overwrite")
        return
    try:
        db.create_table(name, data, mode="create")
    except ValueError as error:  # another process created it meanwhile
        if "already exists" not in str(error):
            raise
        db.create_table(name, data, mode="overwrite")


def posting_holders(db: Any, docs: str) -> PostingHolders | None:
    """The holder counts of the postings of ``docs``, if it has any."""
    name = postings_table(docs)
    if name not in db.list_tables().tables:
        return None
    table = db.open_table(name)
    if table.schema != _SCHEMA:  # written by another release of colbert-store: set aside until rewritten
        return None
    rows = table.search().select(["version", "documents", "generation", "centroid", "holders"]).limit(None).to_arrow()
    if not rows.num_rows:
        return None
    versions = rows.column("version").to_numpy()
    if (versions != versions[0]).any():  # not one snapshot: never written so, but a reader should not trust it
        return None
    generation = rows.column("generation").to_numpy()
    centroid = rows.column("centroid").to_numpy()
    count = rows.column("holders").to_numpy()
    holders = {}
    for g in np.unique(generation):
        mine = generation == g
        holders[int(g)] = np.zeros(int(centroid[mine].max()) + 1, np.int64)
        holders[int(g)][centroid[mine]] = count[mine]
    return PostingHolders(int(versions[0]), int(rows.column("documents")[0].as_py()), holders)


def read_postings(
    db: Any, docs: str, snapshot: PostingHolders, centroid_ids: Mapping[int, np.ndarray]
) -> dict[int, tuple[np.ndarray, np.ndarray]] | None:
    """The posting lists of ``centroid_ids`` per generation, or ``None`` if the table holds another snapshot now."""
    wanted = {g: np.asarray(c, np.int64) for g, c in centroid_ids.items() if len(c)}
    if not wanted:
        return {}
    predicate = " OR ".join(f"(generation = {int(g)} AND centroid IN ({sql_integers(c)}))" for g, c in wanted.items())
    query = db.open_table(postings_table(docs)).search().where(predicate)
    found = query.select(["version", "generation", "centroid", "positions"]).limit(None).to_arrow()
    if (found.column("version").to_numpy() != snapshot.version).any():
        return None
    generation = found.column("generation").to_numpy()
    centroid = found.column("centroid").to_numpy()
    data, byte_offsets = numpy_from_binary(found.column("positions"))
    held_positions, row_offsets = data.view(_KEY), byte_offsets // _KEY.itemsize
    answer = {}
    for g, asked in wanted.items():
        mine = np.flatnonzero(generation == g)
        mine = mine[np.argsort(centroid[mine])]
        at = np.searchsorted(centroid[mine], asked).clip(max=max(len(mine) - 1, 0))
        held = centroid[mine][at] == asked if len(mine) else np.zeros(len(asked), bool)
        rows_of = mine[at[held]]  # the row of each asked centroid with holders, in the order asked
        lengths = np.zeros(len(asked), np.int64)
        lengths[held] = row_offsets[rows_of + 1] - row_offsets[rows_of]
        positions = held_positions[range_positions(row_offsets[rows_of], lengths[held])]
        answer[g] = (np.concatenate([[0], np.cumsum(lengths)]), positions)
    return answer


def fetch_posted(table: Any, positions: np.ndarray) -> DocumentBatch:
    """The documents at these positions of ``table``'s latest version."""
    return arrow_to_batch(table.take_offsets(np.asarray(positions, np.int64).tolist()).select(STORED_COLUMNS).to_arrow())
