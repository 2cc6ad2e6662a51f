"""The PLAID-style search pipeline: probe centroids, candidates from the store, approximate scores
from centroid ids alone, then exact MaxSim on the decompressed survivors."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from colbert_store.cache import DocumentCache, token_positions
from colbert_store.codec import ResidualCodec
from colbert_store.errors import InvalidInputError
from colbert_store.filters import Filter
from colbert_store.maxsim import segment_max_sum
from colbert_store.storage import DocumentBatch, Store


@dataclass(frozen=True)
class SearchParams:
    """Search knobs.

    Attributes:
        nprobe: centroids probed per query token for candidate generation.
        ncandidates: documents kept after approximate scoring, rescored exactly.
        centroid_threshold: centroids whose best score against any query token is below this are
            ignored by the approximate scorer (PLAID's centroid pruning); ``None`` disables it.
    """

    nprobe: int = 4
    ncandidates: int = 256
    centroid_threshold: float | None = 0.4

    def __post_init__(self) -> None:
        if not isinstance(self.nprobe, int) or self.nprobe < 1:
            raise InvalidInputError(f"nprobe must be a positive integer, got {self.nprobe!r}")
        if not isinstance(self.ncandidates, int) or self.ncandidates < 1:
            raise InvalidInputError(f"ncandidates must be a positive integer, got {self.ncandidates!r}")
        if self.centroid_threshold is not None and not isinstance(self.centroid_threshold, (int, float)):
            raise InvalidInputError(f"centroid_threshold must be a number or None, got {self.centroid_threshold!r}")

    def updated(self, **overrides: Any) -> SearchParams:
        """A copy with some knobs changed (unknown names raise)."""
        unknown = set(overrides) - {"nprobe", "ncandidates", "centroid_threshold"}
        if unknown:
            raise InvalidInputError(f"unknown search parameters: {sorted(unknown)}")
        return replace(self, **overrides)


@dataclass(frozen=True)
class ScoredDocuments:
    """Top documents of one query: positions in ``batch`` and their exact scores, best first."""

    batch: DocumentBatch
    rows: np.ndarray
    scores: np.ndarray


def search_one(
    store: Store,
    name: str,
    codec: ResidualCodec,
    cache: DocumentCache,
    query: np.ndarray,
    k: int,
    where: Filter | None,
    params: SearchParams,
) -> ScoredDocuments:
    """Run the whole pipeline for one ``(n_query_tokens, dim)`` query."""
    query_t = torch.from_numpy(query)
    centroid_scores = query_t @ torch.from_numpy(codec.centroids).T  # (n_query_tokens, n_centroids)
    nprobe = min(params.nprobe, codec.n_centroids)
    probes = centroid_scores.topk(nprobe, dim=1).indices.unique().numpy()
    candidates = store.candidates(name, probes, where)
    if len(candidates.revisions) < k:  # too few share a probed centroid (e.g. a selective filter)
        candidates = store.candidates(name, None, where)
    batch, slots = _cached_documents(store, name, cache, candidates.revisions)
    if not len(slots):
        return ScoredDocuments(batch, slots, np.empty(0, np.float32))
    shortlist = _approximate_top(batch, slots, centroid_scores, params)
    positions, owner = token_positions(batch.token_offsets, shortlist)
    vectors = codec.decompress(batch.centroid_ids[positions], batch.residuals[positions])
    lengths = np.bincount(owner, minlength=len(shortlist))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    exact = segment_max_sum(torch.from_numpy(vectors) @ query_t.T, offsets)
    best = exact.topk(min(k, len(shortlist))).indices.numpy()
    return ScoredDocuments(batch, shortlist[best], exact.numpy()[best])


def _cached_documents(
    store: Store, name: str, cache: DocumentCache, revisions: np.ndarray
) -> tuple[DocumentBatch, np.ndarray]:
    """Cache slots of the candidate revisions, fetching the missing ones from the store first."""
    batch, slots = cache.lookup(revisions)
    missing = revisions[slots < 0]
    if len(missing):
        cache.insert(store.fetch(name, missing))
        batch, slots = cache.lookup(revisions)
    return batch, slots[slots >= 0]  # documents replaced or deleted since the candidate query drop out


def _approximate_top(
    batch: DocumentBatch, slots: np.ndarray, centroid_scores: torch.Tensor, params: SearchParams
) -> np.ndarray:
    """Slots of the ``ncandidates`` best documents by centroid-only MaxSim (PLAID stages 2-3)."""
    if len(slots) <= params.ncandidates:
        return slots
    positions, owner = token_positions(batch.token_offsets, slots)
    codes = torch.from_numpy(batch.centroid_ids[positions].astype(np.int64))
    owner_t = torch.from_numpy(owner)
    if params.centroid_threshold is not None:
        relevant = centroid_scores.max(dim=0).values >= params.centroid_threshold
        keep = relevant[codes]
        codes, owner_t = codes[keep], owner_t[keep]
    token_scores = centroid_scores[:, codes].T  # (n_kept_tokens, n_query_tokens)
    best = torch.zeros((len(slots), centroid_scores.shape[0]), dtype=token_scores.dtype)
    best.scatter_reduce_(0, owner_t[:, None].expand_as(token_scores), token_scores, reduce="amax")
    approx = best.sum(dim=1)
    top = approx.topk(params.ncandidates).indices.numpy()
    return slots[top]
