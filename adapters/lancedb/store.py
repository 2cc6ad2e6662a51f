"""The LanceDB store: one documents table per index plus a catalogue table for headers, in a folder
or on object storage.

An index's documents table is ``<name>__docs`` when created; a retrained index's table is the one its
retraining built, named in the catalogue's ``docs`` column (rows: see
:mod:`colbert_store.adapters.lancedb.records`). The catalogue ``_colbert_store_catalogue`` holds one
row per index: ``name``, ``manifest`` (JSON), ``codec`` and ``docs``.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Iterator, Sequence
from datetime import timedelta
from os import PathLike
from typing import Any

import numpy as np
import pyarrow as pa

from colbert_store._optional import require
from colbert_store.adapters.lancedb.connection import connect
from colbert_store.adapters.lancedb.filters import condition, sql_string
from colbert_store.adapters.lancedb.records import (
    BASE_SCHEMA,
    STORED_COLUMNS,
    arrow_to_batch,
    batch_to_arrow,
    metadata_columns,
)
from colbert_store.errors import IndexExistsError, IndexNotFoundError
from colbert_store.filters import Filter
from colbert_store.storage import DocumentBatch, IndexHeader, Store
from colbert_store.validation import check_index_name

_CATALOGUE = "_colbert_store_catalogue"
_CATALOGUE_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("manifest", pa.string()),
        pa.field("codec", pa.binary()),
        pa.field("docs", pa.string()),
    ]
)
_IN_LIST_CHUNK = 4096
_REINDEX_FRACTION = 0.1


class LanceDBStore(Store):
    """colbert-store on LanceDB.

    Args:
        uri_or_connection: a local folder, an object-store URI (``s3://...``, passed to LanceDB as is)
            or an existing ``lancedb.DBConnection``.
        **connect_kwargs: forwarded to ``lancedb.connect`` (e.g. ``storage_options``); not allowed
            together with a connection. A path opened here reads the latest committed version on
            every query (``read_consistency_interval=0``), so other processes' writes are seen.

    A store that opens its own connection also opens one through LanceDB's async API for the
    per-search candidate query (see :class:`~colbert_store.adapters.lancedb.connection.AsyncReads`);
    with a connection passed in, every query goes through that connection. :meth:`close` releases
    the second one.
    """

    def __init__(self, uri_or_connection: str | PathLike[str] | Any, **connect_kwargs: Any) -> None:
        self._db, self._reads = connect(uri_or_connection, connect_kwargs)
        self._tables: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LanceDBStore({self._db.uri!r})"

    # -- catalogue ----------------------------------------------------------------------------
    def list_indexes(self) -> list[str]:
        catalogue = self._catalogue(create=False)
        if catalogue is None:
            return []
        return sorted(catalogue.search().select(["name"]).limit(None).to_arrow().column("name").to_pylist())

    def create_index(self, name: str, header: IndexHeader) -> None:
        check_index_name(name)
        with self._lock:
            if name in self.list_indexes():
                raise IndexExistsError(name)
            self._db.create_table(_docs_table(name), schema=BASE_SCHEMA, mode="overwrite")
            self._forget_table(_docs_table(name))
            self._write_header_row(name, header, _docs_table(name))

    def drop_index(self, name: str) -> None:
        row = self._header_row(name)
        with self._lock:
            self._catalogue(create=False).delete(f"name = {sql_string(name)}")
            self._db.drop_table(row["docs"])
            self._tables.pop(name, None)
            self._forget_table(row["docs"])

    def read_header(self, name: str) -> IndexHeader:
        row = self._header_row(name)
        with self._lock:
            if name in self._tables and self._tables[name].name != row["docs"]:  # retrained elsewhere
                self._forget_table(self._tables.pop(name).name)
        return IndexHeader(manifest=json.loads(row["manifest"]), codec=row["codec"])

    def read_manifest(self, name: str) -> dict[str, Any]:
        return json.loads(self._header_row(name, ["manifest"])["manifest"])

    def write_header(self, name: str, header: IndexHeader) -> None:
        self._write_header_row(name, header, self._header_row(name)["docs"])

    def swap_index(self, name: str, staging: str) -> None:
        old, new = self._header_row(name), self._header_row(staging)
        row = pa.table(
            {"name": [name], "manifest": [new["manifest"]], "codec": [new["codec"]], "docs": [new["docs"]]},
            schema=_CATALOGUE_SCHEMA,
        )
        with self._lock:
            # One commit: ``name`` takes the staging documents and the staging entry disappears.
            (
                self._catalogue(create=False)
                .merge_insert("name")
                .when_matched_update_all()
                .when_not_matched_by_source_delete(f"name = {sql_string(staging)}")
                .execute(row)
            )
            self._tables.pop(name, None)
            self._tables.pop(staging, None)
            self._db.drop_table(old["docs"])
            self._forget_table(old["docs"])

    # -- documents ----------------------------------------------------------------------------
    def upsert(self, name: str, batch: DocumentBatch) -> None:
        if not len(batch):
            return
        with self._lock:
            table = self._table(name)
            columns, new_fields = metadata_columns(table.schema, batch)
            if new_fields:
                table.add_columns(new_fields)
            data = batch_to_arrow(batch, columns)
            table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
            self._refresh_indexes(table)

    def delete(self, name: str, ids: Sequence[str]) -> None:
        table = self._table(name)
        with self._lock:
            for start in range(0, len(ids), _IN_LIST_CHUNK):
                chunk = ids[start : start + _IN_LIST_CHUNK]
                table.delete(f"id IN ({', '.join(sql_string(doc_id) for doc_id in chunk)})")

    def count(self, name: str) -> int:
        return int(self._table(name).count_rows())

    def candidates(self, name: str, centroid_ids: np.ndarray | None, where: Filter | None) -> np.ndarray:
        table = self._table(name)
        reads = self._reads  # read once: close() may run meanwhile
        if reads is not None:
            revisions = reads.revisions(table.name, centroid_ids, where)
        else:
            query = table.search().select(["rev"]).limit(None)
            predicate = condition(centroid_ids, where, table.schema if where is not None else None)
            revisions = (query.where(predicate) if predicate else query).to_arrow().column("rev")
        return revisions.to_numpy().astype(np.int64, copy=False)

    def fetch(self, name: str, revisions: np.ndarray) -> DocumentBatch:
        table = self._table(name)
        parts = []
        for start in range(0, len(revisions), _IN_LIST_CHUNK):
            chunk = revisions[start : start + _IN_LIST_CHUNK]
            listed = ", ".join(str(int(r)) for r in chunk)
            parts.append(table.search().where(f"rev IN ({listed})").select(STORED_COLUMNS).limit(None).to_arrow())
        return arrow_to_batch(pa.concat_tables(parts) if parts else BASE_SCHEMA.empty_table())

    def scan(self, name: str, batch_size: int = 1024) -> Iterator[DocumentBatch]:
        reader = self._table(name).search().select(STORED_COLUMNS).limit(None).to_batches(batch_size)
        for record_batch in reader:
            if record_batch.num_rows:
                yield arrow_to_batch(pa.Table.from_batches([record_batch]))

    def size_bytes(self, name: str, columns: Sequence[str] = ("codes", "residuals")) -> int:
        """Bytes the given columns take in the latest version of the documents table."""
        table = self._table(name).search().select(list(columns)).limit(None).to_arrow()
        return int(sum(table.column(column).nbytes for column in columns))

    def optimize(self, name: str, *, cleanup_older_than: timedelta | None = None) -> None:
        """Compact the documents table, fold new rows into its indexes and delete old versions.

        LanceDB keeps every version a write makes until cleaned up; this deletes those older than
        ``cleanup_older_than`` (LanceDB's default, 7 days, when ``None``). A reader still searching
        a deleted version fails, so keep the window longer than your longest search.
        """
        table = self._table(name)
        with self._lock, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*cleanup_older_than", category=UserWarning)
            table.optimize(cleanup_older_than=cleanup_older_than)

    def close(self) -> None:
        """Let go of the async connection this store opened (it closes once no search uses it; the
        sync one needs no closing); later queries go through the sync connection."""
        self._reads = None

    # -- helpers ------------------------------------------------------------------------------
    def _forget_table(self, docs: str) -> None:
        """Drop the async handle of documents table ``docs`` (dropped, replaced or superseded)."""
        reads = self._reads
        if reads is not None:
            reads.forget(docs)

    def _catalogue(self, create: bool) -> Any:
        if _CATALOGUE in self._db.list_tables().tables:
            return self._db.open_table(_CATALOGUE)
        if not create:
            return None
        return self._db.create_table(_CATALOGUE, schema=_CATALOGUE_SCHEMA, exist_ok=True)

    def _header_row(self, name: str, columns: list[str] | None = None) -> dict[str, Any]:
        check_index_name(name)
        catalogue = self._catalogue(create=False)
        query = None if catalogue is None else catalogue.search().where(f"name = {sql_string(name)}").limit(None)
        if query is not None and columns is not None:
            query = query.select(columns)
        rows = [] if query is None else query.to_arrow().to_pylist()
        if not rows:
            raise IndexNotFoundError(name)
        return rows[0]

    def _write_header_row(self, name: str, header: IndexHeader, docs: str) -> None:
        row = pa.table(
            {
                "name": [name],
                "manifest": [json.dumps(header.manifest, sort_keys=True)],
                "codec": [header.codec],
                "docs": [docs],
            },
            schema=_CATALOGUE_SCHEMA,
        )
        catalogue = self._catalogue(create=True)
        catalogue.merge_insert("name").when_matched_update_all().when_not_matched_insert_all().execute(row)

    def _table(self, name: str) -> Any:
        table = self._tables.get(name)
        if table is None:
            docs = self._header_row(name)["docs"]
            if docs not in self._db.list_tables().tables:
                raise IndexNotFoundError(name)
            table = self._tables[name] = self._db.open_table(docs)
        return table

    def _refresh_indexes(self, table: Any) -> None:
        """Build the scalar indexes on first data, and rebuild them once unindexed rows pass a tenth.

        A rebuild reads only the small indexed columns. ``table.optimize()`` would fold the new rows
        in too, but it also compacts the data files, rewriting every packed residual on each write,
        which makes adds slower and their memory grow with the corpus. Compaction is left to
        :meth:`optimize`.
        """
        lancedb_index = require("lancedb.index", "lancedb")
        if table.list_indices():
            stats = table.index_stats("centroids_idx")
            if stats is None or stats.num_unindexed_rows <= _REINDEX_FRACTION * stats.num_indexed_rows:
                return
        table.create_index("centroids", config=lancedb_index.LabelList(), replace=True)
        table.create_index("id", config=lancedb_index.BTree(), replace=True)
        table.create_index("rev", config=lancedb_index.BTree(), replace=True)



def _docs_table(name: str) -> str:
    return f"{name}__docs"
