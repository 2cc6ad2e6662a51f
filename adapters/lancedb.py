"""LanceDB backend: one table per index plus a catalogue table for headers, on disk or object storage.

Layout of an index's documents table (``<name>__docs`` when created; a retrained index's table is
the one its retraining built, named in the catalogue's ``docs`` column):

=============  =====================  ===================================================
column         type                   role
=============  =====================  ===================================================
id             string (BTree index)   the caller's document id
rev            int64 (BTree index)    unique per write; lets caches tell versions apart
centroids      list<int64>            distinct centroid ids; LabelList index = candidate lookup
codes          binary                 per-token centroid ids (uint16/uint32, little endian)
residuals      binary                 per-token packed residuals
n_tokens       int32                  token count
sq_error       float64                quantization error: sum over tokens of |vector - decoded|^2
text           string                 optional text
metadata       string                 the metadata dict as JSON (exact round trip)
m_<n>          int64/float64/...      one typed column per scalar metadata field, for filters
=============  =====================  ===================================================

Metadata columns get generated names; the original key is kept in the column's field metadata, so
user keys never appear in SQL. Filter values are rendered as escaped literals.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import warnings
import weakref
from collections.abc import Iterator, Sequence
from datetime import timedelta
from os import PathLike
from typing import Any

import numpy as np
import pyarrow as pa

from colbert_store._optional import require
from colbert_store.adapters._lancedb_sql import MetadataColumn, render_filter, sql_string
from colbert_store.errors import IndexExistsError, IndexNotFoundError, InvalidInputError
from colbert_store.filters import Filter
from colbert_store.storage import DocumentBatch, IndexHeader, Store

_CATALOGUE = "_colbert_store_catalogue"
_KEY_METADATA = b"colbert_store.key"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_IN_LIST_CHUNK = 4096
_REINDEX_FRACTION = 0.1
# ``lancedb.connect`` arguments that ``lancedb.connect_async`` takes too (see ``_AsyncReads``).
_ASYNC_CONNECT_ARGUMENTS = frozenset(
    {"api_key", "region", "host_override", "read_consistency_interval", "client_config", "storage_options", "session"}
)

_BASE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("rev", pa.int64(), nullable=False),
        pa.field("centroids", pa.list_(pa.int64())),
        pa.field("codes", pa.binary()),
        pa.field("residuals", pa.binary()),
        pa.field("n_tokens", pa.int32()),
        pa.field("sq_error", pa.float64()),
        pa.field("text", pa.string()),
        pa.field("metadata", pa.string()),
    ]
)
_CATALOGUE_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("manifest", pa.string()),
        pa.field("codec", pa.binary()),
        pa.field("docs", pa.string()),
    ]
)
_ARROW_TYPES = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}


class LanceDBStore(Store):
    """colbert-store on LanceDB.

    Args:
        uri_or_connection: a local folder, an object-store URI (``s3://...``, passed to LanceDB as is)
            or an existing ``lancedb.DBConnection``.
        **connect_kwargs: forwarded to ``lancedb.connect`` (e.g. ``storage_options``); not allowed
            together with a connection. A path opened here reads the latest committed version on
            every query (``read_consistency_interval=0``), so other processes' writes are seen.

    A store that opens its own connection also opens one through LanceDB's async API for the
    per-search candidate query (about 1–2 ms faster, see ``_AsyncReads``); with a connection
    passed in, every query goes through that connection. :meth:`close` releases the second one.
    """

    def __init__(self, uri_or_connection: str | PathLike[str] | Any, **connect_kwargs: Any) -> None:
        lancedb = require("lancedb", "lancedb")
        self._reads: _AsyncReads | None = None
        if isinstance(uri_or_connection, (str, PathLike)):
            connect_kwargs.setdefault("read_consistency_interval", timedelta(0))
            self._db = lancedb.connect(uri_or_connection, **connect_kwargs)
            if set(connect_kwargs) <= _ASYNC_CONNECT_ARGUMENTS:
                self._reads = _AsyncReads(lancedb.connect_async(uri_or_connection, **connect_kwargs))
        elif connect_kwargs:
            raise TypeError(f"unexpected keyword arguments with a connection: {sorted(connect_kwargs)}")
        else:
            self._db = uri_or_connection
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
        _check_name(name)
        with self._lock:
            if name in self.list_indexes():
                raise IndexExistsError(name)
            self._db.create_table(_docs_table(name), schema=_BASE_SCHEMA, mode="overwrite")
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
            columns = self._metadata_columns(table, batch.metadata)
            data = _batch_to_arrow(batch, columns)
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
        listed = None
        if centroid_ids is not None:
            listed = f"array_has_any(centroids, [{', '.join(str(int(c)) for c in np.unique(centroid_ids))}])"
        reads = self._reads  # read once: close() may run meanwhile
        if reads is not None:
            revisions = reads.revisions(table.name, listed, where)
        else:
            query = table.search().select(["rev"]).limit(None)
            condition = _condition(listed, where, table.schema if where is not None else None)
            revisions = (query.where(condition) if condition else query).to_arrow().column("rev")
        return revisions.to_numpy().astype(np.int64, copy=False)

    def fetch(self, name: str, revisions: np.ndarray) -> DocumentBatch:
        table = self._table(name)
        parts = []
        for start in range(0, len(revisions), _IN_LIST_CHUNK):
            chunk = revisions[start : start + _IN_LIST_CHUNK]
            listed = ", ".join(str(int(r)) for r in chunk)
            parts.append(table.search().where(f"rev IN ({listed})").select(_STORED_COLUMNS).limit(None).to_arrow())
        return _arrow_to_batch(pa.concat_tables(parts) if parts else _BASE_SCHEMA.empty_table())

    def scan(self, name: str, batch_size: int = 1024) -> Iterator[DocumentBatch]:
        reader = self._table(name).search().select(_STORED_COLUMNS).limit(None).to_batches(batch_size)
        for record_batch in reader:
            if record_batch.num_rows:
                yield _arrow_to_batch(pa.Table.from_batches([record_batch]))

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
        _check_name(name)
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

    def _metadata_columns(self, table: Any, metadata: list[dict[str, Any]]) -> dict[str, MetadataColumn]:
        """Typed filter columns for every scalar metadata field, adding columns for new fields."""
        columns = _existing_metadata_columns(table.schema)
        new_fields = []
        for position, entry in enumerate(metadata):
            for key, value in entry.items():
                kind = _scalar_kind(value)
                if kind is None:
                    continue
                column = columns.get(key)
                if column is None:
                    column = columns[key] = MetadataColumn(f"m_{len(columns)}", kind)
                    new_fields.append(pa.field(column.name, _ARROW_TYPES[kind], metadata={_KEY_METADATA: key}))
                elif not _kind_fits(kind, column.kind):
                    raise InvalidInputError(
                        f"metadata[{position}][{key!r}] is {type(value).__name__} {value!r}, but field {key!r} "
                        f"holds {column.kind} values in this index"
                    )
        if new_fields:
            table.add_columns(new_fields)
        return columns

    def _refresh_indexes(self, table: Any) -> None:
        """Build the scalar indexes on first data, and rebuild them once unindexed rows pass a tenth.

        A rebuild reads only the small indexed columns. ``table.optimize()`` would fold the new rows
        in too, but it also compacts the data files, rewriting every packed residual each time: at
        3·10^6 synthetic tokens that took adds from 30 to 55 s and their peak memory from 1,242 to
        1,707 MiB. Compaction is left to :meth:`optimize`.
        """
        lancedb_index = require("lancedb.index", "lancedb")
        if table.list_indices():
            stats = table.index_stats("centroids_idx")
            if stats is None or stats.num_unindexed_rows <= _REINDEX_FRACTION * stats.num_indexed_rows:
                return
        table.create_index("centroids", config=lancedb_index.LabelList(), replace=True)
        table.create_index("id", config=lancedb_index.BTree(), replace=True)
        table.create_index("rev", config=lancedb_index.BTree(), replace=True)


_STORED_COLUMNS = ["id", "rev", "codes", "residuals", "n_tokens", "sq_error", "text", "metadata"]


class _AsyncReads:
    """The candidate query through LanceDB's async API, on an event loop thread of its own.

    LanceDB's sync query builder runs each step on its background event loop: a query for one
    column takes five or six hops there (three reads of the table schema, the query, one per
    result batch), 1–2 ms of a 15 ms search on two cores. Here a query is one hop.
    """

    def __init__(self, connecting: Any) -> None:
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=_serve, args=(self._loop,), name="colbert-store-lancedb", daemon=True).start()
        # Once nothing uses this object (its store closed or dropped), the loop and its thread end.
        weakref.finalize(self, self._loop.call_soon_threadsafe, self._loop.stop)
        self._db = self._run(connecting)
        self._tables: dict[str, Any] = {}  # used on the loop's thread only

    def revisions(self, table_name: str, listed: str | None, where: Filter | None) -> pa.ChunkedArray:
        """The ``rev`` column of the rows of ``table_name`` meeting ``listed`` and ``where``."""
        return self._run(self._revisions(table_name, listed, where))

    def forget(self, table_name: str) -> None:
        """Close the handle of ``table_name``; the next query opens the table again."""
        self._run(self._forget(table_name))

    async def _revisions(self, table_name: str, listed: str | None, where: Filter | None) -> pa.ChunkedArray:
        table = self._tables.get(table_name)
        if table is None:
            table = self._tables[table_name] = await self._db.open_table(table_name)
        condition = _condition(listed, where, await table.schema() if where is not None else None)
        query = table.query().select(["rev"])
        return (await (query.where(condition) if condition else query).to_arrow()).column("rev")

    async def _forget(self, table_name: str) -> None:
        table = self._tables.pop(table_name, None)
        if table is not None:
            table.close()

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    try:
        loop.run_forever()
    finally:
        loop.close()


def _condition(listed: str | None, where: Filter | None, schema: pa.Schema | None) -> str | None:
    """The SQL predicate of a candidate query: the centroid condition and the rendered filter (which
    needs the table's ``schema`` for its metadata columns)."""
    conditions = [] if listed is None else [listed]
    if where is not None:
        assert schema is not None
        conditions.append(f"({render_filter(where, _existing_metadata_columns(schema))}) IS TRUE")
    return " AND ".join(conditions) or None


def _docs_table(name: str) -> str:
    return f"{name}__docs"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise InvalidInputError(
            f"index name must be 1-64 letters, digits, '_' or '-', starting with a letter or digit; got {name!r}"
        )


def _scalar_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return None


def _kind_fits(kind: str, column_kind: str) -> bool:
    return kind == column_kind or (kind == "int" and column_kind == "float")


def _existing_metadata_columns(schema: pa.Schema) -> dict[str, MetadataColumn]:
    columns = {}
    for arrow_field in schema:
        key = (arrow_field.metadata or {}).get(_KEY_METADATA)
        if key is not None:
            kind = next(k for k, t in _ARROW_TYPES.items() if t == arrow_field.type)
            columns[key.decode()] = MetadataColumn(arrow_field.name, kind)
    return columns


def _binary_from_numpy(flat: np.ndarray, byte_offsets: np.ndarray) -> pa.Array:
    """A binary array over ``flat`` split at ``byte_offsets``, without a Python loop per row."""
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(byte_offsets) - 1, [None, pa.py_buffer(byte_offsets.astype(np.int64)), pa.py_buffer(flat)]
    ).cast(pa.binary())


def _numpy_from_binary(column: pa.ChunkedArray) -> np.ndarray:
    """All bytes of a binary column, concatenated, as uint8."""
    array = column.combine_chunks().cast(pa.large_binary())
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8) if array.buffers()[2] is not None else np.empty(0, np.uint8)
    return data[offsets[0] : offsets[-1]]


def _batch_to_arrow(batch: DocumentBatch, columns: dict[str, MetadataColumn]) -> pa.Table:
    n_tokens = np.diff(batch.token_offsets)
    centroid_offsets, centroid_values = batch.distinct_centroids()
    code_bytes = batch.centroid_ids.dtype.itemsize
    residual_bytes = batch.residuals.shape[1]
    data: dict[str, Any] = {
        "id": pa.array(batch.ids, pa.string()),
        "rev": pa.array(batch.revisions, pa.int64()),
        "centroids": pa.ListArray.from_arrays(pa.array(centroid_offsets.astype(np.int32)), pa.array(centroid_values)),
        "codes": _binary_from_numpy(
            np.ascontiguousarray(batch.centroid_ids.astype(batch.centroid_ids.dtype.newbyteorder("<"))).view(np.uint8),
            batch.token_offsets * code_bytes,
        ),
        "residuals": _binary_from_numpy(np.ascontiguousarray(batch.residuals).ravel(), batch.token_offsets * residual_bytes),
        "n_tokens": pa.array(n_tokens.astype(np.int32)),
        "sq_error": pa.nulls(len(batch), pa.float64()) if batch.sq_errors is None else pa.array(batch.sq_errors),
        "text": pa.array(batch.texts or [None] * len(batch), pa.string()),
        "metadata": pa.array([json.dumps(m, sort_keys=True) for m in batch.metadata or [{}] * len(batch)], pa.string()),
    }
    for key, column in columns.items():
        values = [entry.get(key) if _scalar_kind(entry.get(key)) else None for entry in batch.metadata or [{}] * len(batch)]
        data[column.name] = pa.array(values, _ARROW_TYPES[column.kind])
    return pa.table(data)


def _arrow_to_batch(table: pa.Table) -> DocumentBatch:
    n_tokens = table.column("n_tokens").to_numpy().astype(np.int64)
    token_offsets = np.concatenate([[0], np.cumsum(n_tokens)]).astype(np.int64)
    total = int(token_offsets[-1])
    codes = _numpy_from_binary(table.column("codes"))
    residuals = _numpy_from_binary(table.column("residuals"))
    code_dtype = np.dtype("<u2") if total == 0 or len(codes) == 2 * total else np.dtype("<u4")
    residual_bytes = len(residuals) // total if total else 0
    return DocumentBatch(
        ids=table.column("id").to_pylist(),
        revisions=table.column("rev").to_numpy().astype(np.int64),
        token_offsets=token_offsets,
        centroid_ids=codes.view(code_dtype).astype(code_dtype.newbyteorder("=")),
        residuals=residuals.reshape(total, residual_bytes),
        texts=table.column("text").to_pylist(),
        metadata=[json.loads(m) for m in table.column("metadata").to_pylist()],
        sq_errors=table.column("sq_error").to_numpy(zero_copy_only=False).astype(np.float64),
    )
