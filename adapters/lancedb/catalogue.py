"""The LanceDB catalogue: which indexes a folder holds, their manifests and their codecs.

Two tables beside the documents tables: ``_colbert_store_indexes`` (one row per index: ``name``,
``manifest`` as JSON, its ``version`` and ``docs``, the index's documents table) and
``_colbert_store_codecs`` (``index_name``, ``codec_id``, ``data``; rows written once). Every change is one
merge-insert commit, conditional where it must be: an index row is inserted only if absent, and
replaced only while its version is the expected one, so concurrent processes cannot both apply one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from typing import Any

import pyarrow as pa

from colbert_store.adapters.lancedb.creation import create_signed, restore_rows_erased_by
from colbert_store.adapters.lancedb.filters import sql_string
from colbert_store.adapters.lancedb.records import PRIMARY_KEY
from colbert_store.adapters.lancedb.retries import retrying
from colbert_store.errors import ColbertStoreError, IncompatibleIndexError, IndexNotFoundError

_INDEXES = "_colbert_store_indexes"
_CODECS = "_colbert_store_codecs"
_FORMAT_1_CATALOGUE = "_colbert_store_catalogue"
_OPEN_ATTEMPTS = 20
_INDEXES_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False, metadata=PRIMARY_KEY),
        pa.field("manifest", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("docs", pa.string(), nullable=False),
    ]
)
_CODECS_SCHEMA = pa.schema(
    [
        pa.field("index_name", pa.string(), nullable=False),
        pa.field("codec_id", pa.string(), nullable=False),
        pa.field("data", pa.large_binary(), nullable=False),
    ]
)
_INDEXES_KEY = ["name"]
_CODECS_KEY = ["index_name", "codec_id"]
_SCHEMAS_AND_KEYS = {_INDEXES: (_INDEXES_SCHEMA, _INDEXES_KEY), _CODECS: (_CODECS_SCHEMA, _CODECS_KEY)}


class Catalogue:
    """The catalogue tables of one LanceDB connection (created on first write)."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def names(self) -> list[str]:
        table = self._table(_INDEXES, create=False)
        if table is None:
            return []
        return sorted(table.search().select(["name"]).limit(None).to_arrow().column("name").to_pylist())

    def entry(self, name: str) -> dict[str, Any]:
        """The index's row: ``manifest`` (parsed), ``version`` and ``docs``."""
        table = self._table(_INDEXES, create=False)
        rows = [] if table is None else table.search().where(f"name = {sql_string(name)}").limit(None).to_arrow().to_pylist()
        if not rows:
            self._refuse_format_1(name)
            raise IndexNotFoundError(name)
        return {**rows[0], "manifest": json.loads(rows[0]["manifest"])}

    def insert(self, name: str, manifest: dict[str, Any], docs: str) -> bool:
        """Add the index's row unless one exists; whether it was added."""
        table = self._table(_INDEXES, create=True)
        row = _index_row(name, manifest, docs)
        result = retrying(
            lambda: table.merge_insert(_INDEXES_KEY).when_not_matched_insert_all().execute(row), f"creating index {name!r}"
        )
        return bool(result.num_inserted_rows)

    def replace(self, name: str, manifest: dict[str, Any], expected_version: int) -> bool:
        """Replace the index's manifest if its version is still ``expected_version``; whether it was."""
        current = self.entry(name)
        table = self._table(_INDEXES, create=True)
        row = _index_row(name, manifest, current["docs"])
        condition = f"target.version = {int(expected_version)} AND target.docs = {sql_string(current['docs'])}"
        result = retrying(
            lambda: table.merge_insert(_INDEXES_KEY).when_matched_update_all(where=condition).execute(row),
            f"committing the manifest of index {name!r}",
        )
        return bool(result.num_updated_rows)

    def remove(self, name: str) -> None:
        table = self._table(_INDEXES, create=False)
        if table is not None:
            retrying(lambda: table.delete(f"name = {sql_string(name)}"), f"dropping index {name!r}")
        self.delete_codecs(name, None)

    def write_codec(self, name: str, codec_id: str, data: bytes) -> None:
        table = self._table(_CODECS, create=True)
        row = pa.table({"index_name": [name], "codec_id": [codec_id], "data": [data]}, schema=_CODECS_SCHEMA)
        retrying(
            lambda: table.merge_insert(_CODECS_KEY).when_not_matched_insert_all().execute(row),
            f"writing a codec of index {name!r}",
        )

    def read_codec(self, name: str, codec_id: str) -> bytes:
        table = self._table(_CODECS, create=False)
        where = f"index_name = {sql_string(name)} AND codec_id = {sql_string(codec_id)}"
        rows = [] if table is None else table.search().where(where).select(["data"]).limit(None).to_arrow().to_pylist()
        if not rows:
            raise KeyError(f"index {name!r} has no codec {codec_id!r}")
        return bytes(rows[0]["data"])

    def delete_codecs(self, name: str, codec_ids: Collection[str] | None) -> None:
        """Delete these codecs of the index (all of them with ``None``)."""
        table = self._table(_CODECS, create=False)
        if table is None or (codec_ids is not None and not codec_ids):
            return
        where = f"index_name = {sql_string(name)}"
        if codec_ids is not None:
            where += f" AND codec_id IN ({', '.join(map(sql_string, codec_ids))})"
        retrying(lambda: table.delete(where), f"deleting codecs of index {name!r}")

    def _table(self, table_name: str, create: bool) -> Any:
        """The catalogue table, created if asked; another process may be creating it at the same moment."""
        last_error: Exception | None = None
        schema, keys = _SCHEMAS_AND_KEYS[table_name]
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                if table_name in self._db.list_tables().tables:
                    return self._db.open_table(table_name)
                if not create:
                    return None
                table, creator = create_signed(self._db, table_name, schema)
            except Exception as error:  # listed but not yet openable, or created by another process meanwhile
                last_error = error
                time.sleep(0.02 * (attempt + 1))
                continue
            if table.version > 1:  # it may have landed on rows others wrote: put them back (errors are raised)
                restore_rows_erased_by(self._db.open_table(table_name), creator, keys)
            return table
        raise ColbertStoreError(f"could not open or create the LanceDB table {table_name!r}: {last_error}") from last_error

    def _refuse_format_1(self, name: str) -> None:
        """Raise for an index written by colbert-store's first storage format (one catalogue table)."""
        if _FORMAT_1_CATALOGUE not in self._db.list_tables().tables:
            return
        old = self._db.open_table(_FORMAT_1_CATALOGUE)
        if old.count_rows(f"name = {sql_string(name)}"):
            raise IncompatibleIndexError(
                f"index {name!r} was written by an older colbert-store (storage format 1); rebuild it with this version"
            )


def _index_row(name: str, manifest: dict[str, Any], docs: str) -> pa.Table:
    return pa.table(
        {"name": [name], "manifest": [json.dumps(manifest, sort_keys=True)], "version": [int(manifest["version"])],
         "docs": [docs]},
        schema=_INDEXES_SCHEMA,
    )
