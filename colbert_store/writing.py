"""Writing documents: compressing validated input into batches, and writing a batch with revisions
no stored document holds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from colbert_store.codec import ResidualCodec
from colbert_store.storage import DocumentBatch, Store, new_revisions, revision_generations
from colbert_store.validation import DocumentsInput

TOKENS_PER_WRITE = 262_144
"""About how many tokens one store write carries (each write is atomic per document)."""


def encode_batches(docs: DocumentsInput, codec: ResidualCodec, generation: int) -> Iterator[tuple[slice, DocumentBatch]]:
    """Compressed batches of about :data:`TOKENS_PER_WRITE` tokens, each with the slice of ``docs`` it holds."""
    start = 0
    while start < len(docs.ids):
        stop, tokens = start, 0
        while stop < len(docs.ids) and (stop == start or tokens + len(docs.embeddings[stop]) <= TOKENS_PER_WRITE):
            tokens += len(docs.embeddings[stop])
            stop += 1
        yield slice(start, stop), encode_documents(docs, slice(start, stop), codec, generation)
        start = stop


def encode_documents(docs: DocumentsInput, rows: slice, codec: ResidualCodec, generation: int) -> DocumentBatch:
    """The documents ``docs[rows]`` compressed by ``codec``, with fresh revisions of ``generation``."""
    matrices = docs.embeddings[rows]
    vectors = np.concatenate(matrices)
    centroid_ids, residuals = codec.compress(vectors)
    offsets = np.concatenate([[0], np.cumsum([len(m) for m in matrices])]).astype(np.int64)
    return DocumentBatch(
        ids=docs.ids[rows],
        revisions=new_revisions(len(matrices), generation),
        token_offsets=offsets,
        centroid_ids=centroid_ids,
        residuals=residuals,
        texts=docs.texts[rows],
        metadata=docs.metadata[rows],
        sq_errors=np.add.reduceat(codec.sq_errors(vectors, centroid_ids, residuals), offsets[:-1]),
    )


def write_batch(store: Store, name: str, batch: DocumentBatch, replacing: np.ndarray | None = None) -> DocumentBatch:
    """Write ``batch`` (conditionally with ``replacing``, see :meth:`Store.upsert`) after drawing again
    every revision a stored document already holds, so no two stored documents share one (the
    argument is in :func:`colbert_store.storage.new_revisions`). Returns the batch as written."""
    while True:
        taken = np.isin(batch.revisions, store.fetch(name, batch.revisions).revisions)
        if not taken.any():
            break
        generation = int(revision_generations(batch.revisions[:1])[0])
        revisions = batch.revisions.copy()
        revisions[taken] = new_revisions(int(taken.sum()), generation)
        batch = replace(batch, revisions=revisions)
    store.upsert(name, batch, replacing=replacing)
    return batch
