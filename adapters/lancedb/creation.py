"""Creating a table that other processes may be creating, and writing into, at the same moment.

Lance checks whether a table exists when a creation starts and again when it commits. A creation that
found no table at the start but finds one at its commit is committed as an overwrite on top of it, at
the next version, without conflict: whatever other callers had written into the table in between is
gone from the latest version. Each creation therefore carries its own creator id in the schema's
metadata, and a creator whose commit landed after other versions puts back the rows it erased.
"""

from __future__ import annotations

import uuid
from typing import Any

import pyarrow as pa

from colbert_store.adapters.lancedb.retries import retrying

CREATOR_KEY = b"colbert_store.creator"
"""Schema metadata naming the creation that committed a table version's schema."""


def create_signed(db: Any, table_name: str, schema: pa.Schema) -> tuple[Any, str]:
    """Create the table with a new creator id in its schema's metadata; the table and the id. Raises if
    the table exists. Past version 1, the creation may have overwritten rows: see :func:`restore_rows_erased_by`."""
    creator = uuid.uuid4().hex
    metadata = {**(schema.metadata or {}), CREATOR_KEY: creator.encode()}
    return db.create_table(table_name, schema=schema.with_metadata(metadata)), creator


def restore_rows_erased_by(table: Any, creator: str, keys: list[str]) -> int:
    """Insert again the rows that ``creator``'s creation overwrote, unless their keys are back; how many.

    ``table`` is checked out to older versions on the way, so pass a handle of its own.
    """
    erased_version = _version_before_creation(table, creator)
    if erased_version is None:
        return 0
    table.checkout(erased_version)
    erased = table.to_arrow()
    table.checkout_latest()
    if not erased.num_rows:
        return 0
    result = retrying(
        lambda: table.merge_insert(keys).when_not_matched_insert_all().execute(erased),
        f"restoring the rows a concurrent creation of {table.name!r} overwrote",
    )
    return int(result.num_inserted_rows)


def _version_before_creation(table: Any, creator: str) -> int | None:
    """The version before the one ``creator``'s creation committed (the first whose schema names it), if any."""
    previous = None
    for version in sorted(entry["version"] for entry in table.list_versions()):
        table.checkout(version)
        if (table.schema.metadata or {}).get(CREATOR_KEY) == creator.encode():
            return previous
        previous = version
    return None
