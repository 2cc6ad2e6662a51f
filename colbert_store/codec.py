"""ColBERTv2 residual codec: nearest centroid id plus a per-dimension quantized, bit-packed residual.

Compared with ColBERTv2's single set of bucket cutoffs shared by every dimension, the cutoffs and
bucket weights here are fitted per dimension (quantile start, then Lloyd-Max refinement), which
lowers the reconstruction error at the same bit budget.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch

from colbert_store.bitpack import SUPPORTED_NBITS, pack, unpack
from colbert_store.errors import IncompatibleIndexError
from colbert_store.kmeans import CentroidGroups, nearest_centroids, spherical_kmeans

_COMPRESS_CHUNK = 65_536
_LLOYD_ITERATIONS = 6
_VECTORS_PER_CENTROID = 8
_TOP_CENTROID_FRACTION = 0.01


def default_centroid_count(n_tokens: int, n_sample: int | None = None) -> int:
    """A power of two near ``16 * sqrt(n_tokens)`` (ColBERTv2's rule), at least 16, and at most one
    centroid per 8 training vectors when ``n_sample`` is given (so residuals stay worth quantizing).

    >>> default_centroid_count(1_200_000)
    16384
    >>> default_centroid_count(93, n_sample=93)
    8
    """
    target = 16 * math.sqrt(max(n_tokens, 1))
    count = max(16, 2 ** round(math.log2(target)))
    if n_sample is not None:
        count = min(count, 2 ** max(0, int(math.log2(max(n_sample // _VECTORS_PER_CENTROID, 1)))))
    return count


def top_centroid_share(token_counts: np.ndarray) -> float:
    """Share of all tokens held by the largest 1% of centroids (at least one).

    >>> top_centroid_share(np.array([5, 1, 1, 1]))
    0.625
    """
    total = int(token_counts.sum())
    if not total:
        return 0.0
    top = max(1, int(len(token_counts) * _TOP_CENTROID_FRACTION))
    return float(np.sort(token_counts)[-top:].sum() / total)


def centroid_id_dtype(n_centroids: int) -> np.dtype:
    """The narrowest unsigned integer type holding ids ``0 .. n_centroids - 1``."""
    return np.dtype(np.uint16) if n_centroids <= 1 << 16 else np.dtype(np.uint32)


@dataclass(frozen=True)
class ResidualCodec:
    """Fitted codec parameters: unit-norm ``centroids`` (k, dim), per-dimension ``cutoffs``
    (dim, 2**nbits - 1) and bucket ``weights`` (dim, 2**nbits). The ``reference_*`` values describe
    the training sample (mean squared reconstruction error per token; share of tokens in the largest
    1% of centroids), the yardsticks for how well the codec fits later data (NaN if unknown)."""

    centroids: np.ndarray
    cutoffs: np.ndarray
    weights: np.ndarray
    nbits: int
    reference_sq_error: float = float("nan")
    reference_top_centroid_share: float = float("nan")

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def n_centroids(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def packed_bytes_per_token(self) -> int:
        return self.dim * self.nbits // 8

    @classmethod
    def fit(
        cls,
        sample: np.ndarray,
        *,
        nbits: int,
        n_centroids: int,
        kmeans_iterations: int = 8,
        seed: int = 0,
        reference: np.ndarray | None = None,
    ) -> ResidualCodec:
        """Fit centroids by spherical k-means on ``sample`` and the residual quantizer on its residuals.

        ``reference_sq_error`` is measured on ``reference`` (held-out unit vectors; default: the
        sample), ``reference_top_centroid_share`` on the sample.
        """
        if nbits not in SUPPORTED_NBITS:
            raise ValueError(f"nbits must be one of {SUPPORTED_NBITS}, got {nbits}")
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        # Rounded to float16, as they are stored (half the codec's bytes; a 1e-3 relative change,
        # far below the residual quantizer's), before any residual is measured from them.
        centroids = spherical_kmeans(sample, n_centroids, iterations=kmeans_iterations, seed=seed)
        centroids = centroids.astype(np.float16).astype(np.float32)
        sample_ids = nearest_centroids(torch.from_numpy(sample), torch.from_numpy(centroids)).numpy()
        cutoffs, weights = _fit_scalar_quantizer(sample - centroids[sample_ids], nbits)
        codec = cls(centroids=centroids, cutoffs=cutoffs, weights=weights, nbits=nbits)
        reference = sample if reference is None else np.ascontiguousarray(reference, dtype=np.float32)
        return replace(
            codec,
            reference_sq_error=float(codec.sq_errors(reference, *codec.compress(reference)).mean()),
            reference_top_centroid_share=top_centroid_share(np.bincount(sample_ids, minlength=len(centroids))),
        )

    def compress(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encode ``(n, dim)`` vectors as centroid ids ``(n,)`` and packed residuals ``(n, dim*nbits/8)`` uint8."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.empty(len(vectors), dtype=centroid_id_dtype(self.n_centroids))
        packed = np.empty((len(vectors), self.packed_bytes_per_token), dtype=np.uint8)
        centroids = torch.from_numpy(self.centroids)
        groups = CentroidGroups.build(centroids) if self.n_centroids > 2048 else None
        for start in range(0, len(vectors), _COMPRESS_CHUNK):
            chunk = vectors[start : start + _COMPRESS_CHUNK]
            chunk_ids = nearest_centroids(torch.from_numpy(chunk), centroids, groups).numpy()
            residuals = chunk - self.centroids[chunk_ids]
            ids[start : start + len(chunk)] = chunk_ids
            packed[start : start + len(chunk)] = pack(_bucketize(residuals, self.cutoffs), self.nbits)
        return ids, packed

    def sq_errors(self, vectors: np.ndarray, ids: np.ndarray, packed: np.ndarray) -> np.ndarray:
        """Per token, the squared distance between a unit ``vectors`` row and its decoded form (float64)."""
        errors = np.empty(len(vectors), dtype=np.float64)
        for start in range(0, len(vectors), _COMPRESS_CHUNK):
            stop = start + _COMPRESS_CHUNK
            decoded = self.decompress_tensor(ids[start:stop], packed[start:stop])
            difference = torch.from_numpy(np.ascontiguousarray(vectors[start:stop], dtype=np.float32)) - decoded
            errors[start : start + len(decoded)] = difference.square().sum(dim=1).numpy()
        return errors

    def decompress(self, ids: np.ndarray, packed: np.ndarray) -> np.ndarray:
        """Rebuild unit-norm float32 vectors from centroid ids and packed residuals."""
        return self.decompress_tensor(ids, packed).numpy()

    def decompress_tensor(self, ids: np.ndarray, packed: np.ndarray) -> torch.Tensor:
        """:meth:`decompress` as a torch tensor: one lookup per packed byte gives its dimensions' weights."""
        n = len(packed)
        rows = torch.from_numpy(packed).to(torch.int32) + self._byte_table_offsets
        vectors = torch.nn.functional.embedding(rows, self._byte_table).reshape(n, self.dim)
        vectors += torch.from_numpy(self.centroids.take(ids, axis=0))
        return torch.nn.functional.normalize(vectors, dim=1)

    @cached_property
    def centroids_tensor(self) -> torch.Tensor:
        """The centroids as a torch tensor sharing their memory."""
        return torch.from_numpy(self.centroids)

    @cached_property
    def _byte_table(self) -> torch.Tensor:
        """``(nbytes * 256, 8 // nbits)`` residual weights: row ``256 * i + b`` decodes byte ``i`` holding ``b``."""
        codes_per_byte = 8 // self.nbits
        codes = unpack(np.arange(256, dtype=np.uint8)[:, None], self.nbits)  # (256, codes_per_byte)
        dims = np.arange(self.dim).reshape(-1, codes_per_byte)  # (nbytes, codes_per_byte)
        table = self.weights[dims[:, None, :], codes[None, :, :]]  # (nbytes, 256, codes_per_byte)
        return torch.from_numpy(np.ascontiguousarray(table.reshape(-1, codes_per_byte), dtype=np.float32))

    @cached_property
    def _byte_table_offsets(self) -> torch.Tensor:
        return torch.arange(self.packed_bytes_per_token, dtype=torch.int32) * 256

    def to_bytes(self) -> bytes:
        """Serialise to an ``.npz`` payload (plain arrays, no pickle)."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            centroids=_compact(self.centroids),
            cutoffs=self.cutoffs,
            weights=self.weights,
            nbits=np.array(self.nbits),
            reference_sq_error=np.array(self.reference_sq_error),
            reference_top_centroid_share=np.array(self.reference_top_centroid_share),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, payload: bytes) -> ResidualCodec:
        """Inverse of :meth:`to_bytes`; a payload holding pickled objects or missing arrays raises
        :class:`~colbert_store.errors.IncompatibleIndexError` (nothing is unpickled)."""
        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as arrays:
                return cls(
                    centroids=arrays["centroids"].astype(np.float32),
                    cutoffs=arrays["cutoffs"].astype(np.float32),
                    weights=arrays["weights"].astype(np.float32),
                    nbits=int(arrays["nbits"]),
                    reference_sq_error=float(arrays["reference_sq_error"]),
                    reference_top_centroid_share=float(arrays["reference_top_centroid_share"]),
                )
        except (ValueError, KeyError, OSError) as error:
            raise IncompatibleIndexError(f"the stored codec is not a codec this version can read: {error}") from None


def _compact(values: np.ndarray) -> np.ndarray:
    """``values`` as float16 where that loses nothing (a fitted codec's centroids), else unchanged."""
    half = values.astype(np.float16)
    return half if np.array_equal(half.astype(values.dtype), values) else values


def _bucketize(residuals: np.ndarray, cutoffs: np.ndarray) -> np.ndarray:
    """Bucket index per value: how many of its dimension's cutoffs it reaches."""
    per_dimension = torch.from_numpy(np.ascontiguousarray(residuals.T))
    buckets = torch.searchsorted(torch.from_numpy(np.ascontiguousarray(cutoffs)), per_dimension, right=True)
    return buckets.T.numpy().astype(np.uint8)


def _fit_scalar_quantizer(residuals: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension Lloyd-Max quantizer: cutoffs start at quantiles; weights are bucket means."""
    n_buckets = 1 << nbits
    dim = residuals.shape[1]
    quantiles = np.arange(1, n_buckets) / n_buckets
    cutoffs = np.quantile(residuals, quantiles, axis=0).T.astype(np.float32)
    flat_offsets = np.arange(dim) * n_buckets
    weights = np.zeros((dim, n_buckets), dtype=np.float32)
    for _ in range(_LLOYD_ITERATIONS):
        flat = (_bucketize(residuals, cutoffs).astype(np.intp) + flat_offsets).ravel()
        sums = np.bincount(flat, weights=residuals.ravel(), minlength=dim * n_buckets)
        counts = np.bincount(flat, minlength=dim * n_buckets)
        means = sums / np.maximum(counts, 1)
        # An empty bucket keeps its previous weight (or its cutoff, at the start).
        fallback = np.concatenate([cutoffs[:, :1], cutoffs], axis=1).ravel() if not weights.any() else weights.ravel()
        weights = np.where(counts > 0, means, fallback).reshape(dim, n_buckets).astype(np.float32)
        weights.sort(axis=1)
        cutoffs = ((weights[:, 1:] + weights[:, :-1]) / 2).astype(np.float32)
    return cutoffs, weights
