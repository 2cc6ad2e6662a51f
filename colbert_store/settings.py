"""How an index is built: :class:`IndexSettings`, saved in its manifest so reopening restores it exactly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from colbert_store.errors import InvalidInputError
from colbert_store.search import SearchParams
from colbert_store.validation import check_count


def check_pool_factor(value: Any) -> int:
    """A ``pool_factor`` setting: a positive integer (1: no pooling)."""
    return check_count(value, "pool_factor")


@dataclass(frozen=True)
class IndexSettings:
    """How an index is built; saved in the store so reopening restores it exactly.

    Attributes:
        dim: token vector dimension (a multiple of 8).
        nbits: bits per residual dimension: 1, 2 or 4.
        n_centroids: k-means centroids; ``None`` picks a power of two near 16*sqrt(tokens) at training.
        sample_tokens: most token vectors k-means trains on (a random sample of the first add).
        kmeans_iterations: Lloyd iterations of k-means.
        seed: random seed of sampling and k-means.
        pool_factor: store about one vector per ``pool_factor`` tokens of each document, by
            clustering its tokens (:mod:`colbert_store.pooling`); 1 stores every token.
        search: default search knobs.
        encoder: identity of the encoder that produced the vectors, if known.
    """

    dim: int
    nbits: int = 2
    n_centroids: int | None = None
    sample_tokens: int = 131_072
    kmeans_iterations: int = 6
    seed: int = 0
    pool_factor: int = 1
    search: SearchParams = field(default_factory=SearchParams)
    encoder: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim < 8 or self.dim % 8:
            raise InvalidInputError(f"dim must be a positive multiple of 8, got {self.dim!r}")
        if isinstance(self.nbits, bool) or self.nbits not in (1, 2, 4):
            raise InvalidInputError(f"nbits must be 1, 2 or 4, got {self.nbits!r}")
        if self.n_centroids is not None and check_count(self.n_centroids, "n_centroids") > 2**32:
            raise InvalidInputError(f"n_centroids must be at most 2**32, got {self.n_centroids!r}")
        check_count(self.sample_tokens, "sample_tokens")
        check_count(self.kmeans_iterations, "kmeans_iterations")
        check_count(self.seed, "seed", allow_zero=True)
        check_pool_factor(self.pool_factor)

    @classmethod
    def from_options(cls, dim: int, nbits: int, options: Mapping[str, Any]) -> IndexSettings:
        """Settings from keyword options, refusing names that are not settings."""
        unknown = set(options) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInputError(f"unknown index settings: {sorted(unknown)}")
        return cls(dim=dim, nbits=nbits, **options)

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON object."""
        return asdict(self)

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> IndexSettings:
        """Inverse of :meth:`to_json`. Search defaults stored before ``rerank_margin`` existed keep the
        fixed number of finalists they meant (``rerank_margin=None``)."""
        search = dict(values.get("search", {}))
        if search:
            search.setdefault("rerank_margin", None)
        return cls(**{**values, "search": SearchParams(**search)})
