"""Writing documents: compressing validated input into batches, and writing a batch with revisions
no stored document holds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from colbert_store.codec import ResidualCodec
from colbert_store.storage import DocumentBatch, Store, new_revisions, revision_generations
from colbert_store.validation import DocumentsInput

BYTES_PER_WRITE = 64 << 20
"""About how many encoded bytes (centroid ids and packed residuals) one store write carries. Each write
is atomic per document and becomes its own set of files in a store (a LanceDB fragment): few, large
writes keep an add's files few and its scalar indexes small."""
TOKENS_PER_ENCODE = 262_144
"""About how many tokens are compressed at once: their float vectors are copied together."""


def encode_batches(docs: DocumentsInput, codec: ResidualCodec, generation: int) -> Iterator[tuple[slice, DocumentBatch]]:
    """Compressed batches of at most about :data:`BYTES_PER_WRITE` encoded bytes, as few as that allows and
    of even size, each with the slice of ``docs`` it holds."""
    lengths = np.array([len(m) for m in docs.embeddings], dtype=np.int64)
    for rows in even_slices(lengths, -(-int(lengths.sum()) * codec.stored_bytes_per_token // BYTES_PER_WRITE)):
        yield rows, encode_documents(docs, rows, codec, generation)


def encode_documents(docs: DocumentsInput, rows: slice, codec: ResidualCodec, generation: int) -> DocumentBatch:
    """The documents ``docs[rows]`` compressed by ``codec`` (:data:`TOKENS_PER_ENCODE` tokens at a time),
    with fresh revisions of ``generation``."""
    matrices = docs.embeddings[rows]
    lengths = np.array([len(m) for m in matrices], dtype=np.int64)
    ids, packed, errors = [], [], []
    for part in even_slices(lengths, -(-int(lengths.sum()) // TOKENS_PER_ENCODE)):
        vectors = np.concatenate(matrices[part])
        part_ids, part_packed = codec.compress(vectors)
        ids.append(part_ids)
        packed.append(part_packed)
        errors.append(codec.sq_errors(vectors, part_ids, part_packed))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return DocumentBatch(
        ids=docs.ids[rows],
        revisions=new_revisions(len(matrices), generation),
        token_offsets=offsets,
        centroid_ids=np.concatenate(ids),
        residuals=np.concatenate(packed),
        texts=docs.texts[rows],
        metadata=docs.metadata[rows],
        sq_errors=np.add.reduceat(np.concatenate(errors), offsets[:-1]),
    )


def even_slices(lengths: np.ndarray, parts: int) -> list[slice]:
    """Consecutive slices of the items (none without items), at most ``parts`` (at least one), each
    holding about an equal share of the ``lengths`` and at least one item.

    >>> even_slices(np.array([3, 1, 1, 3]), 2)
    [slice(0, 2, None), slice(2, 4, None)]
    """
    if not len(lengths):
        return []
    ends = np.cumsum(lengths)
    shares = ends[-1] * np.arange(1, max(parts, 1)) / max(parts, 1)
    cuts = np.unique(np.concatenate([[0], np.searchsorted(ends, shares) + 1, [len(lengths)]]))
    return [slice(int(start), int(stop)) for start, stop in zip(cuts[:-1], cuts[1:])]


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
