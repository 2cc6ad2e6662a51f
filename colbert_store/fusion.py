"""Fusing the dense (MaxSim) and lexical (BM25) rankings of a hybrid search.

Each leg scores the documents it returned (the dense leg by exact MaxSim, the lexical leg by BM25); a
document a leg did not return counts as unmatched by it. Two methods:

- ``"rrf"``, reciprocal-rank fusion: ``1 / (rrf_k + dense rank) + 1 / (rrf_k + lexical rank)``, ranks
  from 1 (equal scores share the best of their ranks), a leg's term absent where it did not match;
- ``"weighted"``: ``weight * dense + (1 - weight) * lexical``, each leg's scores min-max normalised over
  the candidates it scored (0 where it did not match).

Ties keep the higher MaxSim first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from colbert_store.errors import InvalidInputError
from colbert_store.validation import check_count

METHODS = ("rrf", "weighted")


@dataclass(frozen=True)
class Fusion:
    """How a hybrid search merges its two rankings.

    Attributes:
        method: ``"weighted"`` (normalised weighted sum) or ``"rrf"`` (reciprocal-rank fusion).
        weight: the dense leg's share in the weighted sum, in [0, 1] (the lexical leg gets the rest).
        rrf_k: reciprocal-rank fusion's rank offset (non-negative).
        depth: documents each leg contributes before fusion (at least the search's ``k`` is used).
    """

    method: str = "weighted"
    weight: float = 0.6
    rrf_k: float = 5.0
    depth: int = 100

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidInputError(f"fusion method must be one of {list(METHODS)}, got {self.method!r}")
        if not _is_number(self.weight) or not 0 <= self.weight <= 1:
            raise InvalidInputError(f"fusion weight must be a number in [0, 1], got {self.weight!r}")
        if not _is_number(self.rrf_k) or not 0 <= self.rrf_k < float("inf"):
            raise InvalidInputError(f"rrf_k must be a finite non-negative number, got {self.rrf_k!r}")
        check_count(self.depth, "fusion depth")

    @classmethod
    def of(cls, value: Fusion | str | None, **overrides: Any) -> Fusion:
        """A ``Fusion`` from an instance, a method name (its defaults) or ``None`` (the defaults), with
        ``overrides`` of its fields (unknown names raise)."""
        if isinstance(value, str):
            base = cls(method=value)
        elif value is None or isinstance(value, Fusion):
            base = value or cls()
        else:
            raise InvalidInputError(f"fusion must be a Fusion, a method name or None, got {type(value).__name__}")
        unknown = set(overrides) - {field.name for field in fields(cls)}
        if unknown:
            raise InvalidInputError(f"unknown fusion parameters: {sorted(unknown)}")
        return replace(base, **overrides) if overrides else base


def fuse(dense: np.ndarray, lexical: np.ndarray, fusion: Fusion) -> tuple[np.ndarray, np.ndarray]:
    """Order and fused scores of the candidates, best first.

    Args:
        dense: ``(n,)`` MaxSim score of each candidate, NaN where the dense leg did not score it.
        lexical: ``(n,)`` BM25 score, NaN where the lexical leg did not return the candidate.
        fusion: the method and its parameters.

    >>> order, scores = fuse(np.array([3.0, 2.0, 1.0]), np.array([np.nan, 1.0, 5.0]), Fusion("rrf", rrf_k=0))
    >>> order.tolist(), scores.round(3).tolist()
    ([2, 0, 1], [1.333, 1.0, 1.0])
    """
    if fusion.method == "rrf":
        fused = _leg(dense, lambda scores: 1.0 / (fusion.rrf_k + _ranks(scores)))
        fused += _leg(lexical, lambda scores: 1.0 / (fusion.rrf_k + _ranks(scores)))
    else:
        fused = fusion.weight * _leg(dense, _min_max) + (1 - fusion.weight) * _leg(lexical, _min_max)
    order = np.lexsort((-np.nan_to_num(dense, nan=-np.inf), -fused))
    return order, fused[order]


def _leg(scores: np.ndarray, term: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """One leg's part of the fused score: ``term`` of the scores it has, 0 where it has none."""
    part = np.zeros(len(scores))
    present = ~np.isnan(scores)
    part[present] = term(scores[present])
    return part


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each score, best first; equal scores share the best of their ranks.

    >>> _ranks(np.array([0.5, 2.0, 0.5, 1.0])).tolist()
    [3.0, 1.0, 3.0, 2.0]
    """
    descending = np.sort(-scores)
    return (np.searchsorted(descending, -scores, side="left") + 1).astype(np.float64)


def _min_max(scores: np.ndarray) -> np.ndarray:
    """Scores mapped onto [0, 1] (all 1 when they are all equal)."""
    scores = scores.astype(np.float64)
    if not len(scores):
        return scores
    low, span = scores.min(), np.ptp(scores)
    return (scores - low) / span if span > 0 else np.ones(len(scores))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
