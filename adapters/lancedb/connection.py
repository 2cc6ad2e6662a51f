"""Connection handling for the LanceDB backend: the sync connection every call uses, and a second one
through LanceDB's async API that serves the per-search candidate query in one hop."""

from __future__ import annotations

import asyncio
import threading
import weakref
from datetime import timedelta
from os import PathLike
from typing import Any

import numpy as np
import pyarrow as pa

from colbert_store._optional import require
from colbert_store.adapters.lancedb.failures import unavailable
from colbert_store.adapters.lancedb.filters import condition
from colbert_store.filters import Filter

TEXT_COLUMN = "text"
"""The documents table's text column, which the full-text index covers."""

# ``lancedb.connect`` arguments that ``lancedb.connect_async`` takes too.
_ASYNC_CONNECT_ARGUMENTS = frozenset(
    {"api_key", "region", "host_override", "read_consistency_interval", "client_config", "storage_options", "session"}
)


def connect(uri_or_connection: str | PathLike[str] | Any, connect_kwargs: dict[str, Any]) -> tuple[Any, AsyncReads | None]:
    """The sync connection, and the async reader when this store opens the connection itself.

    A path or URI is opened to read the latest committed version on every query
    (``read_consistency_interval=0``), so other processes' writes are seen.
    """
    lancedb = require("lancedb", "lancedb")
    if not isinstance(uri_or_connection, (str, PathLike)):
        if connect_kwargs:
            raise TypeError(f"unexpected keyword arguments with a connection: {sorted(connect_kwargs)}")
        return uri_or_connection, None
    connect_kwargs.setdefault("read_consistency_interval", timedelta(0))
    try:
        db = lancedb.connect(uri_or_connection, **connect_kwargs)
        reads = None
        if set(connect_kwargs) <= _ASYNC_CONNECT_ARGUMENTS:
            reads = AsyncReads(lancedb.connect_async(uri_or_connection, **connect_kwargs))
    except Exception as error:
        translation = unavailable(error, str(uri_or_connection))
        if translation is None:
            raise
        raise translation from error
    return db, reads


class AsyncReads:
    """The candidate query through LanceDB's async API, on an event loop thread of its own.

    LanceDB's sync query builder runs each step on its background event loop: a query for one
    column takes five or six hops there (three reads of the table schema, the query, one per
    result batch). Here a query is one hop.
    """

    def __init__(self, connecting: Any) -> None:
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=_serve, args=(self._loop,), name="colbert-store-lancedb", daemon=True).start()
        # Once nothing uses this object (its store closed or dropped), the loop and its thread end.
        weakref.finalize(self, self._loop.call_soon_threadsafe, self._loop.stop)
        self._db = self._run(connecting)
        self._tables: dict[str, Any] = {}  # used on the loop's thread only

    def rows(
        self,
        table_name: str,
        centroid_ids: np.ndarray | None,
        where: Filter | None,
        columns: list[str],
        with_row_id: bool = False,
    ) -> pa.Table:
        """``columns`` (and, ``with_row_id``, the row id) of the rows of ``table_name`` holding any of
        ``centroid_ids`` and meeting ``where``."""
        return self._run(self._rows(table_name, centroid_ids, where, columns, with_row_id))

    def text_search(self, table_name: str, text: str, limit: int, where: Filter | None) -> pa.Table:
        """``rev`` and ``_score`` of the best ``limit`` rows of ``table_name`` for a BM25 match query on
        ``text`` among those meeting ``where``."""
        return self._run(self._text_search(table_name, text, limit, where))

    def version(self, table_name: str) -> int:
        """The version of ``table_name`` that this connection's next query reads (checked for a newer one
        at the connection's consistency interval)."""
        return int(self._run(self._version(table_name)))

    def forget(self, table_name: str) -> None:
        """Close the handle of ``table_name``; the next query opens the table again."""
        self._run(self._forget(table_name))

    async def _rows(
        self, table_name: str, centroid_ids: np.ndarray | None, where: Filter | None, columns: list[str], with_row_id: bool
    ) -> pa.Table:
        table = await self._open(table_name)
        predicate = condition(centroid_ids, where, await table.schema() if where is not None else None)
        query = table.query().select(columns)
        if with_row_id:
            query = query.with_row_id()
        return await (query.where(predicate) if predicate else query).to_arrow()

    async def _text_search(self, table_name: str, text: str, limit: int, where: Filter | None) -> pa.Table:
        lancedb_query = require("lancedb.query", "lancedb")
        table = await self._open(table_name)
        query = table.query().nearest_to_text(lancedb_query.MatchQuery(text, TEXT_COLUMN)).select(["rev", "_score"])
        predicate = condition(None, where, await table.schema()) if where is not None else None
        return await (query.where(predicate) if predicate else query).limit(limit).to_arrow()

    async def _version(self, table_name: str) -> int:
        return await (await self._open(table_name)).version()

    async def _open(self, table_name: str) -> Any:
        table = self._tables.get(table_name)
        if table is None:
            table = self._tables[table_name] = await self._db.open_table(table_name)
        return table

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
