"""Index maintenance: how well the codec still fits the stored documents, and the pieces of a retrain
(sampling stored tokens, re-encoding documents under a new codec)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from colbert_store.cache import subset_batch
from colbert_store.codec import ResidualCodec, top_centroid_share
from colbert_store.storage import GENERATIONS, DocumentBatch, new_revisions, revision_generations
from colbert_store.validation import check_matrix, normalise_rows

TextEncoder = Callable[[Sequence[str]], Sequence[np.ndarray]]

_OVERSAMPLE = 4  # documents are drawn until 4x the sample size, then tokens within them, to span many documents

_RETRAIN_ERROR_RATIO = 1.25
_RETRAIN_SHARE_RATIO = 2.0


@dataclass(frozen=True)
class IndexHealth:
    """How well the codec fits the stored documents (see :meth:`colbert_store.Index.health`).

    Attributes:
        documents, tokens: what the index holds.
        generation: how many times the codec was retrained.
        mean_sq_error: mean squared reconstruction error per token, over documents that recorded it.
        reference_sq_error: the same on tokens held out of the codec's training (its yardstick).
        error_ratio: ``mean_sq_error / reference_sq_error``; drifted data pushes it above 1.
        top_centroid_share: share of tokens held by the largest 1% of centroids (list skew).
        reference_top_centroid_share: the same on the training sample.
        empty_centroids: fraction of centroids no stored token uses.
        needs_retrain: the error ratio is at least 1.25 or the top share has doubled.
    """

    documents: int
    tokens: int
    generation: int
    mean_sq_error: float
    reference_sq_error: float
    error_ratio: float
    top_centroid_share: float
    reference_top_centroid_share: float
    empty_centroids: float
    needs_retrain: bool


def measure_health(batches: Iterable[DocumentBatch], codec: ResidualCodec, generation: int) -> IndexHealth:
    """Stream ``batches`` once and compare the documents encoded by ``codec`` (of ``generation``) with
    its training sample; ``documents`` and ``tokens`` count every stored document."""
    documents = tokens = measured_tokens = 0
    error_sum = 0.0
    token_counts = np.zeros(codec.n_centroids, dtype=np.int64)
    for batch in batches:
        documents += len(batch)
        tokens += int(batch.token_offsets[-1])
        batch = _of_generation(batch, generation)  # documents of an older codec await re-encoding
        lengths = np.diff(batch.token_offsets)
        token_counts += np.bincount(batch.centroid_ids.astype(np.int64), minlength=codec.n_centroids)
        if batch.sq_errors is not None:
            known = ~np.isnan(batch.sq_errors)
            error_sum += float(batch.sq_errors[known].sum())
            measured_tokens += int(lengths[known].sum())
    mean_error = error_sum / measured_tokens if measured_tokens else float("nan")
    ratio = mean_error / codec.reference_sq_error if codec.reference_sq_error > 0 else float("nan")
    share = top_centroid_share(token_counts)
    return IndexHealth(
        documents=documents,
        tokens=tokens,
        generation=generation,
        mean_sq_error=mean_error,
        reference_sq_error=codec.reference_sq_error,
        error_ratio=ratio,
        top_centroid_share=share,
        reference_top_centroid_share=codec.reference_top_centroid_share,
        empty_centroids=float(np.mean(token_counts == 0)),
        needs_retrain=bool(
            ratio >= _RETRAIN_ERROR_RATIO or share >= _RETRAIN_SHARE_RATIO * codec.reference_top_centroid_share
        ),
    )


def sample_documents(
    scan: Callable[[], Iterable[DocumentBatch]],
    codec: ResidualCodec,
    generation: int,
    sizes: tuple[int, int],
    seed: int,
    encode_texts: TextEncoder | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Two disjoint random samples of the token vectors of the stored documents of ``generation``
    (encoded by ``codec``), of about ``sizes`` tokens, as :func:`reencode` will see them (re-encoded
    text, or decoded vectors), and the token count of those documents.

    Documents are drawn at random until four times each size, then tokens at random within them, so
    the samples span many documents; the second sample comes from other documents than the first
    (a held-out set). Two passes over ``scan()``: document sizes, then the drawn documents.
    """
    ids: list[str] = []
    sizes_seen = []
    for batch in scan():
        batch = _of_generation(batch, generation)
        ids += batch.ids
        sizes_seen.append(np.diff(batch.token_offsets))
    lengths = np.concatenate(sizes_seen) if sizes_seen else np.empty(0, np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    cuts = np.searchsorted(np.cumsum(lengths[order]), _OVERSAMPLE * np.cumsum(sizes)) + 1
    group_of = dict.fromkeys((ids[i] for i in order[: cuts[0]]), 0)
    group_of.update(dict.fromkeys((ids[i] for i in order[cuts[0] : cuts[1]]), 1))
    groups: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    for batch in scan():
        batch = _of_generation(batch, generation)
        rows = np.array([i for i, doc_id in enumerate(batch.ids) if doc_id in group_of], dtype=np.int64)
        if len(rows):
            drawn = subset_batch(batch, rows)
            for doc_id, vectors in zip(drawn.ids, document_vectors(drawn, codec, encode_texts)):
                groups[group_of[doc_id]].append(vectors)
    samples = []
    for size, group in zip(sizes, groups):
        tokens = np.concatenate(group) if group else np.empty((0, codec.dim), np.float32)
        samples.append(tokens[rng.permutation(len(tokens))[:size]])
    return samples[0], samples[1], int(lengths.sum())


def _of_generation(batch: DocumentBatch, generation: int) -> DocumentBatch:
    """The documents of ``batch`` encoded by the codec of ``generation``."""
    return subset_batch(batch, np.flatnonzero(revision_generations(batch.revisions) == generation % GENERATIONS))


def document_vectors(batch: DocumentBatch, codec: ResidualCodec, encode_texts: TextEncoder | None) -> list[np.ndarray]:
    """Each document's unit token vectors: its text through ``encode_texts`` where both exist,
    otherwise its stored codes decoded by ``codec``."""
    documents = np.split(codec.decompress(batch.centroid_ids, batch.residuals), batch.token_offsets[1:-1])
    with_text = [i for i, text in enumerate(batch.texts) if text] if encode_texts is not None else []
    if with_text:
        assert encode_texts is not None
        for i, encoded in zip(with_text, encode_texts([str(batch.texts[i]) for i in with_text])):
            what = f"encoded text of {batch.ids[i]!r}"
            documents[i] = normalise_rows(check_matrix(encoded, codec.dim, what), what)
    return documents


def reencode(
    batch: DocumentBatch,
    old: ResidualCodec,
    new: ResidualCodec,
    generation: int,
    encode_texts: TextEncoder | None = None,
) -> DocumentBatch:
    """``batch`` encoded by ``new`` from :func:`document_vectors`. Ids, texts and metadata are
    kept; revisions are new."""
    documents = document_vectors(batch, old, encode_texts)
    vectors = np.concatenate(documents)
    centroid_ids, residuals = new.compress(vectors)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in documents])]).astype(np.int64)
    return DocumentBatch(
        ids=batch.ids,
        revisions=new_revisions(len(batch), generation),
        token_offsets=offsets,
        centroid_ids=centroid_ids,
        residuals=residuals,
        texts=batch.texts,
        metadata=batch.metadata,
        sq_errors=np.add.reduceat(new.sq_errors(vectors, centroid_ids, residuals), offsets[:-1]),
    )
