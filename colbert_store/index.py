"""The public ``Index``: a named ColBERT index living in a :class:`~colbert_store.storage.Store`."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from colbert_store.cache import DEFAULT_CACHE_BYTES, CacheInfo, DocumentCache, subset_batch
from colbert_store.centroid_lists import token_positions
from colbert_store.codec import ResidualCodec, query_second_moment
from colbert_store.errors import InvalidInputError, NotTrainedError, WriteConflictError
from colbert_store.filters import Filter, parse_filter
from colbert_store.fitting import fit_first_codec
from colbert_store.fusion import Fusion
from colbert_store.hits import Hit, hits_of
from colbert_store.hybrid import search_hybrid
from colbert_store.kernel_loading import load_kernels_in_background, note_search_call, wait_for_kernels
from colbert_store.maintenance import IndexHealth, TextEncoder, measure_health
from colbert_store.pooling import pool_documents, pooling_encoder
from colbert_store.reading import DocumentSource
from colbert_store.retraining import RetrainOptions, retrain
from colbert_store.search import ScoredDocuments, SearchParams, search_one
from colbert_store.settings import IndexSettings
from colbert_store.storage import DocumentBatch, Store, revision_generations
from colbert_store.validation import (
    DocumentsInput,
    check_count,
    check_documents,
    check_ids,
    check_index_name,
    check_matrix,
    check_query_texts,
    normalise_rows,
)
from colbert_store.versions import CodecRef, CodecState, LoadedState, Manifest, commit, load_state
from colbert_store.writing import encode_batches, encode_documents, write_batch

_WARM_BATCH_DOCS = 1024
DEFAULT_SEARCH_THREADS = min(8, os.cpu_count() or 1)
"""Threads a :meth:`Index.search_batch` answers its queries with (``Index.open(..., search_threads=...)``)."""
MANIFEST_CHECK_SECONDS = 1.0
"""A search reads the manifest again when its last read is older than this, so a searcher learns of a
new codec within this long even if none of its candidates is encoded with it yet."""


@dataclass(frozen=True)
class _Written:
    """One batch an add wrote: the rows of the input it holds and the codec generation it used."""

    rows: slice
    batch: DocumentBatch
    generation: int


class Index:
    """A ColBERT index stored in ``store`` under ``name``. Use :meth:`create` or :meth:`open`.

    Searches may run from many threads and processes at once. Writes (``add``, ``delete``, ``train``,
    ``retrain``) through one object are serialised by a lock, and any number of processes may write
    to one index at once, a retrain included (see :mod:`colbert_store.versions`): each call either
    returns, its effect durable, or raises having done nothing. The codecs and documents are cached in
    memory, keyed by revision, so a search never returns a deleted or replaced document.

    ``cache_bytes`` bounds that memory: the documents a search reads are cached up to it, and an index
    whose documents do not all fit keeps just their centroid lists in memory (a tenth of the size or
    less), up to the same bound, so that a search reads only the documents it scores exactly.
    ``search_threads`` is how many threads :meth:`search_batch` answers its queries with.
    """

    def __init__(
        self, store: Store, name: str, state: LoadedState, cache_bytes: int = DEFAULT_CACHE_BYTES,
        search_threads: int = DEFAULT_SEARCH_THREADS,
    ) -> None:
        self._store = store
        self._name = name
        self._state = state
        self._checked = time.monotonic()
        self._cache = DocumentCache(check_count(cache_bytes, "cache_bytes", allow_zero=True))
        self._search_threads = check_count(search_threads, "search_threads")
        self._source = DocumentSource(store, name, self._cache)
        self._write_lock = threading.Lock()
        self._reload_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------
    @classmethod
    def create(
        cls, store: Store, name: str, *, dim: int, nbits: int = 2, cache_bytes: int = DEFAULT_CACHE_BYTES,
        search_threads: int = DEFAULT_SEARCH_THREADS, **settings: Any,
    ) -> Index:
        """Create an empty index; raises :class:`IndexExistsError` if ``name`` exists.

        Extra keyword arguments are :class:`IndexSettings` fields (``n_centroids``, ``search``, ...).
        """
        manifest = Manifest(IndexSettings.from_options(dim, nbits, settings))
        check_count(cache_bytes, "cache_bytes", allow_zero=True)
        check_count(search_threads, "search_threads")
        store.create_index(check_index_name(name), manifest.to_json())
        return cls(store, name, LoadedState(manifest, {}), cache_bytes, search_threads)

    @classmethod
    def open(
        cls, store: Store, name: str, *, cache_bytes: int = DEFAULT_CACHE_BYTES, search_threads: int = DEFAULT_SEARCH_THREADS
    ) -> Index:
        """Open an existing index; raises :class:`IndexNotFoundError` if absent."""
        return cls(store, name, load_state(store, check_index_name(name)), cache_bytes, search_threads)

    @property
    def name(self) -> str:
        return self._name

    @property
    def settings(self) -> IndexSettings:
        return self._state.manifest.settings

    @property
    def codec(self) -> ResidualCodec | None:
        """The codec new documents are encoded with (``None`` before the first add)."""
        return self._state.current_codec

    @property
    def store(self) -> Store:
        return self._store

    def __len__(self) -> int:
        return self._store.count(self._name)

    def __repr__(self) -> str:
        pooled = f", pool_factor={self.settings.pool_factor}" if self.settings.pool_factor > 1 else ""
        return f"Index({self._name!r}, dim={self.settings.dim}, nbits={self.settings.nbits}{pooled}, store={self._store!r})"

    # -- writing ------------------------------------------------------------------------------
    def train(
        self, sample: Sequence[np.ndarray] | np.ndarray, queries: Sequence[np.ndarray] | np.ndarray | None = None
    ) -> None:
        """Fit the codec on token vectors (one matrix, or a list of per-document matrices).

        Called automatically by the first :meth:`add`; call it yourself to train on a chosen sample,
        before any document is added (afterwards, :meth:`retrain` re-encodes what is stored). A list
        of documents is pooled first, as :meth:`add` would store it (``pool_factor``).
        ``queries`` (query token vectors in the same form, e.g. a few hundred past queries, or
        sentences of the documents encoded as queries) make the codec keep query dot products
        rather than the vectors themselves accurate, which raises recall at the same size; later
        retrains reuse them.

        Raises:
            InvalidInputError: bad vectors, or the index already holds documents.
        """
        checked = self._checked_matrices(sample, "sample")
        if not isinstance(sample, np.ndarray):
            checked = pool_documents(checked, self.settings.pool_factor)
        moment = self._query_moment(queries)
        with self._write_lock:
            state = self._reload()
            if state.current is not None and len(self):
                raise InvalidInputError(f"index {self._name!r} already holds documents: use retrain() to refit its codec")
            self._commit_first_codec(state, fit_first_codec(self.settings, checked, moment))

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

        Vectors are L2-normalised, then pooled where the index has a ``pool_factor`` above 1. Every
        argument is validated before anything is written. When this add trains the codec (the index
        has none yet), ``queries`` weigh its errors (see :meth:`train`); otherwise they are ignored.
        Each document is written atomically; if the store keeps refusing a write,
        :class:`WriteConflictError` says which documents were written before it.
        """
        docs = check_documents(ids, embeddings, texts, metadata, self.settings.dim)
        docs = replace(docs, embeddings=pool_documents(docs.embeddings, self.settings.pool_factor))
        moment = self._query_moment(queries)
        with self._write_lock:
            state = self._reload()
            if state.current is None:
                state = self._commit_first_codec(state, fit_first_codec(self.settings, docs.embeddings, moment))
            current, codec = state.current, state.current_codec
            assert current is not None and codec is not None
            written: list[_Written] = []
            try:
                for rows, batch in encode_batches(docs, codec, current.generation):
                    written.append(_Written(rows, write_batch(self._store, self._name, batch), current.generation))
            except WriteConflictError as error:
                done = tuple(doc_id for part in written for doc_id in part.batch.ids)
                raise WriteConflictError(str(error), written_ids=done) from error
            self._settle(docs, written)
            self._store.settle(self._name)

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
        text: str | None = None,
        fusion: Fusion | str | None = None,
        **params: Any,
    ) -> list[Hit]:
        """Top ``k`` documents for one ``(n_query_tokens, dim)`` query by exact MaxSim after PLAID pruning.

        Query vectors are L2-normalised, like documents, so scores are sums of cosines.

        ``filter`` is a metadata filter (see :mod:`colbert_store.filters`); ``params`` override
        :class:`SearchParams` for this call only.

        With ``text`` the search is hybrid: the store's full-text engine ranks the documents by BM25
        for ``text`` (the filter applied there too), and the two rankings are fused as ``fusion`` says
        (a :class:`~colbert_store.fusion.Fusion`, a method name, ``"weighted"`` or ``"rrf"``, or
        ``None`` for the defaults); hit scores are then the fused scores.

        Raises:
            LexicalSearchUnavailableError: ``text`` was given, but the index cannot run a full-text
                search (its documents were stored without text, or its store lacks the index).
        """
        texts = None if text is None else [text]
        return self.search_batch([query], k=k, filter=filter, texts=texts, fusion=fusion, **params)[0]

    def search_batch(
        self,
        queries: Sequence[np.ndarray],
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        texts: Sequence[str] | None = None,
        fusion: Fusion | str | None = None,
        **params: Any,
    ) -> list[list[Hit]]:
        """:meth:`search` for many queries with the same ``k``, filter and knobs (``texts``: one per query),
        all answered at the index's version when the batch starts, by up to ``search_threads`` threads at once."""
        check_count(k, "k")
        where = parse_filter(filter)
        search_params = self.settings.search.updated(**params)
        if isinstance(queries, np.ndarray) and queries.ndim == 2:
            raise InvalidInputError("search_batch takes a list of (n_query_tokens, dim) arrays, got one 2-D array")
        matrices = [
            normalise_rows(check_matrix(q, self.settings.dim, f"query[{i}]"), f"query[{i}]") for i, q in enumerate(queries)
        ]
        if texts is None and fusion is not None:
            raise InvalidInputError("fusion applies to hybrid search only: pass text (texts) too")
        per_query: list[tuple[Fusion, str] | None] = [None] * len(matrices)
        if texts is not None:
            checked, fusion_params = check_query_texts(texts, len(matrices)), Fusion.of(fusion)
            per_query = [(fusion_params, text) for text in checked]
        if time.monotonic() - self._checked > MANIFEST_CHECK_SECONDS or self._state.current is None:
            self._reload()  # a new codec, or a first add made here or by another process
        if self._state.current is None:
            return [[] for _ in matrices]
        hits = self._answer(matrices, k, where, search_params, per_query)
        note_search_call()  # the second loads the compiled stages in the background
        return hits

    def set_search_defaults(self, params: SearchParams | None = None, **knobs: Any) -> SearchParams:
        """Change the search knobs stored with the index (it keeps those it was created with, across
        upgrades): ``params`` replaces them all (``SearchParams()``: this version's defaults), then ``knobs``
        override by name. Every process's searches use them within :data:`MANIFEST_CHECK_SECONDS`.
        Returns the knobs stored; a bad knob raises and stores nothing."""
        if params is not None and not isinstance(params, SearchParams):
            raise InvalidInputError(f"params must be a SearchParams, got {type(params).__name__}")
        with self._write_lock:
            while True:  # another process may commit a manifest (a retrain) in between: read it and retry
                state = self._reload()
                search = (state.manifest.settings.search if params is None else params).updated(**knobs)
                settings = replace(state.manifest.settings, search=search)
                if commit(self._store, self._name, state, state.manifest.codecs, settings) is not None:
                    self._reload()
                    return search

    def warm(self) -> int:
        """Read stored documents into the in-memory cache until it is full (and, when they do not all fit,
        every document's centroid lists into memory), so that first searches, like later ones, read little
        from the store, and load the compiled search stages (which a process otherwise loads in the
        background at its second search call). Optional: searches fill the cache as they go, and documents
        written later are fetched as usual. Returns how many documents it cached.
        """
        load_kernels_in_background()  # compiles meanwhile
        codecs = self._reload().by_generation()
        warmed = 0
        for batch in self._store.scan(self._name, _WARM_BATCH_DOCS):
            generations = revision_generations(batch.revisions)
            decodable = np.flatnonzero(np.isin(generations, list(codecs)))
            batch, generations = subset_batch(batch, decodable), generations[decodable]
            if not self._cache.fits(batch):
                break
            self._cache.insert(batch)
            docs, slots = self._cache.lookup(batch.revisions)
            for generation, codec in codecs.items():  # each token's norm under its own document's codec
                mine = slots[(slots >= 0) & (generations == generation)]
                docs.inverse_norms(token_positions(docs.batch.token_offsets, mine)[0], codec)
            warmed += len(batch)
        self._source.prepare()
        wait_for_kernels()
        return warmed

    def cache_info(self) -> CacheInfo:
        """The in-memory document cache: documents and bytes held, the ``cache_bytes`` budget, and since
        opening, the finalists searches found there (hits) or read from the store (misses) and how often
        a full cache dropped documents: to size ``cache_bytes`` by."""
        return self._cache.info()

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
        encoder: Mapping[str, Any] | None = None,
    ) -> None:
        """Fit a new codec on documents drawn at random from the index and re-encode them all, in place.

        Searches and writes, here and in other processes, go on meanwhile: a search decodes each
        document with the codec it was written with, and a write that lands with the old codec is
        re-encoded (see :mod:`colbert_store.versions`). Documents are re-encoded from their stored
        text by ``encode_texts`` (e.g. ``encoder.encode_documents``, pooled as :meth:`add` would)
        where given, otherwise from their decoded vectors. A codec trained with ``queries``
        (:meth:`train`) is refitted with the same query weighting unless new ``queries`` are given.
        Killed midway, the index stays searchable and writable with both codecs, and the next
        ``retrain`` finishes the move first.

        Args:
            encode_texts: texts -> token vectors, the encoder that built the index.
            sample_tokens: about how many tokens k-means trains on (default: the index setting).
            n_centroids: centroid count (default: the index setting, else chosen from the token count).
            queries: query token vectors (as in :meth:`train`, e.g. queries users have since asked)
                to weigh the new codec's errors by, in place of the old codec's weighting (if any).
            encoder: identity of the encoder behind ``encode_texts`` when it is not the one the index
                records (e.g. one fine-tuned by :mod:`colbert_store.training`): recorded as the index's
                encoder together with the new codec, so the index moves to it in one commit.

        Raises:
            NotTrainedError: the index has no codec yet.
            IndexChangedError: another process retrained the index at the same time (nothing done).
            InvalidInputError: ``encoder`` without ``encode_texts``, or of another dimension.
        """
        if encoder is not None and (encode_texts is None or encoder.get("dim", self.settings.dim) != self.settings.dim):
            raise InvalidInputError(
                f"retrain(encoder=...) needs encode_texts and an encoder of the index's {self.settings.dim} dimensions, "
                f"got encode_texts={encode_texts!r} and an encoder of dim {encoder.get('dim')}"
            )
        pool_factor = self.settings.pool_factor
        if encode_texts is not None and pool_factor > 1:
            encode_texts = pooling_encoder(encode_texts, pool_factor, self.settings.dim)
        options = RetrainOptions(encode_texts, sample_tokens, n_centroids, self._query_moment(queries), encoder)
        with self._write_lock:
            retrain(self._store, self._name, self._reload, options)

    def stats(self) -> dict[str, Any]:
        """Documents, tokens, encoded bytes per token, codec settings, the stored search defaults and
        :meth:`health` (``None`` before the first add), streaming the store once."""
        health = self._current_health()  # no codec yet: no documents either
        codec = self.codec
        return {
            "name": self._name,
            "documents": health.documents if health else 0,
            "tokens": health.tokens if health else 0,
            "dim": self.settings.dim,
            "nbits": self.settings.nbits,
            "pool_factor": self.settings.pool_factor,
            "centroids": codec.n_centroids if codec else None,
            "bytes_per_token": codec.stored_bytes_per_token if codec else None,
            "encoder": self.settings.encoder,
            "search": self.settings.search,
            "health": health,
        }

    def documents(self, batch_size: int = 1024) -> Iterator[DocumentBatch]:
        """Stream every stored document (encoded) from the store."""
        return self._store.scan(self._name, batch_size)

    # -- internals ----------------------------------------------------------------------------
    def _answer(
        self, matrices: list[np.ndarray], k: int, where: Filter | None, params: SearchParams,
        per_query: list[tuple[Fusion, str] | None],
    ) -> list[list[Hit]]:
        """The hits of each query, all at the store's version when the batch starts."""
        with self._source.one_version():  # the store's version is checked once for the whole batch
            if len(matrices) < 2 or self._search_threads == 1:
                return [hits_of(self._search_one(q, k, where, params, h)) for q, h in zip(matrices, per_query)]
            live = self._source.pinned_live()

            def answer(query: np.ndarray, hybrid: tuple[Fusion, str] | None) -> list[Hit]:
                with self._source.one_version(shared=live):
                    return hits_of(self._search_one(query, k, where, params, hybrid))

            # Threads of this call only: idle threads that have run torch keep OpenMP teams, and while they
            # exist OpenMP stops spinning between parallel regions, which slows every later search of the process.
            threads = min(self._search_threads, len(matrices))
            with ThreadPoolExecutor(threads, thread_name_prefix=f"colbert-store-search-{self._name}") as pool:
                return list(pool.map(answer, matrices, per_query))

    def _search_one(
        self, query: np.ndarray, k: int, where: Filter | None, params: SearchParams,
        hybrid: tuple[Fusion, str] | None = None,
    ) -> ScoredDocuments:
        """One query (with ``hybrid``, fused with the lexical leg for that text); run again with the codecs read anew if a
        candidate was encoded by a codec this object had not loaded yet (a retrain in another process)."""

        def run(state: LoadedState) -> ScoredDocuments:
            if hybrid is None:
                return search_one(self._source, state.by_generation(), query, k, where, params)
            fusion, text = hybrid
            return search_hybrid(self._source, state.by_generation(), query, text, k, where, params, fusion)

        state = self._state
        try:
            result = run(state)
            if result.undecodable and self._reload() is not state:
                result = run(self._state)
        finally:
            self._source.after_search()
        return result

    def _current_health(self) -> IndexHealth | None:
        """:meth:`health` against the current codec (reloaded if another process changed it); ``None`` untrained."""
        state = self._reload()
        if state.current is None or state.current_codec is None:
            return None
        return measure_health(self.documents(), state.current_codec, state.current.generation)

    def _reload(self) -> LoadedState:
        """Read the manifest again (loading new codecs); forget cached documents of codecs no longer held."""
        with self._reload_lock:
            state = load_state(self._store, self._name, self._state)
            if not set(self._state.codecs) <= set(state.codecs):
                self._cache.clear()
            self._state, self._checked = state, time.monotonic()
            return state

    def _commit_first_codec(self, state: LoadedState, codec: ResidualCodec) -> LoadedState:
        """Commit ``codec`` as the index's codec. If another process committed one first (two first
        adds at once), this one is discarded and theirs is used: one codec for every document. A codec
        replacing that of an empty index gets the next generation, so a document a concurrent writer
        encoded with the replaced one is re-encoded by that writer."""
        previous = state.current
        ref = CodecRef(0 if previous is None else previous.generation + 1, uuid.uuid4().hex)
        self._store.write_codec(self._name, ref.codec_id, codec.to_bytes())
        retired = () if previous is None else (previous,)
        if commit(self._store, self._name, state, CodecState(current=ref, retired=retired)) is None:
            self._store.delete_codecs(self._name, [ref.codec_id])
        return self._reload()

    def _settle(self, docs: DocumentsInput, written: list[_Written]) -> None:
        """After writing, make sure no written document keeps a codec the index no longer accepts
        (a retrain committed a new one meanwhile): re-encode those with the current codec, by writes
        that apply only where the document is still the version written here."""
        while True:
            state = self._reload()
            current, codec = state.current, state.current_codec
            assert current is not None and codec is not None
            stale = [i for i, part in enumerate(written) if not state.manifest.codecs.accepts(part.generation)]
            if not stale:
                return
            for i in stale:
                part = written[i]
                fresh = encode_documents(docs, part.rows, codec, current.generation)
                fresh = write_batch(self._store, self._name, fresh, replacing=part.batch.revisions)
                written[i] = _Written(part.rows, fresh, current.generation)

    def _query_moment(self, queries: Sequence[np.ndarray] | np.ndarray | None) -> np.ndarray | None:
        if queries is None:
            return None
        return query_second_moment(np.concatenate(self._checked_matrices(queries, "queries")))

    def _checked_matrices(self, matrices: Sequence[np.ndarray] | np.ndarray, what: str) -> list[np.ndarray]:
        """One matrix or a list of them, each checked and L2-normalised (errors name ``what[i]``)."""
        listed = [matrices] if isinstance(matrices, np.ndarray) else list(matrices)
        if not listed:
            raise InvalidInputError(f"{what} is empty")
        return [normalise_rows(check_matrix(m, self.settings.dim, f"{what}[{i}]"), f"{what}[{i}]") for i, m in enumerate(listed)]

