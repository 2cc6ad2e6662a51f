"""The public ``Index``: a named ColBERT index living in a :class:`~colbert_store.storage.Store`."""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from colbert_store.cache import DocumentCache, subset_batch, token_positions
from colbert_store.codec import ResidualCodec, centroid_id_dtype, default_centroid_count, query_second_moment
from colbert_store.errors import (
    IncompatibleIndexError,
    IndexNotFoundError,
    InvalidInputError,
    NotTrainedError,
)
from colbert_store.filters import Filter, parse_filter
from colbert_store.maintenance import IndexHealth, TextEncoder, measure_health, reencode, sample_documents
from colbert_store.search import ScoredDocuments, SearchParams, search_one
from colbert_store.storage import (
    FORMAT_VERSION,
    GENERATIONS,
    DocumentBatch,
    IndexHeader,
    Store,
    new_revisions,
    revision_generations,
)
from colbert_store.validation import (
    DocumentsInput,
    check_documents,
    check_ids,
    check_index_name,
    check_matrix,
    normalise_rows,
)

logger = logging.getLogger(__name__)

_TOKENS_PER_WRITE = 262_144
_RETRAIN_BATCH_DOCS = 256
_WARM_BATCH_DOCS = 1024
_HOLDOUT_TOKENS = 16_384
_STATE_KEYS = ("format_version", "generation", "codec_id", "staging")  # manifest entries that are not settings


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

    def to_manifest(self, generation: int = 0, codec_id: str | None = None) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "generation": generation, "codec_id": codec_id, **asdict(self)}

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> IndexSettings:
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise IncompatibleIndexError(
                f"index format version {version!r} is not supported by this colbert-store (expects {FORMAT_VERSION})"
            )
        values = {key: value for key, value in manifest.items() if key not in _STATE_KEYS}
        values["search"] = SearchParams(**values.get("search", {}))
        return cls(**values)


@dataclass(frozen=True)
class _Version:
    """What a reader needs to decode the stored documents: the codec, its generation and the random
    id written with it (so a reader can tell from the manifest alone whether the codec changed)."""

    codec: ResidualCodec | None
    generation: int
    codec_id: str | None

    @classmethod
    def from_header(cls, header: IndexHeader) -> _Version:
        codec = ResidualCodec.from_bytes(header.codec) if header.codec is not None else None
        return cls(codec, int(header.manifest["generation"]), header.manifest["codec_id"])

    def matches(self, manifest: Mapping[str, Any]) -> bool:
        return manifest["generation"] == self.generation and manifest["codec_id"] == self.codec_id


class Index:
    """A ColBERT index stored in ``store`` under ``name``. Use :meth:`create` or :meth:`open`.

    Searches may run from many threads (and processes) at once; writes (``add``, ``delete``,
    ``train``, ``retrain``) are serialised by a lock. The codec and documents are cached in memory,
    keyed by revision, so a search never returns a deleted or replaced document; a search that meets
    documents of a newer codec (retrained elsewhere) reloads the codec and runs again.
    """

    def __init__(self, store: Store, name: str, settings: IndexSettings, version: _Version) -> None:
        self._store = store
        self._name = name
        self._settings = settings
        self._version = version
        self._cache = DocumentCache()
        self._write_lock = threading.Lock()
        self._reload_lock = threading.Lock()

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
        store.create_index(check_index_name(name), IndexHeader(manifest=config.to_manifest()))
        return cls(store, name, config, _Version(None, 0, None))

    @classmethod
    def open(cls, store: Store, name: str) -> Index:
        """Open an existing index; raises :class:`IndexNotFoundError` if absent."""
        header = store.read_header(check_index_name(name))
        return cls(store, name, IndexSettings.from_manifest(header.manifest), _Version.from_header(header))

    @property
    def name(self) -> str:
        return self._name

    @property
    def settings(self) -> IndexSettings:
        return self._settings

    @property
    def codec(self) -> ResidualCodec | None:
        return self._version.codec

    @property
    def store(self) -> Store:
        return self._store

    def __len__(self) -> int:
        return self._store.count(self._name)

    def __repr__(self) -> str:
        return f"Index({self._name!r}, dim={self._settings.dim}, nbits={self._settings.nbits}, store={self._store!r})"

    # -- writing ------------------------------------------------------------------------------
    def train(
        self, sample: Sequence[np.ndarray] | np.ndarray, queries: Sequence[np.ndarray] | np.ndarray | None = None
    ) -> None:
        """Fit the codec on token vectors (one matrix, or a list of per-document matrices).

        Called automatically by the first :meth:`add`; call it yourself to train on a chosen sample,
        before any document is added (afterwards, :meth:`retrain` re-encodes what is stored).
        ``queries`` (query token vectors in the same form, e.g. a few hundred past queries, or
        sentences of the documents encoded as queries) make the codec keep query dot products
        rather than the vectors themselves accurate, which raises recall at the same size; later
        retrains reuse them.

        Raises:
            InvalidInputError: bad vectors, or the index already holds documents.
        """
        checked = self._checked_matrices(sample, "sample")
        moment = self._query_moment(queries)
        with self._write_lock:
            self._reload(self._version)
            if self._version.codec is not None and len(self):
                raise InvalidInputError(f"index {self._name!r} already holds documents: use retrain() to refit its codec")
            self._train(checked, moment)

    def add(
        self,
        ids: Sequence[str],
        embeddings: Sequence[np.ndarray],
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        queries: Sequence[np.ndarray] | np.ndarray | None = None,
    ) -> None:
        """Add documents (one ``(n_tokens, dim)`` matrix each); an existing id is replaced.

        Vectors are L2-normalised. Every argument is validated before anything is written. When this
        add trains the codec (the index has none yet), ``queries`` weigh its errors (see :meth:`train`);
        otherwise they are ignored.
        """
        docs = check_documents(ids, embeddings, texts, metadata, self._settings.dim)
        moment = self._query_moment(queries)
        with self._write_lock:
            self._reload(self._version)  # another process may have trained or retrained
            if self._version.codec is None:
                self._train(docs.embeddings, moment)
            version = self._version
            assert version.codec is not None
            for batch in self._encode(docs, version.codec, version.generation):
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
        if self._version.codec is None and not self._reload(self._version):
            return [[] for _ in matrices]  # nothing added yet (here or by another process)
        return [_hits(self._search_one(q, k, where, search_params)) for q in matrices]

    def warm(self) -> int:
        """Read stored documents into the in-memory cache until it is full, so that first searches, like
        later ones, read only candidate ids from the store. Optional: searches fill the cache as they
        go, and documents written later are fetched as usual. Returns how many documents it cached.
        """
        self._reload(self._version)
        version = self._version
        if version.codec is None:
            return 0
        warmed = 0
        for batch in self._store.scan(self._name, _WARM_BATCH_DOCS):
            # Documents of another codec generation (a retrain under way) cannot be scored by this codec.
            current = revision_generations(batch.revisions) == version.generation % GENERATIONS
            batch = subset_batch(batch, np.flatnonzero(current))
            if not self._cache.fits(batch):
                break
            self._cache.insert(batch)
            docs, slots = self._cache.lookup(batch.revisions)
            docs.inverse_norms(token_positions(docs.batch.token_offsets, slots[slots >= 0])[0], version.codec)
            warmed += len(batch)
        return warmed

    def health(self) -> IndexHealth:
        """How well the codec still fits the stored documents (streams the store once).

        Compares the quantization error of the stored tokens, recorded when each document was
        encoded, with the error on the codec's training sample, and reports how skewed the
        centroid lists are; ``needs_retrain`` says when :meth:`retrain` should pay off.
        """
        health = self._current_health()
        if health is None:
            raise NotTrainedError(f"index {self._name!r} has no codec yet: add documents first")
        return health

    def retrain(
        self,
        *,
        encode_texts: TextEncoder | None = None,
        sample_tokens: int | None = None,
        n_centroids: int | None = None,
        queries: Sequence[np.ndarray] | np.ndarray | None = None,
    ) -> None:
        """Fit a new codec on documents drawn at random from the index and re-encode them all.

        The new version is built beside the old one, which searches keep using, and replaces it in
        one atomic step; writes from this object wait until it is done. Documents are re-encoded
        from their stored text by ``encode_texts`` (e.g. ``encoder.encode_documents``) where given,
        otherwise from their decoded vectors. A codec trained with ``queries`` (:meth:`train`) is
        refitted with the same query weighting unless new ``queries`` are given. Killed midway, the
        index stays as it was and the half-built copy is removed by the next ``retrain``.

        Args:
            encode_texts: texts -> token vectors, the encoder that built the index.
            sample_tokens: about how many tokens k-means trains on (default: the index setting).
            n_centroids: centroid count (default: the index setting, else chosen from the token count).
            queries: query token vectors (as in :meth:`train`, e.g. queries users have since asked)
                to weigh the new codec's errors by, in place of the old codec's weighting (if any).
        """
        moment = self._query_moment(queries)  # checked before anything is written
        with self._write_lock:
            self._reload(self._version)
            old = self._version
            if old.codec is None:
                raise NotTrainedError(f"index {self._name!r} has no codec yet: add documents first")
            staging = self._begin_staging()
            try:
                weighting = old.codec.query_moment if moment is None else moment
                codec = self._fit_on_stored(old.codec, sample_tokens, n_centroids, encode_texts, weighting)
                version = _Version(codec, old.generation + 1, uuid.uuid4().hex)
                manifest = self._settings.to_manifest(version.generation, version.codec_id)
                self._store.create_index(staging, IndexHeader(manifest=manifest, codec=codec.to_bytes()))
                for batch in self._store.scan(self._name, _RETRAIN_BATCH_DOCS):
                    self._store.upsert(staging, reencode(batch, old.codec, codec, version.generation, encode_texts))
                self._store.swap_index(self._name, staging)
            except BaseException:
                _drop_quietly(self._store, staging)
                raise
            self._version = version
            self._cache.clear()

    def stats(self) -> dict[str, Any]:
        """Documents, tokens, encoded bytes per token, codec settings and :meth:`health` (``None``
        before the first add), streaming the store once."""
        health = self._current_health()  # no codec yet: no documents either
        codec = self._version.codec
        return {
            "name": self._name,
            "documents": health.documents if health else 0,
            "tokens": health.tokens if health else 0,
            "dim": self._settings.dim,
            "nbits": self._settings.nbits,
            "centroids": codec.n_centroids if codec else None,
            "bytes_per_token": (
                codec.packed_bytes_per_token + centroid_id_dtype(codec.n_centroids).itemsize if codec else None
            ),
            "encoder": self._settings.encoder,
            "health": health,
        }

    def documents(self, batch_size: int = 1024) -> Iterator[DocumentBatch]:
        """Stream every stored document (encoded) from the store."""
        return self._store.scan(self._name, batch_size)

    # -- internals ----------------------------------------------------------------------------
    def _search_one(self, query: np.ndarray, k: int, where: Filter | None, params: SearchParams) -> ScoredDocuments:
        """One query; run again after reloading the codec if the index was retrained meanwhile (seen as
        documents of a newer codec, a store error on dropped documents, or candidates gone at fetch)."""
        while True:
            version = self._version
            assert version.codec is not None
            try:
                result = search_one(
                    self._store, self._name, version.codec, version.generation, self._cache, query, k, where, params
                )
            except Exception:  # a store error on dropped old documents, or IndexChangedError
                if not self._reload(version):
                    raise
                continue
            if not result.missing or not self._reload(version):  # missing without a switch: deleted meanwhile
                return result

    def _current_health(self) -> IndexHealth | None:
        """:meth:`health` against the current codec (reloaded if another process changed it); ``None`` untrained."""
        self._reload(self._version)
        version = self._version
        return None if version.codec is None else measure_health(self.documents(), version.codec, version.generation)

    def _reload(self, seen: _Version) -> bool:
        """Read the header again; True if it holds a newer codec than ``seen`` (now loaded)."""
        with self._reload_lock:
            if self._version is not seen:
                return True
            if seen.matches(self._store.read_manifest(self._name)):  # the cheap check: no codec read
                return False
            self._version = _Version.from_header(self._store.read_header(self._name))
            self._cache.clear()
            return True

    def _begin_staging(self) -> str:
        """A fresh name for a retrain's copy, recorded in the header so a killed retrain's copy is dropped."""
        header = self._store.read_header(self._name)
        leftover = header.manifest.get("staging")
        if leftover:
            _drop_quietly(self._store, leftover)
        staging = f"retrain-{uuid.uuid4().hex}"
        self._store.write_header(self._name, IndexHeader({**header.manifest, "staging": staging}, header.codec))
        return staging

    def _fit_on_stored(
        self,
        old: ResidualCodec,
        sample_tokens: int | None,
        n_centroids: int | None,
        encode_texts: TextEncoder | None,
        query_moment: np.ndarray | None,
    ) -> ResidualCodec:
        sample, held, n_tokens = sample_documents(
            lambda: self._store.scan(self._name, _RETRAIN_BATCH_DOCS), old,
            (sample_tokens or self._settings.sample_tokens, _HOLDOUT_TOKENS), self._settings.seed, encode_texts,
        )
        return self._fit(sample, held, n_tokens, n_centroids, query_moment)

    def _query_moment(self, queries: Sequence[np.ndarray] | np.ndarray | None) -> np.ndarray | None:
        if queries is None:
            return None
        return query_second_moment(np.concatenate(self._checked_matrices(queries, "queries")))

    def _checked_matrices(self, matrices: Sequence[np.ndarray] | np.ndarray, what: str) -> list[np.ndarray]:
        """One matrix or a list of them, each checked and L2-normalised (errors name ``what[i]``)."""
        listed = [matrices] if isinstance(matrices, np.ndarray) else list(matrices)
        if not listed:
            raise InvalidInputError(f"{what} is empty")
        return [normalise_rows(check_matrix(m, self._settings.dim, f"{what}[{i}]"), f"{what}[{i}]") for i, m in enumerate(listed)]

    def _fit(
        self,
        sample: np.ndarray,
        held: np.ndarray,
        n_tokens: int,
        n_centroids: int | None = None,
        query_moment: np.ndarray | None = None,
    ) -> ResidualCodec:
        """A codec fitted on ``sample`` whose reference error is measured on the held-out tokens
        (an unbiased yardstick for the stored and future documents; the sample itself if none)."""
        settings = self._settings
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

    def _train(self, matrices: list[np.ndarray], query_moment: np.ndarray | None = None) -> None:
        settings = self._settings
        drawn = _sample_tokens(matrices, settings.sample_tokens + _HOLDOUT_TOKENS, settings.seed)
        n_held = min(_HOLDOUT_TOKENS, len(drawn) // 8)  # tokens left out of k-means, to measure the codec on
        codec = self._fit(drawn[n_held:], drawn[:n_held], sum(len(m) for m in matrices), query_moment=query_moment)
        version = _Version(codec, self._version.generation, uuid.uuid4().hex)
        header = self._store.read_header(self._name)
        manifest = {**header.manifest, "codec_id": version.codec_id}
        self._store.write_header(self._name, IndexHeader(manifest=manifest, codec=codec.to_bytes()))
        self._version = version
        self._cache.clear()

    def _encode(self, docs: DocumentsInput, codec: ResidualCodec, generation: int) -> Iterator[DocumentBatch]:
        """Compressed document batches of about ``_TOKENS_PER_WRITE`` tokens each."""
        start = 0
        while start < len(docs.ids):
            stop, tokens = start, 0
            while stop < len(docs.ids) and (stop == start or tokens + len(docs.embeddings[stop]) <= _TOKENS_PER_WRITE):
                tokens += len(docs.embeddings[stop])
                stop += 1
            lengths = [len(m) for m in docs.embeddings[start:stop]]
            vectors = np.concatenate(docs.embeddings[start:stop])
            centroid_ids, residuals = codec.compress(vectors)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            yield DocumentBatch(
                ids=docs.ids[start:stop],
                revisions=new_revisions(stop - start, generation),
                token_offsets=offsets,
                centroid_ids=centroid_ids,
                residuals=residuals,
                texts=docs.texts[start:stop],
                metadata=docs.metadata[start:stop],
                sq_errors=np.add.reduceat(codec.sq_errors(vectors, centroid_ids, residuals), offsets[:-1]),
            )
            start = stop


def _drop_quietly(store: Store, name: str) -> None:
    """Drop a retrain's staging copy if it exists (it may never have been created)."""
    with contextlib.suppress(IndexNotFoundError):
        store.drop_index(name)


def _sample_tokens(matrices: list[np.ndarray], limit: int, seed: int) -> np.ndarray:
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


def _hits(result: ScoredDocuments) -> list[Hit]:
    batch = result.batch
    return [
        Hit(
            id=batch.ids[row],
            score=float(score),
            text=batch.texts[row] if batch.texts else None,
            metadata=dict(batch.metadata[row]) if batch.metadata else {},
        )
        for row, score in zip(result.rows.tolist(), result.scores.tolist())
    ]
