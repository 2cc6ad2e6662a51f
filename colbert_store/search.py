"""The PLAID-style search pipeline: probe centroids, candidates from the store, approximate scores
from centroid ids alone, then exact MaxSim on the decompressed survivors.

The stages that gather scores per document run as compiled loops (:mod:`colbert_store.kernels`) once
those have loaded (:mod:`colbert_store.kernel_loading`), and as torch operations until then.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from functools import cached_property
from types import ModuleType
from typing import Any

import numpy as np
import torch

from colbert_store.cache import CachedDocuments
from colbert_store.centroid_lists import CentroidLists, range_positions
from colbert_store.codec import ResidualCodec
from colbert_store.errors import InvalidInputError
from colbert_store.filters import Filter
from colbert_store.kernel_loading import load_kernels, loaded_kernels
from colbert_store.maxsim import segment_max_sum
from colbert_store.reading import DocumentSource
from colbert_store.storage import DocumentBatch, PostingHolders, revision_generations
from colbert_store.validation import check_count

_PAIRS_AT_ONCE = 32_768
"""(document, centroid) pairs the torch approximate stages gather at once: buffers small enough for the allocator
to reuse (a process's first touch of fresh memory can cost more than the scoring)."""


@dataclass(frozen=True)
class SearchParams:
    """Search knobs.

    Attributes:
        nprobe: centroids probed per query token for candidate generation.
        ncandidates: documents kept after the pruned approximate scoring (from centroid ids).
        nrerank: of those, the most documents kept after unpruned approximate scoring (from centroid ids),
            then decompressed and rescored exactly (at least ``k``; all of them where no more survive).
        rerank_margin: of more than ``nrerank`` survivors, rescore only those whose unpruned approximate
            score is within this fraction of the ``k``-th best one's (at most ``nrerank``): a decisive
            approximate ranking rescores few, a flat one (as ``[MASK]``-padded queries give) more.
            ``None``: always ``nrerank``.
        centroid_threshold: centroids whose best score against any query token is below this are
            ignored by the approximate scorer (PLAID's centroid pruning); ``None`` disables it.
        max_pruned_pairs: the most (document, centroid) pairs the pruned scoring reads: where the
            centroids above the threshold hold more, only the best-scoring of them count (bounds the
            work on large indexes, whose centroids each hold many documents).
    """

    nprobe: int = 1
    ncandidates: int = 192
    nrerank: int = 96
    rerank_margin: float | None = 0.08
    centroid_threshold: float | None = 0.5
    max_pruned_pairs: int = 1 << 18

    def __post_init__(self) -> None:
        for knob in ("nprobe", "ncandidates", "nrerank", "max_pruned_pairs"):
            check_count(getattr(self, knob), knob)
        threshold, margin = self.centroid_threshold, self.rerank_margin
        if threshold is not None and not _is_finite_number(threshold):
            raise InvalidInputError(f"centroid_threshold must be a finite number or None, got {threshold!r}")
        if margin is not None and not (_is_finite_number(margin) and margin >= 0):
            raise InvalidInputError(f"rerank_margin must be a finite number >= 0 or None, got {margin!r}")

    def updated(self, **overrides: Any) -> SearchParams:
        """A copy with some knobs changed (unknown names raise)."""
        unknown = set(overrides) - {field.name for field in fields(self)}
        if unknown:
            raise InvalidInputError(f"unknown search parameters: {sorted(unknown)}")
        return replace(self, **overrides)


def _is_finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class ScoredDocuments:
    """Top documents of one query: positions in ``batch`` and their exact scores, best first;
    ``undecodable`` counts candidates of a codec generation the caller did not pass (written after
    its codecs were loaded)."""

    batch: DocumentBatch
    rows: np.ndarray
    scores: np.ndarray
    undecodable: int = 0


def search_one(
    source: DocumentSource,
    codecs: Mapping[int, ResidualCodec],
    query: np.ndarray,
    k: int,
    where: Filter | None,
    params: SearchParams,
    compiled: bool | None = None,
) -> ScoredDocuments:
    """Run the whole pipeline for one ``(n_query_tokens, dim)`` query.

    ``codecs`` maps a codec generation (modulo 256, as revisions carry it) to its codec: every codec
    a stored document may be encoded with (more than one while a retrain moves documents to a new
    codec). Candidates come from the store for the probes of every codec; each codec's documents are
    shortlisted by its own approximate stages, only the shortlists are read whole, and the exact scores,
    comparable across codecs, are merged. ``compiled``: run the compiled stages (``True``, loading them
    first if need be) or the torch ones (``False``); ``None``: the compiled ones if loaded.
    """
    kernels = loaded_kernels() if compiled is None else load_kernels() if compiled else None
    views = {generation: _QueryView.of(codec, query, params.nprobe, kernels) for generation, codec in codecs.items()}
    probes = np.unique(np.concatenate([view.probes for view in views.values()]))
    found = source.candidates_or_postings(probes, where)
    if isinstance(found, PostingHolders):
        found = _posted_candidates(source, found, views, params) or source.candidate_lists(probes, where)
    lists, slots = found
    if len(slots) < k:  # too few share a probed centroid (e.g. a selective filter)
        lists, slots = source.candidate_lists(None, where)
    generations = revision_generations(lists.revisions[slots])
    present = np.unique(generations)
    shortlists, undecodable = [], 0
    for generation in present:
        group = slots if len(present) == 1 else slots[generations == generation]
        view = views.get(int(generation))
        if view is None:
            undecodable += len(group)
            continue
        shortlists.append(_approximate_top(lists, group, view, k, params))
    finalists = lists.revisions[np.concatenate(shortlists)] if shortlists else lists.revisions[:0]
    docs, slots = source.documents(finalists)
    generations = revision_generations(docs.batch.revisions[slots])
    ranked = [
        _exact_top(docs, slots[generations == generation], views[int(generation)], k) for generation in np.unique(generations)
    ]
    if len(ranked) == 1:
        return ScoredDocuments(docs.batch, *ranked[0], undecodable)
    rows = np.concatenate([part[0] for part in ranked]) if ranked else slots[:0]
    scores = np.concatenate([part[1] for part in ranked]) if ranked else np.empty(0, np.float32)
    best = np.argsort(-scores, kind="stable")[:k]
    return ScoredDocuments(docs.batch, rows[best], scores[best], undecodable)


@dataclass(frozen=True)
class _QueryView:
    """A query as one codec sees it: rotated into the codec's space, its scores against every centroid
    ``(n_centroids, n_query_tokens)`` (contiguous: the stages gather whole rows), each centroid's best
    of those, its probes, and the compiled kernels the stages run on (``None``: torch's operations)."""

    codec: ResidualCodec
    query: torch.Tensor
    centroid_scores: torch.Tensor
    centroid_best: np.ndarray
    probes: np.ndarray
    kernels: ModuleType | None

    @classmethod
    def of(cls, codec: ResidualCodec, query: np.ndarray, nprobe: int, kernels: ModuleType | None) -> _QueryView:
        rotated = torch.from_numpy(codec.rotate(query))
        centroid_scores = codec.centroids_tensor @ rotated.T
        if kernels is not None:
            centroid_best, token_best = kernels.centroid_maxima(centroid_scores.numpy())
        else:
            centroid_best, token_best = centroid_scores.amax(dim=1).numpy(), None
        if nprobe > 1:
            token_best = centroid_scores.topk(min(nprobe, codec.n_centroids), dim=0).indices.numpy()
        elif token_best is None:  # torch's max along this axis is several times faster than its topk
            token_best = centroid_scores.max(dim=0).indices.numpy()
        return cls(codec, rotated, centroid_scores, centroid_best, np.unique(token_best), kernels)

    @cached_property
    def approx_scores(self) -> torch.Tensor:
        """The centroid scores the torch approximate stages read: they only choose whom to score exactly,
        so in half precision, zero-padded to a multiple of 16 query tokens, the widths at which torch's
        float16 ``scatter_reduce`` is fast (at most others it is 2-3x slower than float32); a zero column
        adds 0 to every score."""
        return torch.nn.functional.pad(self.centroid_scores, (0, -self.centroid_scores.shape[1] % 16)).half()


def _approximate_top(lists: CentroidLists, slots: np.ndarray, view: _QueryView, k: int, params: SearchParams) -> np.ndarray:
    """The slots of ``lists`` (documents of ``view``'s codec) worth scoring exactly: PLAID's stages 2 and 3."""
    if len(slots) > params.ncandidates:
        relevant = _relevant_centroids(view, params.centroid_threshold, lists.holder_counts, params.max_pruned_pairs)
        slots = _pruned_top(lists, slots, view, relevant, params.ncandidates)
    if len(slots) <= max(k, params.nrerank):
        return slots
    return slots[_finalists(_unpruned_scores(lists, slots, view), k, params)]


def _posted_candidates(
    source: DocumentSource, snapshot: PostingHolders, views: Mapping[int, _QueryView], params: SearchParams
) -> tuple[CentroidLists, np.ndarray] | None:
    """PLAID's stage 2 on the store's posting lists (``snapshot``): of each codec's documents holding a probe,
    the best ``ncandidates``, read into the document cache; their lists and slots there. It reads the lists
    of the centroids the stage counts alone, and scores as :func:`_approximate_top` does over lists of every
    document. ``None`` where the snapshot has a codec not loaded, or was replaced meanwhile."""
    if not snapshot.holders.keys() <= views.keys():
        return None
    holders = np.zeros(max(view.codec.n_centroids for view in views.values()), np.int64)
    for counts in snapshot.holders.values():  # counted over every document, as lists of them all count
        holders[: len(counts)] += counts[: len(holders)]
    threshold, max_pairs = params.centroid_threshold, params.max_pruned_pairs
    relevant = {g: _relevant_centroids(views[g], threshold, holders.__getitem__, max_pairs) for g in snapshot.holders}
    posted = source.posted_lists(snapshot, relevant)
    if posted is None:
        return None
    survivors = []
    for generation, lists in posted.items():
        slots = lists.slots_holding(views[generation].probes)
        if len(slots) > params.ncandidates:
            slots = _pruned_top(lists, slots, views[generation], relevant[generation], params.ncandidates)
        survivors.append(slots)  # a slot of posted lists is the document's position
    return source.posted_documents(np.concatenate(survivors)) if survivors else None


def _exact_top(docs: CachedDocuments, slots: np.ndarray, view: _QueryView, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of ``slots`` (cached documents of ``view``'s codec) and their exact scores, best first."""
    scores = _exact_scores(docs, slots, view)
    best = scores.topk(min(k, len(slots))).indices.numpy()
    return slots[best], scores.numpy()[best]


def _relevant_centroids(
    view: _QueryView, threshold: float | None, holder_counts: Callable[[np.ndarray], np.ndarray], max_pairs: int
) -> np.ndarray:
    """Centroids scoring at least ``threshold`` against some query token (all of them if ``None``), the
    best-scoring first, as many as ``holder_counts`` documents hold at most ``max_pairs`` times together;
    and the query tokens' probes however low they score, so that a token's best matches are never pruned away."""
    best = view.centroid_best
    relevant = np.arange(len(best)) if threshold is None else np.flatnonzero(best >= threshold)
    held = holder_counts(relevant)
    if held.sum() > max_pairs:
        order = np.argsort(-best[relevant], kind="stable")
        kept = max(1, int(np.searchsorted(np.cumsum(held[order]), max_pairs, side="right")))
        relevant = relevant[order[:kept]]
    chosen = np.zeros(len(best), dtype=bool)
    chosen[relevant] = True
    chosen[view.probes] = True
    return np.flatnonzero(chosen)


def _pruned_top(lists: CentroidLists, slots: np.ndarray, view: _QueryView, relevant: np.ndarray, keep: int) -> np.ndarray:
    """The ``keep`` best of ``slots`` by MaxSim over centroids, counting only the ``relevant`` centroids
    (PLAID stage 2 with centroid pruning), from inverted lists where ``lists`` has them."""
    if view.kernels is None:
        rows, centroids = lists.pairs_among(relevant, slots)
        approx = _max_sim_over_centroids(view.approx_scores, centroids, rows, len(slots))
        return slots[approx.topk(keep).indices.numpy()]
    centroid_scores = view.centroid_scores.numpy()
    if lists.inverted_lists:
        row_of_slot = np.full(len(lists), -1, dtype=np.int64)
        row_of_slot[slots] = np.arange(len(slots))
        best = np.zeros((len(slots), centroid_scores.shape[1]), dtype=np.float32)
        for inverted in lists.inverted_lists:
            view.kernels.listed_pair_maxima(inverted.offsets, inverted.slots, relevant, row_of_slot, centroid_scores, best)
        pruned = best.sum(axis=1)
    else:
        wanted = np.zeros(len(centroid_scores), dtype=np.bool_)
        wanted[relevant] = True
        pruned = view.kernels.scanned_max_sums(lists.offsets, lists.centroids, slots, wanted, centroid_scores)
    return slots[_top(pruned, keep)]


def _unpruned_scores(lists: CentroidLists, slots: np.ndarray, view: _QueryView) -> np.ndarray:
    """MaxSim of each slot with every token replaced by its centroid (PLAID stage 3), over each document's
    distinct centroids (fewer than its tokens: a centroid repeats within a document)."""
    if view.kernels is None:
        centroids, owner = lists.distinct_centroids_of(slots)
        return _max_sim_over_centroids(view.approx_scores, centroids, owner, len(slots)).numpy()
    every = np.ones(len(view.centroid_scores), dtype=np.bool_)
    return view.kernels.scanned_max_sums(lists.offsets, lists.centroids, slots, every, view.centroid_scores.numpy())


def _finalists(scores: np.ndarray, k: int, params: SearchParams) -> np.ndarray:
    """Positions of the documents to rescore exactly, from their unpruned approximate ``scores`` (more
    than ``max(k, nrerank)``): the best ``nrerank``, or those of them within ``rerank_margin`` of the
    ``k``-th best score (at least ``k``)."""
    best = _top(scores, max(k, params.nrerank))
    if params.rerank_margin is None:
        return best
    kth_best = np.partition(scores[best], len(best) - k)[len(best) - k]
    return best[scores[best] >= kth_best * (1 - params.rerank_margin)]


def _top(scores: np.ndarray, keep: int) -> np.ndarray:
    """Positions of the ``keep`` highest ``scores`` (in no particular order)."""
    if keep >= len(scores):
        return np.arange(len(scores))
    return np.argpartition(-scores, keep - 1)[:keep]


def _max_sim_over_centroids(
    approx_scores: torch.Tensor, centroids: np.ndarray, rows: np.ndarray, n_rows: int
) -> torch.Tensor:
    """Per row: sum over query tokens of the best score among the row's ``centroids`` (floored at 0), in float32."""
    best = torch.zeros((n_rows, approx_scores.shape[1]), dtype=approx_scores.dtype)
    ids, owners = torch.from_numpy(centroids.astype(np.int64, copy=False)), torch.from_numpy(rows)
    for start in range(0, len(centroids), _PAIRS_AT_ONCE):
        # (pairs, n_query_tokens); torch's row gather, since numpy's take is slow on float16 rows
        token_scores = approx_scores.index_select(0, ids[start : start + _PAIRS_AT_ONCE])
        best.scatter_reduce_(0, owners[start : start + _PAIRS_AT_ONCE, None].expand_as(token_scores), token_scores, reduce="amax")
    return best.sum(dim=1, dtype=torch.float32)


def _exact_scores(docs: CachedDocuments, slots: np.ndarray, view: _QueryView) -> torch.Tensor:
    """Exact MaxSim of the query against the decompressed documents in ``slots`` (PLAID stage 4).

    A decoded token is ``(c + r) / |c + r|``, so its dot product with a query token is the centroid's
    score (already known) plus the residual's, both read from per-query lookup tables, times the
    token's inverse norm (remembered by the cache): no vector is materialised.
    """
    batch = docs.batch
    starts = batch.token_offsets[slots]
    lengths = batch.token_offsets[slots + 1] - starts
    positions = range_positions(starts, lengths)
    rows = torch.from_numpy(positions)
    ids = torch.from_numpy(batch.centroid_ids[positions].astype(np.int32))
    packed = torch.from_numpy(batch.residuals).index_select(0, rows)
    codec = view.codec
    token_scores = codec.token_dots(ids, packed, codec.query_tables(view.query), view.centroid_scores)
    inverse_norms = docs.inverse_norms(positions, codec)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if view.kernels is not None:
        return torch.from_numpy(view.kernels.document_max_sums(token_scores.numpy(), inverse_norms, offsets))
    token_scores *= torch.from_numpy(inverse_norms)[:, None]
    return segment_max_sum(token_scores, offsets)
