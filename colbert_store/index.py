"""The public ``Index``: a named ColBERT index living in a :class:`~colbert_store.storage.Store`."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from colbert_store.cache import DocumentCache
from colbert_store.codec import ResidualCodec, centroid_id_dtype, default_centroid_count
from colbert_store.errors import IncompatibleIndexError, InvalidInputError
from colbert_store.filters import parse_filter
from colbert_store.search import ScoredDocuments, SearchParams, search_one
from colbert_store.storage import FORMAT_VERSION, DocumentBatch, IndexHeader, Store
from colbert_store.validation import DocumentsInput, check_documents, check_ids, check_matrix, normalise_rows

logger = logging.getLogger(__name__)

_TOKENS_PER_WRITE = 262_144


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    score: float
    text: str | None
    metadata: dict[str, Any]


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
        search: default search knobs.
        encoder: identity of the encoder that produced the vectors, if known.
    """

    dim: int
    nbits: int = 2
    n_centroids: int | None = None
    sample_tokens: int = 131_072
    kmeans_iterations: int = 6
    seed: int = 0
    search: SearchParams = field(default_factory=SearchParams)
    encoder: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim < 8 or self.dim % 8:
            raise InvalidInputError(f"dim must be a positive multiple of 8, got {self.dim!r}")
        if self.nbits not in (1, 2, 4):
            raise InvalidInputError(f"nbits must be 1, 2 or 4, got {self.nbits!r}")
        if self.n_centroids is not None and not (isinstance(self.n_centroids, int) and 1 <= self.n_centroids <= 2**32):
            raise InvalidInputError(f"n_centroids must be a positive integer or None, got {self.n_centroids!r}")
        if not isinstance(self.sample_tokens, int) or self.sample_tokens < 1:
            raise InvalidInputError(f"sample_tokens must be a positive integer, got {self.sample_tokens!r}")

    def to_manifest(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> IndexSettings:
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise IncompatibleIndexError(
                f"index format version {version!r} is not supported by this colbert-store (expects {FORMAT_VERSION})"
            )
        values = {key: value for key, value in manifest.items() if key != "format_version"}
        values["search"] = SearchParams(**values.get("search", {}))
        return cls(**values)


class Index:
    """A ColBERT index stored in ``store`` under ``name``. Use :meth:`create` or :meth:`open`.

    Searches may run from many threads at once; writes (``add``, ``delete``, ``train``) are
    serialised by a lock. The codec and documents are cached in memory, keyed by revision, so a
    search never returns a deleted or replaced document.
    """

    def __init__(self, store: Store, name: str, settings: IndexSettings, codec: ResidualCodec | None) -> None:
        self._store = store
        self._name = name
        self._settings = settings
        self._codec = codec
        self._cache = DocumentCache()
        self._write_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def create(cls, store: Store, name: str, *, dim: int, nbits: int = 2, **settings: Any) -> Index:
        """Create an empty index; raises :class:`IndexExistsError` if ``name`` exists.

        Extra keyword arguments are :class:`IndexSettings` fields (``n_centroids``, ``search``, ...).
        """
        unknown = set(settings) - set(IndexSettings.__dataclass_fields__)
        if unknown:
            raise InvalidInputError(f"unknown index settings: {sorted(unknown)}")
        config = IndexSettings(dim=dim, nbits=nbits, **settings)
        store.create_index(name, IndexHeader(manifest=config.to_manifest()))
        return cls(store, name, config, None)

    @classmethod
    def open(cls, store: Store, name: str) -> Index:
        """Open an existing index; raises :class:`IndexNotFoundError` if absent."""
        header = store.read_header(name)
        settings = IndexSettings.from_manifest(header.manifest)
        codec = ResidualCodec.from_bytes(header.codec) if header.codec is not None else None
        return cls(store, name, settings, codec)

    @property
    def name(self) -> str:
        return self._name

    @property
    def settings(self) -> IndexSettings:
        return self._settings

    @property
    def codec(self) -> ResidualCodec | None:
        return self._codec

    @property
    def store(self) -> Store:
        return self._store

    def __len__(self) -> int:
        return self._store.count(self._name)

    def __repr__(self) -> str:
        return f"Index({self._name!r}, dim={self._settings.dim}, nbits={self._settings.nbits}, store={self._store!r})"

    # -- writing ------------------------------------------------------------------------------
    def train(self, sample: Sequence[np.ndarray] | np.ndarray) -> None:
        """Fit the codec on token vectors (one matrix, or a list of per-document matrices).

        Called automatically by the first :meth:`add`; call it yourself to train on a chosen sample.
        """
        matrices = [sample] if isinstance(sample, np.ndarray) else list(sample)
        checked = [
            normalise_rows(check_matrix(m, self._settings.dim, f"sample[{i}]"), f"sample[{i}]")
            for i, m in enumerate(matrices)
        ]
        with self._write_lock:
            self._train(checked)

    def add(
        self,
        ids: Sequence[str],
        embeddings: Sequence[np.ndarray],
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Add documents (one ``(n_tokens, dim)`` matrix each); an existing id is replaced.

        Vectors are L2-normalised. Every argument is validated before anything is written.
        """
        docs = check_documents(ids, embeddings, texts, metadata, self._settings.dim)
        with self._write_lock:
            if self._codec is None:
                self._train(docs.embeddings)
            assert self._codec is not None
            for batch in self._encode(docs, self._codec):
                self._store.upsert(self._name, batch)

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id; unknown ids are ignored."""
        checked = check_ids(ids)
        with self._write_lock:
            self._store.delete(self._name, checked)

    # -- searching ----------------------------------------------------------------------------
    def search(
        self,
        query: np.ndarray,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> list[Hit]:
        """Top ``k`` documents for one ``(n_query_tokens, dim)`` query by exact MaxSim after PLAID pruning.

        Query vectors are L2-normalised, like documents, so scores are sums of cosines.

        ``filter`` is a metadata filter (see :mod:`colbert_store.filters`); ``params`` override
        :class:`SearchParams` for this call only.
        """
        return self.search_batch([query], k=k, filter=filter, **params)[0]

    def search_batch(
        self,
        queries: Sequence[np.ndarray],
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> list[list[Hit]]:
        """:meth:`search` for many queries with the same ``k``, filter and knobs."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        where = parse_filter(filter)
        search_params = self._settings.search.updated(**params)
        if isinstance(queries, np.ndarray) and queries.ndim == 2:
            raise InvalidInputError("search_batch takes a list of (n_query_tokens, dim) arrays, got one 2-D array")
        matrices = [
            normalise_rows(check_matrix(q, self._settings.dim, f"query[{i}]"), f"query[{i}]") for i, q in enumerate(queries)
        ]
        codec = self._codec
        if codec is None:
            return [[] for _ in matrices]
        return [
            _hits(search_one(self._store, self._name, codec, self._cache, q, k, where, search_params))
            for q in matrices
        ]

    def stats(self) -> dict[str, Any]:
        """Documents, tokens, encoded bytes per token and codec settings (streams the store once)."""
        n_docs = n_tokens = 0
        for batch in self.documents():
            n_docs += len(batch)
            n_tokens += int(batch.token_offsets[-1])
        codec = self._codec
        return {
            "name": self._name,
            "documents": n_docs,
            "tokens": n_tokens,
            "dim": self._settings.dim,
            "nbits": self._settings.nbits,
            "centroids": codec.n_centroids if codec else None,
            "bytes_per_token": (
                codec.packed_bytes_per_token + centroid_id_dtype(codec.n_centroids).itemsize if codec else None
            ),
            "encoder": self._settings.encoder,
        }

    def documents(self, batch_size: int = 1024) -> Iterator[DocumentBatch]:
        """Stream every stored document (encoded) from the store."""
        return self._store.scan(self._name, batch_size)

    # -- internals ----------------------------------------------------------------------------
    def _train(self, matrices: list[np.ndarray]) -> None:
        settings = self._settings
        sample = _sample_tokens(matrices, settings.sample_tokens, settings.seed)
        n_tokens = sum(len(m) for m in matrices)
        n_centroids = min(settings.n_centroids or default_centroid_count(n_tokens, len(sample)), len(sample))
        logger.info("training codec: %d centroids on %d of %d tokens", n_centroids, len(sample), n_tokens)
        codec = ResidualCodec.fit(
            sample,
            nbits=settings.nbits,
            n_centroids=n_centroids,
            kmeans_iterations=settings.kmeans_iterations,
            seed=settings.seed,
        )
        header = self._store.read_header(self._name)
        self._store.write_header(self._name, IndexHeader(manifest=header.manifest, codec=codec.to_bytes()))
        self._codec = codec
        self._cache.clear()

    def _encode(self, docs: DocumentsInput, codec: ResidualCodec) -> Iterator[DocumentBatch]:
        """Compressed document batches of about ``_TOKENS_PER_WRITE`` tokens each."""
        start = 0
        while start < len(docs.ids):
            stop, tokens = start, 0
            while stop < len(docs.ids) and (stop == start or tokens + len(docs.embeddings[stop]) <= _TOKENS_PER_WRITE):
                tokens += len(docs.embeddings[stop])
                stop += 1
            lengths = [len(m) for m in docs.embeddings[start:stop]]
            centroid_ids, residuals = codec.compress(np.concatenate(docs.embeddings[start:stop]))
            yield DocumentBatch(
                ids=docs.ids[start:stop],
                revisions=_new_revisions(stop - start),
                token_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                centroid_ids=centroid_ids,
                residuals=residuals,
                texts=docs.texts[start:stop],
                metadata=docs.metadata[start:stop],
            )
            start = stop


def _new_revisions(n: int) -> np.ndarray:
    """Random positive 63-bit revision numbers (thread-safe: drawn from the OS)."""
    return np.frombuffer(os.urandom(8 * n), dtype=np.int64) & np.int64(0x7FFF_FFFF_FFFF_FFFF) | np.int64(1)


def _sample_tokens(matrices: list[np.ndarray], limit: int, seed: int) -> np.ndarray:
    """Up to ``limit`` token vectors drawn uniformly from all documents."""
    lengths = np.array([len(m) for m in matrices])
    total = int(lengths.sum())
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(total, size=min(limit, total), replace=False))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    doc = np.searchsorted(offsets, picked, side="right") - 1
    bounds = np.searchsorted(doc, np.arange(len(matrices) + 1))
    return np.concatenate(
        [matrices[d][picked[bounds[d] : bounds[d + 1]] - offsets[d]] for d in np.unique(doc)]
    )


def _hits(result: ScoredDocuments) -> list[Hit]:
    batch = result.batch
    return [
        Hit(
            id=batch.ids[row],
            score=float(score),
            text=batch.texts[row] if batch.texts else None,
            metadata=batch.metadata[row] if batch.metadata else {},
        )
        for row, score in zip(result.rows.tolist(), result.scores.tolist())
    ]
