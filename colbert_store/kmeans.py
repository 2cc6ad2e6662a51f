"""Spherical k-means and nearest-centroid assignment, vectorised in torch and processed in chunks."""

from __future__ import annotations

import logging
import sys
from functools import lru_cache

import numpy as np
import torch

logger = logging.getLogger(__name__)

_ASSIGN_CHUNK = 32_768
_SHORTLIST = 8


@lru_cache(maxsize=None)
def _cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as info:
            flags = info.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _use_bf16_shortlist(device: torch.device, n_centroids: int) -> bool:
    if n_centroids <= 4 * _SHORTLIST:
        return False
    return device.type == "cuda" or (device.type == "cpu" and _cpu_has_fast_bf16())


def nearest_centroids(vectors: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the centroid with the largest dot product for each row of ``vectors`` (int64).

    Where bfloat16 is fast, a bf16 matmul shortlists the best few centroids and an fp32 dot
    product picks among them, so the answer matches the exact fp32 argmax up to near-ties.
    """
    out = torch.empty(vectors.shape[0], dtype=torch.int64, device=vectors.device)
    shortlist = _use_bf16_shortlist(vectors.device, centroids.shape[0])
    centroids_bf16 = centroids.to(torch.bfloat16) if shortlist else None
    for start in range(0, vectors.shape[0], _ASSIGN_CHUNK):
        chunk = vectors[start : start + _ASSIGN_CHUNK]
        if centroids_bf16 is None:
            out[start : start + len(chunk)] = (chunk @ centroids.T).argmax(dim=1)
            continue
        rough = chunk.to(torch.bfloat16) @ centroids_bf16.T
        candidates = rough.topk(_SHORTLIST, dim=1).indices
        exact = torch.einsum("nd,nkd->nk", chunk, centroids[candidates])
        out[start : start + len(chunk)] = candidates.gather(1, exact.argmax(dim=1, keepdim=True)).squeeze(1)
    return out


def spherical_kmeans(
    sample: np.ndarray, n_centroids: int, *, iterations: int = 8, seed: int = 0, device: str | None = None
) -> np.ndarray:
    """Fit ``n_centroids`` unit-norm centroids to ``sample`` rows (cosine k-means); returns float32 ``(k, dim)``.

    Empty clusters are re-seeded from random sample rows, so every centroid ends up used.
    """
    if len(sample) < n_centroids:
        raise ValueError(f"k-means needs at least as many vectors ({len(sample)}) as centroids ({n_centroids})")
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    generator = torch.Generator().manual_seed(seed)
    points = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(sample, dtype=np.float32)), dim=1)
    points = points.to(torch_device)
    pick = torch.randperm(len(points), generator=generator)[:n_centroids].to(torch_device)
    centroids = points[pick].clone()
    for iteration in range(iterations):
        assignment = nearest_centroids(points, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=n_centroids)
        empty = (counts == 0).nonzero().squeeze(1)
        if len(empty):
            reseed = torch.randint(len(points), (len(empty),), generator=generator).to(torch_device)
            sums[empty] = points[reseed]
        centroids = torch.nn.functional.normalize(sums, dim=1)
        logger.debug("k-means iteration %d: %d empty clusters re-seeded", iteration, len(empty))
    return centroids.cpu().numpy()
