"""Documents as LanceDB rows and back: the schema of a documents table and the Arrow conversions.

=============  =====================  ===================================================
column         type                   role
=============  =====================  ===================================================
id             string (BTree index)   the caller's document id (the table's primary key)
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
user keys never appear in SQL. A key holds one kind of value (bool, number or string) per index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from colbert_store.errors import InvalidInputError
from colbert_store.filters import ScalarKind, scalar_kind
from colbert_store.storage import DocumentBatch

PRIMARY_KEY = {b"lance-schema:unenforced-primary-key": b"true"}
"""Field metadata that makes Lance's merge-insert detect two concurrent commits inserting the same new
key (a retryable conflict, so the retry updates instead of inserting a second row)."""

BASE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False, metadata=PRIMARY_KEY),
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
STORED_COLUMNS = ["id", "rev", "codes", "residuals", "n_tokens", "sq_error", "text", "metadata"]
"""Columns a fetch or scan reads (not ``centroids`` or the metadata columns, which only queries use)."""

_KEY_METADATA = b"colbert_store.key"
_ARROW_TYPES: dict[ScalarKind, pa.DataType] = {
    "str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
}


@dataclass(frozen=True)
class MetadataColumn:
    """The generated column holding one metadata field, and the kind of its values."""

    name: str
    kind: ScalarKind


def existing_metadata_columns(schema: pa.Schema) -> dict[str, MetadataColumn]:
    """The metadata columns of a documents table, by metadata key."""
    columns = {}
    for arrow_field in schema:
        key = (arrow_field.metadata or {}).get(_KEY_METADATA)
        if key is not None:
            kind = next(k for k, t in _ARROW_TYPES.items() if t == arrow_field.type)
            columns[key.decode()] = MetadataColumn(arrow_field.name, kind)
    return columns


def metadata_columns(schema: pa.Schema, batch: DocumentBatch) -> tuple[dict[str, MetadataColumn], list[pa.Field]]:
    """Typed filter columns for every scalar metadata field of a batch, and the fields to add to the
    table for keys it has not seen yet. A value of another kind than its key's column raises."""
    columns = existing_metadata_columns(schema)
    new_fields = []
    for position, entry in enumerate(batch.metadata):
        for key, value in entry.items():
            kind = scalar_kind(value)
            if kind is None:
                continue
            column = columns.get(key)
            if column is None:
                column = columns[key] = MetadataColumn(f"m_{len(columns)}", kind)
                new_fields.append(pa.field(column.name, _ARROW_TYPES[kind], metadata={_KEY_METADATA: key}))
            elif not (kind == column.kind or (kind == "int" and column.kind == "float")):
                raise InvalidInputError(
                    f"metadata[{position}] (id {batch.ids[position]!r})[{key!r}] is {type(value).__name__} {value!r}, "
                    f"but field {key!r} "
                    f"holds {column.kind} values in this index"
                )
    return columns, new_fields


def batch_to_arrow(batch: DocumentBatch, columns: dict[str, MetadataColumn]) -> pa.Table:
    """The rows of a documents table for ``batch`` (binary columns built without a loop per row)."""
    n_tokens = np.diff(batch.token_offsets)
    centroid_offsets, centroid_values = batch.distinct_centroids()
    code_bytes = batch.centroid_ids.dtype.itemsize
    residual_bytes = batch.residuals.shape[1]
    metadata = batch.metadata or [{}] * len(batch)
    data: dict[str, Any] = {
        "id": pa.array(batch.ids, pa.string()),
        "rev": pa.array(batch.revisions, pa.int64()),
        "centroids": pa.ListArray.from_arrays(
            pa.array(centroid_offsets.astype(np.int32)), pa.array(centroid_values.astype(np.int64))
        ),
        "codes": binary_from_numpy(
            np.ascontiguousarray(batch.centroid_ids.astype(batch.centroid_ids.dtype.newbyteorder("<"))).view(np.uint8),
            batch.token_offsets * code_bytes,
        ).cast(pa.binary()),
        "residuals": binary_from_numpy(
            np.ascontiguousarray(batch.residuals).ravel(), batch.token_offsets * residual_bytes
        ).cast(pa.binary()),
        "n_tokens": pa.array(n_tokens.astype(np.int32)),
        "sq_error": pa.nulls(len(batch), pa.float64()) if batch.sq_errors is None else pa.array(batch.sq_errors),
        "text": pa.array(batch.texts or [None] * len(batch), pa.string()),
        "metadata": pa.array([json.dumps(m, sort_keys=True) for m in metadata], pa.string()),
    }
    for key, column in columns.items():
        values = [entry.get(key) if scalar_kind(entry.get(key)) else None for entry in metadata]
        data[column.name] = pa.array(values, _ARROW_TYPES[column.kind])
    rows = pa.table(data)
    fields = [BASE_SCHEMA.field(name) if name in BASE_SCHEMA.names else rows.schema.field(name) for name in rows.column_names]
    return rows.cast(pa.schema(fields))  # the table's own fields: a primary key must not be nullable


def arrow_to_batch(table: pa.Table) -> DocumentBatch:
    """A DocumentBatch from rows holding :data:`STORED_COLUMNS`."""
    n_tokens = table.column("n_tokens").to_numpy().astype(np.int64)
    token_offsets = np.concatenate([[0], np.cumsum(n_tokens)]).astype(np.int64)
    total = int(token_offsets[-1])
    codes, _ = numpy_from_binary(table.column("codes"))
    residuals, _ = numpy_from_binary(table.column("residuals"))
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


def binary_from_numpy(flat: np.ndarray, byte_offsets: np.ndarray) -> pa.Array:
    """A large-binary array over ``flat``'s bytes split at ``byte_offsets``, without a Python loop per row."""
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(byte_offsets) - 1, [None, pa.py_buffer(byte_offsets.astype(np.int64)), pa.py_buffer(flat)]
    )


def numpy_from_binary(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A binary column's rows as one uint8 array and each row's byte offsets into it (from 0)."""
    array = column.combine_chunks().cast(pa.large_binary())
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8) if array.buffers()[2] is not None else np.empty(0, np.uint8)
    return data[offsets[0] : offsets[-1]], offsets - offsets[0]


def centroid_lists_of(rows: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``rev`` and ``centroids`` columns of ``rows`` as :meth:`Store.centroid_lists` returns them."""
    lists = rows.column("centroids").combine_chunks()
    offsets = np.zeros(len(lists) + 1, np.int64)
    np.cumsum(lists.value_lengths().to_numpy(zero_copy_only=False), out=offsets[1:])
    return rows.column("rev").to_numpy().astype(np.int64, copy=False), offsets, lists.flatten().to_numpy()
