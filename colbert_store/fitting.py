"""Fitting an index's codec: on a sample of the first documents added, or on documents drawn from the store."""

from __future__ import annotations

import logging

import numpy as np

from colbert_store.codec import ResidualCodec, default_centroid_count
from colbert_store.settings import IndexSettings

logger = logging.getLogger(__name__)

HOLDOUT_TOKENS = 16_384
"""Tokens left out of k-means to measure the codec's error on (the yardstick of ``Index.health``)."""


def fit_codec(
    settings: IndexSettings,
    sample: np.ndarray,
    held: np.ndarray,
    n_tokens: int,
    n_centroids: int | None = None,
    query_moment: np.ndarray | None = None,
) -> ResidualCodec:
    """A codec fitted on ``sample`` whose reference error is measured on the held-out tokens (an
    unbiased yardstick for the stored and future documents; the sample itself if none are held out)."""
    count = min(n_centroids or settings.n_centroids or default_centroid_count(n_tokens, len(sample)), len(sample))
    logger.info("training codec: %d centroids on %d of %d tokens", count, len(sample), n_tokens)
    return ResidualCodec.fit(
        sample,
        nbits=settings.nbits,
        n_centroids=count,
        kmeans_iterations=settings.kmeans_iterations,
        seed=settings.seed,
        reference=held if len(held) else None,
        query_moment=query_moment,
    )


def fit_first_codec(settings: IndexSettings, matrices: list[np.ndarray], query_moment: np.ndarray | None) -> ResidualCodec:
    """The codec of a new index, fitted on tokens drawn from the documents of its first add."""
    drawn = sample_tokens(matrices, settings.sample_tokens + HOLDOUT_TOKENS, settings.seed)
    n_held = min(HOLDOUT_TOKENS, len(drawn) // 8)
    return fit_codec(settings, drawn[n_held:], drawn[:n_held], sum(len(m) for m in matrices), query_moment=query_moment)


def sample_tokens(matrices: list[np.ndarray], limit: int, seed: int) -> np.ndarray:
    """Up to ``limit`` token vectors drawn uniformly from all documents, in random order."""
    lengths = np.array([len(m) for m in matrices])
    total = int(lengths.sum())
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(total, size=min(limit, total), replace=False))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    doc = np.searchsorted(offsets, picked, side="right") - 1
    bounds = np.searchsorted(doc, np.arange(len(matrices) + 1))
    tokens = np.concatenate([matrices[d][picked[bounds[d] : bounds[d + 1]] - offsets[d]] for d in np.unique(doc)])
    return tokens[rng.permutation(len(tokens))]
