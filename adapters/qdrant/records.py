"""Documents as Qdrant points and back: one point per document, everything in the payload.

Point id = uuid5 of the document id, so writing a document again overwrites its point atomically.

==========  ===========================================================================
payload     role
==========  ===========================================================================
doc_id      the caller's document id
rev         int64, unique per write (integer payload index, lookups only)
centroids   the document's distinct centroid ids (integer payload index = candidates)
n_tokens    token count
sq_error    quantization error: sum over tokens of |vector - decoded|^2
codes       per-token centroid ids, little-endian uint16/uint32, base64
residuals   per-token packed residuals, base64
text        optional text
meta        the metadata dict as JSON text (an engine may not give a JSON float back bit for bit)
filter      what metadata filters read (see :mod:`colbert_store.adapters.qdrant.filters`)
==========  ===========================================================================

The point's sparse vector ``bm25`` holds the BM25 term weights of its text (none without text).
The payload is plain JSON, the same for every engine that speaks Qdrant's data model.

A *compact* collection keeps ``codes`` and ``residuals`` out of the payload: each token is one row of
the point's uint8 ``tokens`` multivector, the low 16 bits of its centroid id (little-endian) then its
packed residual, so Qdrant stores the bytes themselves rather than base64 text (a third more). A
document holding centroid ids of 65,536 and up also has ``codes_high``: its tokens' high 16 bits,
little-endian uint16, base64.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from colbert_store.adapters.qdrant.engine import Terms
from colbert_store.adapters.qdrant.filters import filter_fields
from colbert_store.errors import InvalidInputError
from colbert_store.lexical import document_vector
from colbert_store.storage import DocumentBatch

STORED_FIELDS = ["doc_id", "rev", "n_tokens", "sq_error", "codes", "residuals", "codes_high", "text", "meta"]
"""Payload fields a fetch or scan reads (not ``centroids`` or ``filter``, which only queries use)."""
_ROW_ID_BYTES = 2
UPSERT_POINTS = 256
REQUEST_BYTES = 8 << 20  # well under a server's default 32 MiB request limit

_DOC_NAMESPACE = uuid.UUID("6f1d8f2e-7c3b-5a4e-9d21-3c0b7e4a5f10")


def point_id(doc_id: str) -> str:
    """The point id of a document id."""
    return str(uuid.uuid5(_DOC_NAMESPACE, doc_id))


def compact_width(residual_bytes: int) -> int:
    """The row width of a compact collection whose tokens have this many packed residual bytes."""
    return _ROW_ID_BYTES + residual_bytes


def document_payloads(
    batch: DocumentBatch, token_width: int | None = None
) -> tuple[list[str], list[dict[str, Any]], list[Terms | None], list[np.ndarray] | None, list[int]]:
    """Each document's point id, payload, BM25 term weights (``None`` without text) and, for a compact
    collection (``token_width``), its token rows; and each point's approximate request size in bytes."""
    ids, payloads, terms, sizes = _payloads(batch)
    bounds = _token_bounds(batch)
    if token_width is None:
        _add_base64_tokens(batch, payloads, bounds)
        tokens = None
        token_sizes = [len(p["codes"]) + len(p["residuals"]) for p in payloads]
    else:
        tokens = _compact_rows(batch, payloads, bounds, token_width)
        token_sizes = [6 * part.size for part in tokens]  # rows travel as numbers
    return ids, payloads, terms, tokens, [size + extra for size, extra in zip(sizes, token_sizes)]


def _token_bounds(batch: DocumentBatch) -> list[tuple[int, int]]:
    offsets = np.asarray(batch.token_offsets, dtype=np.int64).tolist()
    return list(zip(offsets[:-1], offsets[1:]))


def _add_base64_tokens(batch: DocumentBatch, payloads: list[dict[str, Any]], bounds: list[tuple[int, int]]) -> None:
    """``codes`` and ``residuals`` into each payload."""
    codes = np.asarray(batch.centroid_ids)
    if codes.dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)):
        codes = codes.astype(np.uint32)
    code_width = codes.dtype.itemsize
    code_bytes = memoryview(codes.astype(codes.dtype.newbyteorder("<"), copy=False).tobytes())
    residuals = np.ascontiguousarray(batch.residuals, dtype=np.uint8)
    residual_width = residuals.shape[1] if residuals.ndim == 2 else 0
    residual_bytes = memoryview(residuals.tobytes())
    for payload, (start, end) in zip(payloads, bounds):
        payload["codes"] = base64.b64encode(code_bytes[start * code_width : end * code_width]).decode("ascii")
        payload["residuals"] = base64.b64encode(residual_bytes[start * residual_width : end * residual_width]).decode("ascii")


def _compact_rows(
    batch: DocumentBatch, payloads: list[dict[str, Any]], bounds: list[tuple[int, int]], token_width: int
) -> list[np.ndarray]:
    """Each document's rows (and ``codes_high`` into the payloads that need it)."""
    codes = np.asarray(batch.centroid_ids).astype(np.uint32)
    residuals = np.ascontiguousarray(batch.residuals, dtype=np.uint8).reshape(len(codes), -1)
    if compact_width(residuals.shape[1]) != token_width:
        raise InvalidInputError(
            f"tokens of {residuals.shape[1]} residual bytes do not fit the collection's rows of {token_width} bytes"
        )
    rows = np.empty((len(codes), token_width), np.uint8)
    rows[:, :_ROW_ID_BYTES] = (codes & 0xFFFF).astype("<u2").view(np.uint8).reshape(-1, _ROW_ID_BYTES)
    rows[:, _ROW_ID_BYTES:] = residuals
    high = (codes >> 16).astype("<u2")
    for payload, (start, end) in zip(payloads, bounds):
        if high[start:end].any():
            payload["codes_high"] = base64.b64encode(high[start:end].tobytes()).decode("ascii")
    return [rows[start:end] for start, end in bounds]


def _payloads(batch: DocumentBatch) -> tuple[list[str], list[dict[str, Any]], list[Terms | None], list[int]]:
    """Point ids, payloads without the tokens, BM25 term weights and request sizes without the tokens."""
    n_docs = len(batch)
    offsets = np.asarray(batch.token_offsets, dtype=np.int64)
    centroid_offsets, centroid_values = batch.distinct_centroids()
    distinct = centroid_values.tolist()
    texts = batch.texts or [None] * n_docs
    metadata = batch.metadata or [{}] * n_docs
    revisions = np.asarray(batch.revisions, dtype=np.int64).tolist()
    sq_errors = None if batch.sq_errors is None else np.asarray(batch.sq_errors, dtype=np.float64).tolist()
    ids, payloads, terms, sizes = [], [], [], []
    for i, doc_id in enumerate(batch.ids):
        payload: dict[str, Any] = {
            "doc_id": doc_id,
            "rev": revisions[i],
            "n_tokens": int(offsets[i + 1] - offsets[i]),
            "sq_error": None if sq_errors is None else sq_errors[i],
            "centroids": distinct[centroid_offsets[i] : centroid_offsets[i + 1]],
            "text": texts[i],
            "meta": json.dumps(metadata[i]),
        }
        fields = filter_fields(metadata[i])
        if fields:
            payload["filter"] = fields
        text = texts[i]
        vector = None if text is None else document_vector(text)
        ids.append(point_id(doc_id))
        payloads.append(payload)
        terms.append(vector)
        sizes.append(
            4 * len(texts[i] or "") + 12 * len(payload["centroids"]) + 2 * len(payload["meta"])
            + 24 * (len(vector[0]) if vector else 0) + 256
        )
    return ids, payloads, terms, sizes


def request_chunks(items: Sequence[Any], sizes: Sequence[int]) -> Iterator[list[Any]]:
    """Consecutive runs of items, each under the point and byte budgets of one request."""
    chunk: list[Any] = []
    total = 0
    for item, size in zip(items, sizes):
        if chunk and (len(chunk) == UPSERT_POINTS or total + size > REQUEST_BYTES):
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += size
    if chunk:
        yield chunk


def payloads_to_batch(payloads: Sequence[dict[str, Any]]) -> DocumentBatch:
    """A DocumentBatch from stored payloads, decoding each document's base64 then joining with numpy."""
    token_offsets = _token_offsets(payloads)
    n_tokens = np.diff(token_offsets)
    total = int(token_offsets[-1])
    codes = [base64.b64decode(p["codes"]) for p in payloads]
    residuals = bytearray().join(base64.b64decode(p["residuals"]) for p in payloads)  # writable for numpy
    widths = {len(raw) // count for raw, count in zip(codes, n_tokens.tolist()) if count}
    if len(widths) <= 1:
        width = widths.pop() if widths else 2
        centroid_ids = np.frombuffer(bytearray().join(codes), dtype=f"<u{width}").astype(f"=u{width}", copy=False)
    else:  # written under codecs of different sizes: widen to uint32
        pairs = [(raw, count) for raw, count in zip(codes, n_tokens.tolist()) if count]
        centroid_ids = np.concatenate(
            [np.frombuffer(raw, dtype=f"<u{len(raw) // count}").astype(np.uint32) for raw, count in pairs]
        )
    residual_width = len(residuals) // total if total else 0
    return _batch(payloads, token_offsets, centroid_ids, np.frombuffer(residuals, dtype=np.uint8).reshape(total, residual_width))


def compact_to_batch(payloads: Sequence[dict[str, Any]], tokens: Sequence[np.ndarray], token_width: int) -> DocumentBatch:
    """A DocumentBatch from the payloads of a compact collection and each document's ``tokens`` rows."""
    token_offsets = _token_offsets(payloads)
    rows = np.concatenate([np.empty((0, token_width), np.uint8), *(part for part in tokens if len(part))])
    centroid_ids = rows[:, :_ROW_ID_BYTES].copy().view("<u2").ravel().astype(np.uint16)
    wide = [(i, p["codes_high"]) for i, p in enumerate(payloads) if p.get("codes_high")]
    if wide:
        centroid_ids = centroid_ids.astype(np.uint32)
        for i, text in wide:
            high = np.frombuffer(base64.b64decode(text), "<u2").astype(np.uint32)
            centroid_ids[token_offsets[i] : token_offsets[i + 1]] |= high << 16
    return _batch(payloads, token_offsets, centroid_ids, np.ascontiguousarray(rows[:, _ROW_ID_BYTES:]))


def _token_offsets(payloads: Sequence[dict[str, Any]]) -> np.ndarray:
    n_tokens = np.fromiter((p["n_tokens"] for p in payloads), np.int64, len(payloads))
    return np.concatenate([[0], np.cumsum(n_tokens)]).astype(np.int64)


def _batch(
    payloads: Sequence[dict[str, Any]], token_offsets: np.ndarray, centroid_ids: np.ndarray, residuals: np.ndarray
) -> DocumentBatch:
    return DocumentBatch(
        ids=[p["doc_id"] for p in payloads],
        revisions=np.fromiter((p["rev"] for p in payloads), np.int64, len(payloads)),
        token_offsets=token_offsets,
        centroid_ids=centroid_ids,
        residuals=residuals,
        texts=[p.get("text") for p in payloads],
        metadata=[json.loads(p["meta"]) for p in payloads],
        sq_errors=np.array([np.nan if p.get("sq_error") is None else p["sq_error"] for p in payloads], np.float64),
    )
