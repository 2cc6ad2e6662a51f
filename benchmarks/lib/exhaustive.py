"""Exhaustive exact MaxSim over every token vector: the quality ceiling and the speed baseline."""

from __future__ import annotations

import numpy as np
import torch

from colbert_store.maxsim import segment_max_sum

_TOKENS_PER_CHUNK = 262_144


class ExhaustiveMaxSim:
    """Scores a query against every document with uncompressed vectors (fp32 matmul in torch)."""

    def __init__(self, doc_ids: list[str], vectors: np.ndarray, offsets: np.ndarray) -> None:
        self.doc_ids = doc_ids
        self._vectors = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        self._offsets = np.asarray(offsets, dtype=np.int64)
        bounds = np.searchsorted(self._offsets, np.arange(0, self._offsets[-1], _TOKENS_PER_CHUNK))
        self._doc_chunks = np.unique(np.append(bounds, len(self._offsets) - 1))

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Exact MaxSim of ``query`` against every document."""
        query_t = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
        parts = []
        for first, last in zip(self._doc_chunks[:-1], self._doc_chunks[1:]):
            start, stop = self._offsets[first], self._offsets[last]
            token_scores = self._vectors[start:stop] @ query_t.T
            parts.append(segment_max_sum(token_scores, self._offsets[first : last + 1] - start))
        return torch.cat(parts).numpy()

    def search(self, query: np.ndarray, k: int = 10) -> list[tuple[str, float]]:
        scores = self.scores(query)
        top = np.argsort(-scores, kind="stable")[:k]
        return [(self.doc_ids[i], float(scores[i])) for i in top]
