"""ColBERTv2 residual codec: nearest centroid id plus a residual quantized to ``nbits`` per dimension.

ColBERTv2 quantizes each residual dimension on its own, with one set of bucket cutoffs shared by
every dimension, and packs the bucket numbers. Here each byte of the packed residual is instead a
code into its own learned table of 256 sub-vectors over the ``8 // nbits`` dimensions it covers
(product quantization at the same bit budget):

1. the space is rotated onto the principal axes of the training residuals, and the axes are dealt
   to the bytes so that every byte covers about the same variance;
2. each byte's table starts as the product of per-dimension Lloyd-Max buckets (ColBERTv2's
   quantizer, fitted per dimension) and is refined by k-means on the residuals.

Decoding stays one table lookup per byte. The rotation is orthogonal, so the codec works in the
rotated space throughout (centroids included) and dot products are unchanged; queries are rotated
once (:meth:`ResidualCodec.rotate`).

Search ranks documents by query dot products, so what matters is the error of ``q . v``, not of
``v``. Given a sample of query token vectors, the residuals are quantized in a space stretched by
the square root of the queries' second moment ``E[q q^T]``, where squared error *is* the expected
squared error of a query dot product; a residual then decodes through ``residual_basis``, which
maps that space back. Query tokens share directions that document tokens do not weigh as much, so
this raises recall at the same size (see ``benchmarks/README.md``).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
import torch

from colbert_store.bitpack import SUPPORTED_NBITS, unpack
from colbert_store.errors import IncompatibleIndexError
from colbert_store.kmeans import CentroidGroups, nearest_centroids, spherical_kmeans

_COMPRESS_CHUNK = 65_536
_DECODE_CHUNK = 4096  # tokens decoded at once for their norms: buffers small enough for the allocator to reuse
_LLOYD_ITERATIONS = 6
_CODEBOOK_ITERATIONS = 6
_CODEBOOK_SAMPLE = 65_536  # residuals the codebooks are fitted on: 256 per entry
_CODEBOOK_SIZE = 256
_MIN_LEARNED_SAMPLE = 64 * _CODEBOOK_SIZE
_ASSIGN_FLOATS = 1 << 20  # distance entries per step while assigning codes: small enough to stay in cache
_VECTORS_PER_CENTROID = 8
_QUERY_WEIGHT_RIDGE = 0.01  # every direction keeps at least this share of the mean query weight
_TOP_CENTROID_FRACTION = 0.01


def default_centroid_count(n_tokens: int, n_sample: int | None = None) -> int:
    """The largest power of two at most ``16 * sqrt(n_tokens)`` (ColBERTv2's rule), at least 16, and at most one
    centroid per 8 training vectors when ``n_sample`` is given (so residuals stay worth quantizing).

    >>> default_centroid_count(1_200_000)
    16384
    >>> default_centroid_count(93, n_sample=93)
    8
    """
    target = 16 * math.sqrt(max(n_tokens, 1))
    count = max(16, 2 ** math.floor(math.log2(target)))
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
    """Fitted codec parameters, all in the codec's rotated space: unit-norm ``centroids`` (k, dim),
    per-byte ``codebooks`` (dim * nbits / 8, 256, 8 / nbits) and the orthogonal ``rotation``
    (dim, dim) taking a vector ``v`` to ``v @ rotation.T``. The ``reference_*`` values describe the
    training sample (mean squared reconstruction error per token; share of tokens in the largest 1%
    of centroids), the yardsticks for how well the codec fits later data (NaN if unknown).

    A codec fitted with query vectors has ``query_moment`` (dim, dim), their second moment in the
    original space (kept so a retrain can weigh errors the same way), and, unless its sample was
    too small for learned codebooks, ``residual_basis`` (dim, dim): a residual decodes to its
    concatenated byte entries times this matrix. ``None`` otherwise (the entries are the residual)."""

    centroids: np.ndarray
    codebooks: np.ndarray
    rotation: np.ndarray
    nbits: int
    reference_sq_error: float = float("nan")
    reference_top_centroid_share: float = float("nan")
    residual_basis: np.ndarray | None = None
    query_moment: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def n_centroids(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def packed_bytes_per_token(self) -> int:
        return self.dim * self.nbits // 8

    @property
    def stored_bytes_per_token(self) -> int:
        """Bytes a stored token takes: its packed residual and its centroid id."""
        return self.packed_bytes_per_token + centroid_id_dtype(self.n_centroids).itemsize

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
        query_moment: np.ndarray | None = None,
    ) -> ResidualCodec:
        """Fit centroids by spherical k-means on ``sample`` and the residual quantizer on its residuals.

        With ``query_moment`` (:func:`query_second_moment` of query token vectors), the quantizer
        minimises the squared error of query dot products instead of the vectors' (module docstring).

        A sample under ``_MIN_LEARNED_SAMPLE`` tokens (too few to learn 256 sub-vectors per byte
        without overfitting) gets ColBERTv2's per-dimension quantizer instead: product codebooks,
        no rotation and no query weighting.

        ``reference_sq_error`` is measured on ``reference`` (held-out unit vectors; default: the
        sample), ``reference_top_centroid_share`` on the sample.
        """
        if nbits not in SUPPORTED_NBITS:
            raise ValueError(f"nbits must be one of {SUPPORTED_NBITS}, got {nbits}")
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        centroids = spherical_kmeans(sample, n_centroids, iterations=kmeans_iterations, seed=seed)
        sample_ids = nearest_centroids(torch.from_numpy(sample), torch.from_numpy(centroids)).numpy()
        residuals = sample - centroids[sample_ids]
        learned = len(sample) >= _MIN_LEARNED_SAMPLE
        rotation = _balanced_principal_axes(residuals, 8 // nbits) if learned else np.eye(sample.shape[1], dtype=np.float32)
        # Rounded to float16, as they are stored (half the codec's bytes; a 1e-3 relative change,
        # far below the residual quantizer's), before any residual is measured from them.
        centroids = _rotate(centroids, rotation).astype(np.float16).astype(np.float32)
        residuals = _rotate(sample, rotation) - centroids[sample_ids]
        basis = None
        if not learned:
            codebooks = _product_codebooks(_fit_bucket_weights(residuals, nbits), nbits)
        elif query_moment is None:
            codebooks = _fit_codebooks(residuals, nbits, seed)
        else:
            weight = _square_root(rotation @ query_moment @ rotation.T, _QUERY_WEIGHT_RIDGE)
            weighted = _times(residuals, weight)
            axes = _balanced_principal_axes(weighted, 8 // nbits)
            codebooks = _fit_codebooks(_times(weighted, axes.T), nbits, seed)
            basis = (axes.astype(np.float64) @ np.linalg.inv(weight)).astype(np.float32)
        codec = cls(
            centroids=centroids,
            codebooks=codebooks,
            rotation=rotation,
            nbits=nbits,
            residual_basis=basis,
            query_moment=None if query_moment is None else np.asarray(query_moment, dtype=np.float32),
        )
        reference = sample if reference is None else np.ascontiguousarray(reference, dtype=np.float32)
        return replace(
            codec,
            reference_sq_error=float(codec.sq_errors(reference, *codec.compress(reference)).mean()),
            reference_top_centroid_share=top_centroid_share(np.bincount(sample_ids, minlength=len(centroids))),
        )

    def rotate(self, vectors: np.ndarray) -> np.ndarray:
        """``(n, dim)`` vectors in the codec's space (float32): dot products with decoded tokens are kept."""
        return _rotate(vectors, self.rotation)

    def compress(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encode ``(n, dim)`` vectors as centroid ids ``(n,)`` and packed residuals ``(n, dim*nbits/8)`` uint8."""
        ids = np.empty(len(vectors), dtype=centroid_id_dtype(self.n_centroids))
        packed = np.empty((len(vectors), self.packed_bytes_per_token), dtype=np.uint8)
        centroids = torch.from_numpy(self.centroids)
        groups = CentroidGroups.build(centroids) if self.n_centroids > 2048 else None
        for start in range(0, len(vectors), _COMPRESS_CHUNK):
            chunk = self.rotate(vectors[start : start + _COMPRESS_CHUNK])
            chunk_ids = nearest_centroids(torch.from_numpy(chunk), centroids, groups).numpy()
            residuals = chunk - self.centroids[chunk_ids]
            if self._residual_encoder is not None:
                residuals = _times(residuals, self._residual_encoder)
            ids[start : start + len(chunk)] = chunk_ids
            packed[start : start + len(chunk)] = _nearest_codes(residuals, self.codebooks).T
        return ids, packed

    def sq_errors(self, vectors: np.ndarray, ids: np.ndarray, packed: np.ndarray) -> np.ndarray:
        """Per token, the squared distance between a unit ``vectors`` row and its decoded form (float64)."""
        errors = np.empty(len(vectors), dtype=np.float64)
        for start in range(0, len(vectors), _COMPRESS_CHUNK):
            stop = start + _COMPRESS_CHUNK
            decoded = self.decompress_tensor(ids[start:stop], packed[start:stop])
            difference = torch.from_numpy(self.rotate(vectors[start:stop])) - decoded
            errors[start : start + len(decoded)] = difference.square().sum(dim=1).numpy()
        return errors

    def decompress(self, ids: np.ndarray, packed: np.ndarray) -> np.ndarray:
        """Rebuild unit-norm float32 vectors (in the original space) from centroid ids and packed residuals."""
        return (self.decompress_tensor(ids, packed) @ torch.from_numpy(self.rotation)).numpy()

    def decompress_tensor(self, ids: np.ndarray, packed: np.ndarray) -> torch.Tensor:
        """Decoded unit-norm vectors in the codec's space: one table lookup per packed byte."""
        return torch.nn.functional.normalize(self._decode(ids, packed), dim=1)

    def inverse_norms(self, ids: np.ndarray, packed: np.ndarray) -> np.ndarray:
        """``1 / |centroid + residual|`` per token (float32): the factor that renormalises a decoded token."""
        inverse = np.empty(len(packed), dtype=np.float32)
        for start in range(0, len(packed), _DECODE_CHUNK):
            stop = start + _DECODE_CHUNK
            inverse[start:stop] = (1 / torch.linalg.vector_norm(self._decode(ids[start:stop], packed[start:stop]), dim=1)).numpy()
        return inverse

    def query_tables(self, query: torch.Tensor) -> torch.Tensor:
        """Lookup tables ``(nbytes * 256, n_query_tokens)`` for a query in the codec's space: row
        ``256 * i + b`` holds each query token's dot product with the sub-vector byte ``i`` decodes ``b`` to."""
        if self.residual_basis is not None:  # q . (e @ basis) = (q @ basis.T) . e
            query = query @ torch.from_numpy(self.residual_basis).T
        n_bytes = self.packed_bytes_per_token
        tables = torch.empty((n_bytes * _CODEBOOK_SIZE, len(query)), dtype=torch.float32)
        parts = query.reshape(len(query), n_bytes, 8 // self.nbits).permute(1, 2, 0)  # (nbytes, per_byte, n_query)
        books = self._byte_table.view(n_bytes, _CODEBOOK_SIZE, -1)
        torch.bmm(books, parts, out=tables.view(n_bytes, _CODEBOOK_SIZE, len(query)))
        return tables

    def token_dots(
        self, ids: torch.Tensor, packed: torch.Tensor, tables: torch.Tensor, centroid_scores: torch.Tensor
    ) -> torch.Tensor:
        """``(n, n_query_tokens)`` dot products of tokens decoded from centroid ``ids`` (int32) and
        ``packed`` residuals (uint8), not renormalised, with the query of :meth:`query_tables` and of
        ``centroid_scores`` (``centroids @ query.T``): per token the sum of one table row per packed byte,
        plus its centroid's scores; no vector is decoded."""
        dots = torch.nn.functional.embedding_bag(self._table_rows(packed), tables, mode="sum")
        dots += centroid_scores.index_select(0, ids)
        return dots

    def _decode(self, ids: np.ndarray, packed: np.ndarray) -> torch.Tensor:
        """``centroid + residual`` per token in the codec's space, before renormalisation."""
        rows = self._table_rows(torch.from_numpy(packed))
        vectors = torch.nn.functional.embedding(rows, self._byte_table).reshape(len(packed), self.dim)
        if self.residual_basis is not None:
            vectors = vectors @ torch.from_numpy(self.residual_basis)
        vectors += torch.from_numpy(self.centroids.take(ids, axis=0))
        return vectors

    @cached_property
    def centroids_tensor(self) -> torch.Tensor:
        """The centroids as a torch tensor sharing their memory."""
        return torch.from_numpy(self.centroids)

    @cached_property
    def _byte_table(self) -> torch.Tensor:
        """``(nbytes * 256, 8 // nbits)`` sub-vectors: row ``256 * i + b`` decodes byte ``i`` holding ``b``."""
        return torch.from_numpy(np.ascontiguousarray(self.codebooks.reshape(-1, 8 // self.nbits), dtype=np.float32))

    def _table_rows(self, packed: torch.Tensor) -> torch.Tensor:
        """Row of ``_byte_table`` (and of :meth:`query_tables`) each packed byte selects."""
        return packed.to(torch.int32).add_(self._byte_table_offsets)  # in place: one int32 array, not two

    @cached_property
    def _residual_encoder(self) -> np.ndarray | None:
        """The inverse of ``residual_basis``: residual -> the space its bytes quantize."""
        if self.residual_basis is None:
            return None
        return np.linalg.inv(self.residual_basis.astype(np.float64)).astype(np.float32)

    @cached_property
    def _byte_table_offsets(self) -> torch.Tensor:
        return torch.arange(self.packed_bytes_per_token, dtype=torch.int32) * 256

    def to_bytes(self) -> bytes:
        """Serialise to a compressed ``.npz`` payload (plain arrays, no pickle)."""
        buffer = io.BytesIO()
        weighting: dict[str, Any] = {
            key: value
            for key, value in (("residual_basis", self.residual_basis), ("query_moment", self.query_moment))
            if value is not None
        }
        np.savez_compressed(
            buffer,
            centroids=_compact(self.centroids),
            codebooks=self.codebooks,
            rotation=self.rotation,
            nbits=np.array(self.nbits),
            reference_sq_error=np.array(self.reference_sq_error),
            reference_top_centroid_share=np.array(self.reference_top_centroid_share),
            **weighting,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, payload: bytes) -> ResidualCodec:
        """Inverse of :meth:`to_bytes`; a payload holding pickled objects or missing arrays raises
        :class:`~colbert_store.errors.IncompatibleIndexError` (nothing is unpickled).

        Codecs written before the product quantizer (per-dimension ``weights``, no rotation) load as
        the equivalent product codebooks with the identity rotation, and decode exactly as before.
        """
        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as arrays:
                centroids = arrays["centroids"].astype(np.float32)
                nbits = int(arrays["nbits"])
                if "codebooks" in arrays:
                    codebooks, rotation = arrays["codebooks"], arrays["rotation"]
                else:
                    codebooks = _product_codebooks(arrays["weights"].astype(np.float32), nbits)
                    rotation = np.eye(centroids.shape[1], dtype=np.float32)
                return cls(
                    centroids=centroids,
                    codebooks=codebooks.astype(np.float32),
                    rotation=rotation.astype(np.float32),
                    nbits=nbits,
                    reference_sq_error=float(arrays["reference_sq_error"]),
                    reference_top_centroid_share=float(arrays["reference_top_centroid_share"]),
                    residual_basis=_optional_matrix(arrays, "residual_basis"),
                    query_moment=_optional_matrix(arrays, "query_moment"),
                )
        except (ValueError, KeyError, OSError) as error:
            raise IncompatibleIndexError(f"the stored codec is not a codec this version can read: {error}") from None


def query_second_moment(queries: np.ndarray) -> np.ndarray:
    """``E[q q^T]`` (dim, dim) over unit query token vectors ``(n, dim)``, float32: what
    :meth:`ResidualCodec.fit` weighs residual errors by."""
    points = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float64))
    return (points.T @ points / max(len(points), 1)).numpy().astype(np.float32)


def _optional_matrix(arrays: Any, key: str) -> np.ndarray | None:
    return arrays[key].astype(np.float32) if key in arrays else None


def _square_root(moment: np.ndarray, ridge: float) -> np.ndarray:
    """The symmetric square root of ``moment`` scaled to mean eigenvalue 1, plus ``ridge`` times the identity."""
    eigenvalues, vectors = np.linalg.eigh(moment.astype(np.float64))
    eigenvalues = np.maximum(eigenvalues, 0) / max(eigenvalues.mean(), 1e-12) + ridge
    return ((vectors * np.sqrt(eigenvalues)) @ vectors.T).astype(np.float32)


def _compact(values: np.ndarray) -> np.ndarray:
    """``values`` as float16 where that loses nothing (a fitted codec's centroids), else unchanged."""
    half = values.astype(np.float16)
    return half if np.array_equal(half.astype(values.dtype), values) else values


def _bucketize(residuals: np.ndarray, cutoffs: np.ndarray) -> np.ndarray:
    """Bucket index per value: how many of its dimension's cutoffs it reaches."""
    per_dimension = torch.from_numpy(np.ascontiguousarray(residuals.T))
    buckets = torch.searchsorted(torch.from_numpy(np.ascontiguousarray(cutoffs)), per_dimension, right=True)
    return buckets.T.numpy().astype(np.uint8)


def _fit_bucket_weights(residuals: np.ndarray, nbits: int) -> np.ndarray:
    """Per-dimension Lloyd-Max quantizer's ``(dim, 2**nbits)`` bucket weights (the bucket means;
    cutoffs start at quantiles and end midway between weights)."""
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
    return weights


def _rotate(vectors: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """``vectors @ rotation.T`` in float32."""
    return _times(vectors, rotation.T)


def _times(vectors: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``vectors @ matrix`` in float32, through torch: numpy's BLAS threads would spin against
    torch's on the same cores, which can make a small matmul take milliseconds instead of microseconds."""
    return (torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)) @ torch.from_numpy(matrix)).numpy()


def _product_codebooks(weights: np.ndarray, nbits: int) -> np.ndarray:
    """Per-dimension bucket ``weights`` (dim, 2**nbits) as per-byte tables (dim * nbits / 8, 256, 8 / nbits):
    entry ``b`` of byte ``i`` holds the weights its packed buckets select."""
    per_byte = 8 // nbits
    codes = unpack(np.arange(_CODEBOOK_SIZE, dtype=np.uint8)[:, None], nbits)  # (256, per_byte)
    dims = np.arange(len(weights)).reshape(-1, per_byte)  # (nbytes, per_byte)
    return np.ascontiguousarray(weights[dims[:, None, :], codes[None, :, :]], dtype=np.float32)


def _balanced_principal_axes(residuals: np.ndarray, per_byte: int) -> np.ndarray:
    """An orthogonal (dim, dim) rotation onto the residuals' principal axes, rows grouped so that
    each run of ``per_byte`` rows (one packed byte) spans about the same variance: the axes are
    dealt in rounds from the largest variance down, one per byte and round, the largest of a round
    going to the byte whose variances multiply to the least so far (OPQ's eigenvalue allocation)."""
    points = torch.from_numpy(np.ascontiguousarray(residuals, dtype=np.float64))
    variances, axes = (t.numpy() for t in torch.linalg.eigh(points.T @ points / max(len(points), 1)))
    order = np.argsort(variances)[::-1]
    n_bytes = len(order) // per_byte
    log_totals = np.zeros(n_bytes)
    members = np.empty((n_bytes, per_byte), dtype=np.int64)
    for round_ in range(per_byte):
        dealt = order[round_ * n_bytes : (round_ + 1) * n_bytes]
        receivers = np.argsort(log_totals, kind="stable")
        members[receivers, round_] = dealt
        log_totals[receivers] += np.log(np.maximum(variances[dealt], 1e-12))
    return np.ascontiguousarray(axes[:, members.ravel()].T, dtype=np.float32)


def _fit_codebooks(residuals: np.ndarray, nbits: int, seed: int) -> np.ndarray:
    """Per-byte codebooks: the product of per-dimension Lloyd-Max buckets, refined by k-means
    (both on at most ``_CODEBOOK_SAMPLE`` of the residuals)."""
    if len(residuals) > _CODEBOOK_SAMPLE:
        residuals = residuals[np.random.default_rng(seed).choice(len(residuals), _CODEBOOK_SAMPLE, replace=False)]
    codebooks = torch.from_numpy(_product_codebooks(_fit_bucket_weights(residuals, nbits), nbits))
    n_bytes, size, per_byte = codebooks.shape
    points = torch.from_numpy(np.ascontiguousarray(residuals, dtype=np.float32)).reshape(-1, n_bytes, per_byte)
    points = points.transpose(0, 1).contiguous()  # (n_bytes, n, per_byte)
    for _ in range(_CODEBOOK_ITERATIONS):
        codes = torch.from_numpy(_nearest_codes(residuals, codebooks.numpy())).long()  # (n_bytes, n)
        sums = torch.zeros_like(codebooks).scatter_add_(1, codes[:, :, None].expand(-1, -1, per_byte), points)
        counts = torch.zeros((n_bytes, size)).scatter_add_(1, codes, torch.ones(codes.shape))
        codebooks = torch.where(counts[:, :, None] > 0, sums / counts.clamp(min=1)[:, :, None], codebooks)
    return codebooks.numpy()


def _nearest_codes(residuals: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """``(n_bytes, n)`` uint8: per byte, the nearest entry of its codebook to the residual's sub-vector."""
    n_bytes, size, per_byte = codebooks.shape
    books = torch.from_numpy(np.ascontiguousarray(codebooks))
    half_norms = books.square().sum(dim=2)[:, None, :] / 2  # (n_bytes, 1, size)
    books_t = books.transpose(1, 2).contiguous()  # (n_bytes, per_byte, size)
    points = torch.from_numpy(np.ascontiguousarray(residuals, dtype=np.float32)).reshape(-1, n_bytes, per_byte)
    points = points.transpose(0, 1).contiguous()  # (n_bytes, n, per_byte)
    codes = np.empty((n_bytes, points.shape[1]), dtype=np.uint8)
    step = max(1, _ASSIGN_FLOATS // (n_bytes * size))
    for start in range(0, points.shape[1], step):
        # argmin |x - b|^2 = argmax x.b - |b|^2 / 2
        scores = torch.baddbmm(half_norms, points[:, start : start + step], books_t, beta=-1)
        # numpy's argmax along the last axis is SIMD, faster here than torch's (same first-max ties)
        codes[:, start : start + step] = scores.numpy().argmax(axis=2)
    return codes
