"""The LanceDB store: one documents table per index, plus the catalogue tables
(:mod:`colbert_store.adapters.lancedb.catalogue`), in a folder or on object storage.

An index's documents table is named ``<name>__<random>`` when the index is created, and recorded in
its catalogue row (rows: see :mod:`colbert_store.adapters.lancedb.records`). Every write is one
commit; LanceDB's retryable commit conflicts between processes are retried
(:mod:`colbert_store.adapters.lancedb.retries`).
"""

from __future__ import annotations

import threading
import uuid
import warnings
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import timedelta
from functools import partial
from os import PathLike
from typing import Any

import numpy as np
import pyarrow as pa

from colbert_store._optional import require
from colbert_store.adapters.lancedb.catalogue import Catalogue
from colbert_store.adapters.lancedb.connection import TEXT_COLUMN, connect
from colbert_store.adapters.lancedb.failures import translated
from colbert_store.adapters.lancedb.filters import condition, sql_integers, sql_string
from colbert_store.adapters.lancedb.postings import fetch_posted, posting_holders, postings_table, read_postings, write_postings
from colbert_store.adapters.lancedb.records import (
    BASE_SCHEMA,
    STORED_COLUMNS,
    arrow_to_batch,
    batch_to_arrow,
    centroid_lists_of,
    existing_metadata_columns,
    metadata_columns,
)
from colbert_store.adapters.lancedb.retries import RetryableConflict, is_retryable, retrying
from colbert_store.adapters.lancedb.row_ids import RowIds
from colbert_store.errors import IndexExistsError, IndexNotFoundError, LexicalSearchUnavailableError
from colbert_store.filters import Filter
from colbert_store.storage import DocumentBatch, PostingHolders, Store
from colbert_store.validation import check_index_name

_IN_LIST_CHUNK = 4096
_COLUMN_EXISTS = "already exists in the dataset"
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
        self._catalogue = Catalogue(self._db)
        self._tables: dict[str, Any] = {}  # index name -> its documents table
        self._text_indexed: set[str] = set()  # documents tables known to have their full-text index
        self._row_ids: dict[str, RowIds] = {}  # documents table -> its rows' ids as of the latest whole live-set read
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LanceDBStore({self.uri!r})"

    @property
    def uri(self) -> str:
        """Where the store's tables live."""
        return str(self._db.uri)

    # -- catalogue ----------------------------------------------------------------------------
    @translated
    def list_indexes(self) -> list[str]:
        return self._catalogue.names()

    @translated
    def create_index(self, name: str, manifest: dict[str, Any]) -> None:
        """Create the documents table under a fresh name, then insert the catalogue row if absent: two
        processes creating one index at once end with one index (the other raises IndexExistsError)."""
        check_index_name(name)
        if name in self._catalogue.names():
            raise IndexExistsError(name)
        docs = f"{name}__{uuid.uuid4().hex[:12]}"
        self._db.create_table(docs, schema=BASE_SCHEMA)
        if not self._catalogue.insert(name, manifest, docs):
            self._db.drop_table(docs)
            raise IndexExistsError(name)

    @translated
    def drop_index(self, name: str) -> None:
        docs = self._catalogue.entry(check_index_name(name))["docs"]
        self._catalogue.remove(name)
        with self._lock:
            self._tables.pop(name, None)
        self._forget_table(docs)
        self._db.drop_table(postings_table(docs), ignore_missing=True)
        self._db.drop_table(docs)

    @translated
    def read_manifest(self, name: str) -> dict[str, Any]:
        manifest: dict[str, Any] = self._catalogue.entry(check_index_name(name))["manifest"]
        return manifest

    @translated
    def replace_manifest(self, name: str, manifest: dict[str, Any], *, expected_version: int) -> bool:
        return self._catalogue.replace(check_index_name(name), manifest, expected_version)

    @translated
    def write_codec(self, name: str, codec_id: str, data: bytes) -> None:
        self._catalogue.write_codec(name, codec_id, data)

    @translated
    def read_codec(self, name: str, codec_id: str) -> bytes:
        return self._catalogue.read_codec(name, codec_id)

    @translated
    def delete_codecs(self, name: str, codec_ids: Collection[str]) -> None:
        self._catalogue.delete_codecs(name, codec_ids)

    # -- documents ----------------------------------------------------------------------------
    @translated
    def upsert(self, name: str, batch: DocumentBatch, *, replacing: np.ndarray | None = None) -> None:
        """One merge-insert commit on ``id`` (conditional on ``rev`` with ``replacing``), retried on conflicts.

        A document's typed metadata columns are written together with it. Another process may add a
        column (a new metadata key) between this write reading the schema and committing; the rows
        just written would then keep the replaced version's value in that column, so they are
        written again, with every column, until the schema no longer changes.
        """
        if not len(batch):
            return
        table = self._table(name)
        what = f"writing {len(batch)} documents to index {name!r}"
        first = None if replacing is None else f"target.rev IN ({sql_integers(replacing)})"
        own = f"target.rev IN ({sql_integers(batch.revisions)})"
        with self._lock:
            columns = retrying(partial(self._metadata_columns, table, batch), what)
            retrying(partial(_merge, table, batch_to_arrow(batch, columns), first), what)
            while (later := existing_metadata_columns(table.schema)).keys() != columns.keys():
                columns = later
                retrying(partial(_merge, table, batch_to_arrow(batch, columns), own), what)

    @translated
    def data_version(self, name: str) -> int:
        """The documents table's version (LanceDB commits a new one with every write), as the connection
        that answers :meth:`candidates` sees it: candidates read after this call are of that version or later."""
        table = self._table(name)
        reads = self._reads  # read once: close() may run meanwhile
        return reads.version(table.name) if reads is not None else int(table.version)

    @translated
    def settle(self, name: str) -> None:
        """Build the scalar indexes on first data, or rebuild them once unindexed rows pass a tenth
        (see :meth:`_refresh_indexes`); rows not yet indexed are still searched, more slowly."""
        table = self._table(name)
        with self._lock:
            self._refresh_indexes(table)

    @translated
    def delete(self, name: str, ids: Sequence[str]) -> None:
        table = self._table(name)
        with self._lock:
            for start in range(0, len(ids), _IN_LIST_CHUNK):
                chunk = ids[start : start + _IN_LIST_CHUNK]
                predicate = f"id IN ({', '.join(sql_string(doc_id) for doc_id in chunk)})"
                retrying(lambda predicate=predicate: table.delete(predicate), f"deleting documents of index {name!r}")

    @translated
    def count(self, name: str) -> int:
        return int(self._table(name).count_rows())

    @translated
    def candidates(self, name: str, centroid_ids: np.ndarray | None, where: Filter | None) -> np.ndarray:
        """Read through the async connection where the store has one. Asked for every document (the live
        set a search reads at each new version), it also notes their row ids, by which :meth:`fetch` then
        reads them (see :mod:`~colbert_store.adapters.lancedb.row_ids`)."""
        table = self._table(name)
        every = centroid_ids is None and where is None
        reads = self._reads  # read once: close() may run meanwhile
        if reads is not None:
            rows = reads.rows(table.name, centroid_ids, where, ["rev"], with_row_id=every)
        else:
            query = table.search().select(["rev"]).with_row_id(every).limit(None)
            predicate = condition(centroid_ids, where, table.schema if where is not None else None)
            rows = (query.where(predicate) if predicate else query).to_arrow()
        if every:
            row_ids = self._row_ids[table.name] = RowIds.of(rows)
            return row_ids.revisions  # sorted: the caller need not sort them again
        return rows.column("rev").to_numpy().astype(np.int64, copy=False)

    @translated
    def candidate_lists(
        self, name: str, centroid_ids: np.ndarray | None, where: Filter | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One query for the candidates' ``rev`` and ``centroids`` columns."""
        table = self._table(name)
        reads = self._reads  # read once: close() may run meanwhile
        if reads is not None:
            return centroid_lists_of(reads.rows(table.name, centroid_ids, where, ["rev", "centroids"]))
        query = table.search().select(["rev", "centroids"]).limit(None)
        predicate = condition(centroid_ids, where, table.schema if where is not None else None)
        return centroid_lists_of((query.where(predicate) if predicate else query).to_arrow())

    @translated
    def text_search(self, name: str, text: str, limit: int, where: Filter | None) -> tuple[np.ndarray, np.ndarray]:
        """BM25 from Lance's full-text index on ``text``, the filter applied before ranking.

        The query is a match query, tokenised like the documents and never parsed as query syntax.
        Rows written since the index was last built are searched too (unindexed rows are scanned).
        """
        table = self._table(name)
        if not self._has_text_index(table):
            raise LexicalSearchUnavailableError(
                name, "its documents table has no full-text index on the text column (built by an add, or by store.settle(name))"
            )
        reads = self._reads  # read once: close() may run meanwhile
        if reads is not None:
            found = reads.text_search(table.name, text, limit, where)
        else:
            lancedb_query = require("lancedb.query", "lancedb")
            query = table.search(lancedb_query.MatchQuery(text, TEXT_COLUMN), query_type="fts").select(["rev", "_score"])
            predicate = condition(None, where, table.schema) if where is not None else None
            found = (query.where(predicate, prefilter=True) if predicate else query).limit(limit).to_arrow()
        if not found.num_rows and self._holds_no_text(table):
            raise LexicalSearchUnavailableError(name, "its documents were stored without text")
        revisions = found.column("rev").to_numpy().astype(np.int64, copy=False)
        return revisions, found.column("_score").to_numpy().astype(np.float32, copy=False)

    @translated
    def fetch(self, name: str, revisions: np.ndarray) -> DocumentBatch:
        return arrow_to_batch(self._rows_with_revisions(self._table(name), revisions, STORED_COLUMNS))

    @translated
    def centroid_lists(self, name: str, revisions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read from the ``centroids`` column alone (a few bytes per document and centroid)."""
        table = self._table(name)
        columns = ["rev", "centroids"]
        if revisions is None:
            return centroid_lists_of(table.search().select(columns).limit(None).to_arrow())
        return centroid_lists_of(self._rows_with_revisions(table, revisions, columns))

    @translated
    def posting_holders(self, name: str) -> PostingHolders | None:
        """Read from the postings table that :meth:`optimize` writes (none before the first)."""
        return posting_holders(self._db, self._table(name).name)

    @translated
    def postings(
        self, name: str, snapshot: PostingHolders, centroid_ids: Mapping[int, np.ndarray]
    ) -> dict[int, tuple[np.ndarray, np.ndarray]] | None:
        """Positions are where a scan of the documents table at the snapshot's version returns them."""
        return read_postings(self._db, self._table(name).name, snapshot, centroid_ids)

    @translated
    def fetch_posted(self, name: str, positions: np.ndarray) -> DocumentBatch:
        return fetch_posted(self._table(name), positions)

    @translated
    def scan(self, name: str, batch_size: int = 1024) -> Iterator[DocumentBatch]:
        reader = self._table(name).search().select(STORED_COLUMNS).limit(None).to_batches(batch_size)
        for record_batch in reader:
            if record_batch.num_rows:
                yield arrow_to_batch(pa.Table.from_batches([record_batch]))

    @translated
    def size_bytes(self, name: str, columns: Sequence[str] = ("codes", "residuals")) -> int:
        """Bytes the given columns take in the latest version of the documents table."""
        table = self._table(name).search().select(list(columns)).limit(None).to_arrow()
        return int(sum(table.column(column).nbytes for column in columns))

    @translated
    def optimize(self, name: str, *, cleanup_older_than: timedelta | None = None, postings: bool = True) -> None:
        """Compact the documents table, fold new rows into its indexes, delete old versions and, with
        ``postings``, rewrite the posting lists that a process which has read nothing of the index yet
        answers its first searches from (:mod:`~colbert_store.adapters.lancedb.postings`: 4 bytes per
        document and centroid it holds, about 2 bytes a token); without, drop them.

        LanceDB keeps every version a write makes until cleaned up; this deletes those older than
        ``cleanup_older_than`` (LanceDB's default, 7 days, when ``None``), of the posting lists too. A
        reader still searching a deleted version fails, so keep the window longer than your longest search.
        """
        table = self._table(name)
        with self._lock, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*cleanup_older_than", category=UserWarning)
            table.optimize(cleanup_older_than=cleanup_older_than)
            if postings:
                write_postings(self._db, table.name, cleanup_older_than)
            else:
                self._db.drop_table(postings_table(table.name), ignore_missing=True)

    def close(self) -> None:
        """Let go of the async connection this store opened (it closes once no search uses it; the
        sync one needs no closing); later queries go through the sync connection."""
        self._reads = None

    # -- helpers ------------------------------------------------------------------------------
    def _forget_table(self, docs: str) -> None:
        """Drop the async handle and the row ids of documents table ``docs`` (dropped)."""
        self._row_ids.pop(docs, None)
        reads = self._reads
        if reads is not None:
            reads.forget(docs)

    def _table(self, name: str) -> Any:
        """The index's documents table (opened once; its name never changes while the index exists)."""
        table = self._tables.get(name)
        if table is None:
            docs = self._catalogue.entry(check_index_name(name))["docs"]
            if docs not in self._db.list_tables().tables:
                raise IndexNotFoundError(name)
            table = self._tables[name] = self._db.open_table(docs)
        return table

    def _rows_with_revisions(self, table: Any, revisions: np.ndarray, columns: Sequence[str]) -> pa.Table:
        """``columns`` (``rev`` among them) of the rows of ``table`` holding these revisions: by row id where
        the last live-set read noted one, the rest (and the rows gone from those ids) by ``rev``."""
        row_ids = self._row_ids.get(table.name)
        taken, missing = (None, revisions) if row_ids is None else row_ids.take(table, revisions, columns)
        looked_up = _rows_by_revision(table, missing, columns) if len(missing) or taken is None else None
        return pa.concat_tables([part for part in (taken, looked_up) if part is not None])

    def _has_text_index(self, table: Any) -> bool:
        """Whether the documents table has its full-text index (remembered once seen: it is only ever replaced)."""
        if table.name in self._text_indexed:
            return True
        if any(TEXT_COLUMN in index.columns and index.index_type == "FTS" for index in table.list_indices()):
            self._text_indexed.add(table.name)
            return True
        return False

    @staticmethod
    def _holds_no_text(table: Any) -> bool:
        """Whether the table holds documents but none with text."""
        return bool(table.count_rows()) and not table.count_rows(f"{TEXT_COLUMN} IS NOT NULL")

    @staticmethod
    def _metadata_columns(table: Any, batch: DocumentBatch) -> dict[str, Any]:
        """The batch's typed metadata columns, adding to the table the ones for keys it has not seen.

        Another process may have added columns since this handle read the schema (a column of the same
        name then already exists, or the commit conflicts): the handle moves to the latest version so
        that the retry reads the schema again and names its columns after the other process's.
        """
        columns, new_fields = metadata_columns(table.schema, batch)
        if new_fields:
            try:
                table.add_columns(new_fields)
            except Exception as error:
                if not (is_retryable(error) or _COLUMN_EXISTS in str(error)):
                    raise
                table.checkout_latest()
                raise RetryableConflict(str(error)) from error
        return columns

    def _refresh_indexes(self, table: Any) -> None:
        """Build each index on first data (or where missing), and rebuild it once its unindexed rows pass a tenth.

        Each rebuild leaves the replaced index files on disk until :meth:`optimize` deletes old
        versions, so indexes are refreshed once per call (:meth:`settle`), not after every batch.

        A rebuild reads only the indexed column. ``table.optimize()`` would fold the new rows in too, but
        it also compacts the data files, rewriting every packed residual on each write, which makes adds
        slower and their memory grow with the corpus. Compaction is left to :meth:`optimize`. The
        indexes only speed queries up (unindexed rows are still searched: scanned, for the full-text
        index), so a rebuild that a concurrent writer's rebuild preempts is left to that writer.
        """
        lancedb_index = require("lancedb.index", "lancedb")
        configs = {
            "centroids": lancedb_index.LabelList,
            "id": lancedb_index.BTree,
            "rev": lancedb_index.BTree,
            TEXT_COLUMN: lancedb_index.FTS,
        }
        existing = {index.columns[0]: index.name for index in table.list_indices()}
        for column, config in configs.items():
            if column in existing:
                stats = table.index_stats(existing[column])
                if stats is None or stats.num_unindexed_rows <= _REINDEX_FRACTION * stats.num_indexed_rows:
                    continue
            try:
                table.create_index(column, config=config(), replace=True)
            except Exception as error:
                if not is_retryable(error):
                    raise


def _merge(table: Any, data: pa.Table, condition: str | None) -> Any:
    """Merge-insert ``data`` on ``id``: an upsert, or with ``condition`` an update of the matching rows only.

    The join reads the ``id`` column rather than its scalar index: Lance's indexed merge path does not
    record the keys a merge inserts, so two processes inserting the same new id at once could both
    commit (two rows for one id) instead of one of them retrying as an update.
    """
    merge = table.merge_insert("id").use_index(False)
    if condition is None:
        return merge.when_matched_update_all().when_not_matched_insert_all().execute(data)
    return merge.when_matched_update_all(where=condition).execute(data)


def _rows_by_revision(table: Any, revisions: np.ndarray, columns: Sequence[str]) -> pa.Table:
    """``columns`` of the rows of ``table`` holding these revisions, in ``IN`` lists of a bounded length."""
    chunks = [revisions[start : start + _IN_LIST_CHUNK] for start in range(0, len(revisions), _IN_LIST_CHUNK)]
    query = table.search().select(list(columns)).limit(None)
    parts = [query.where(f"rev IN ({sql_integers(chunk)})").to_arrow() for chunk in chunks]
    return pa.concat_tables(parts) if parts else BASE_SCHEMA.empty_table().select(list(columns))

