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

The point's one vector is sparse: ``bm25``, the BM25 term weights of its text (none without text).
The payload is plain JSON, the same for every engine that speaks Qdrant's data model.
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
from colbert_store.lexical import document_vector
from colbert_store.storage import DocumentBatch

STORED_FIELDS = ["doc_id", "rev", "n_tokens", "sq_error", "codes", "residuals", "text", "meta"]
"""Payload fields a fetch or scan reads (not ``centroids`` or ``filter``, which only queries use)."""
UPSERT_POINTS = 256
REQUEST_BYTES = 8 << 20  # well under a server's default 32 MiB request limit

_DOC_NAMESPACE = uuid.UUID("6f1d8f2e-7c3b-5a4e-9d21-3c0b7e4a5f10")


def point_id(doc_id: str) -> str:
    """The point id of a document id."""
    return str(uuid.uuid5(_DOC_NAMESPACE, doc_id))


def document_payloads(batch: DocumentBatch) -> tuple[list[str], list[dict[str, Any]], list[Terms | None], list[int]]:
    """Each document's point id, payload and BM25 term weights (``None`` without text), and each point's
    approximate request size in bytes."""
    n_docs = len(batch)
    offsets = np.asarray(batch.token_offsets, dtype=np.int64)
    codes = np.asarray(batch.centroid_ids)
    if codes.dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)):
        codes = codes.astype(np.uint32)
    code_width = codes.dtype.itemsize
    code_bytes = memoryview(codes.astype(codes.dtype.newbyteorder("<"), copy=False).tobytes())
    residuals = np.ascontiguousarray(batch.residuals, dtype=np.uint8)
    residual_width = residuals.shape[1] if residuals.ndim == 2 else 0
    residual_bytes = memoryview(residuals.tobytes())
    centroid_offsets, centroid_values = batch.distinct_centroids()
    distinct = centroid_values.tolist()
    texts = batch.texts or [None] * n_docs
    metadata = batch.metadata or [{}] * n_docs
    revisions = np.asarray(batch.revisions, dtype=np.int64).tolist()
    sq_errors = None if batch.sq_errors is None else np.asarray(batch.sq_errors, dtype=np.float64).tolist()
    ids, payloads, terms, sizes = [], [], [], []
    for i, doc_id in enumerate(batch.ids):
        start, end = int(offsets[i]), int(offsets[i + 1])
        payload: dict[str, Any] = {
            "doc_id": doc_id,
            "rev": revisions[i],
            "n_tokens": end - start,
            "sq_error": None if sq_errors is None else sq_errors[i],
            "centroids": distinct[centroid_offsets[i] : centroid_offsets[i + 1]],
            "codes": base64.b64encode(code_bytes[start * code_width : end * code_width]).decode("ascii"),
            "residuals": base64.b64encode(residual_bytes[start * residual_width : end * residual_width]).decode("ascii"),
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
            len(payload["codes"]) + len(payload["residuals"]) + 4 * len(texts[i] or "")
            + 12 * len(payload["centroids"]) + 2 * len(payload["meta"]) + 24 * (len(vector[0]) if vector else 0) + 256
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
    n_tokens = np.fromiter((p["n_tokens"] for p in payloads), np.int64, len(payloads))
    token_offsets = np.concatenate([[0], np.cumsum(n_tokens)]).astype(np.int64)
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
    return DocumentBatch(
        ids=[p["doc_id"] for p in payloads],
        revisions=np.fromiter((p["rev"] for p in payloads), np.int64, len(payloads)),
        token_offsets=token_offsets,
        centroid_ids=centroid_ids,
        residuals=np.frombuffer(residuals, dtype=np.uint8).reshape(total, residual_width),
        texts=[p.get("text") for p in payloads],
        metadata=[json.loads(p["meta"]) for p in payloads],
        sq_errors=np.array([np.nan if p.get("sq_error") is None else p["sq_error"] for p in payloads], np.float64),
    )
