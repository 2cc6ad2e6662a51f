"""Text in, text out: a :class:`Retriever` pairs an :class:`~colbert_store.index.Index` with the encoder that fills it.

Example::

    from colbert_store import ColBERTEncoder, Retriever
    from colbert_store.adapters.lancedb import LanceDBStore

    encoder = ColBERTEncoder.from_pretrained("colbert-ir/colbertv2.0")
    retriever = Retriever.from_texts(["first doc", "second doc"], encoder=encoder,
                                     store=LanceDBStore("./db"), name="docs")
    best = retriever.search("which doc comes first?", k=1)[0]
    print(best.id, best.score, best.text)

Encoder compatibility:
    An index created through :meth:`Retriever.create` or :meth:`Retriever.from_texts` records
    ``encoder.identity`` (a local folder by its resolved path) in its settings. When it is
    reopened, the encoder must produce the same *document* vectors, so these identity fields must be
    equal: ``name_or_path`` (a local folder is compared by its resolved path), ``layout``, ``dim``,
    ``query_marker``, ``doc_marker``, ``doc_maxlen`` and ``projection_sha256``, and so must
    ``query_expansion``: whether queries keep ``[MASK]`` padding decides what the codec was weighted
    for and what scores mean (an index recorded before the switch existed was built with expansion).
    The query-side knobs ``query_maxlen`` and ``attend_to_mask_tokens`` only tune how queries are
    encoded, so a difference there is logged and accepted. An index built from raw vectors (no
    recorded encoder) accepts any encoder of the right dimension.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from colbert_store.errors import IncompatibleIndexError, InvalidInputError
from colbert_store.fusion import Fusion
from colbert_store.hits import Hit
from colbert_store.index import Index
from colbert_store.pseudo_queries import sample_sentences
from colbert_store.storage import Store
from colbert_store.validation import check_count, check_ids, check_metadata

if TYPE_CHECKING:  # the encoder needs the ``encoder`` extra (transformers); the retriever itself does not
    from colbert_store.encoder import ColBERTEncoder

logger = logging.getLogger(__name__)

IDENTITY_FIELDS = (
    "name_or_path", "layout", "dim", "query_marker", "doc_marker", "doc_maxlen", "projection_sha256", "query_expansion",
)
"""Encoder identity fields that must match the index's recorded encoder (they determine the vectors it holds
and how queries must look to be scored against them)."""
QUERY_ONLY_FIELDS = ("query_maxlen", "attend_to_mask_tokens")
"""Identity fields that only affect query encoding; a difference is logged, not refused."""


class Retriever:
    """Search an index with text: encodes documents and queries with one ColBERT encoder.

    Args:
        index: An open index.
        encoder: The encoder whose vectors the index holds (or will hold).

    Raises:
        IncompatibleIndexError: ``encoder`` does not match the index's dimension or recorded encoder
            (see the module docstring for the fields compared).
    """

    def __init__(self, index: Index, encoder: ColBERTEncoder) -> None:
        check_compatible(index, encoder)
        self._index = index
        self._encoder = encoder

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_texts(
        cls,
        texts: Sequence[str],
        *,
        encoder: ColBERTEncoder,
        store: Store,
        name: str,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        nbits: int = 2,
        batch_size: int = 256,
        show_progress: bool | None = None,
        **index_settings: Any,
    ) -> Retriever:
        """Create index ``name`` in ``store`` (see :meth:`create`) and add ``texts``.

        The inputs are validated before the index is created, so a bad call leaves the store untouched.

        Args:
            texts: Documents to index.
            encoder: Encoder for documents and queries; its identity is saved with the index.
            store: Where the index lives.
            name: Index name (must not exist yet).
            ids: Document ids; random hex ids when ``None``.
            metadatas: One metadata dict (or ``None``) per text.
            nbits: Bits per residual dimension (1, 2 or 4).
            batch_size: Texts encoded per step of :meth:`add_texts`.
            show_progress: See :meth:`add_texts`.
            **index_settings: Further :class:`~colbert_store.settings.IndexSettings` fields except ``dim``.

        Returns:
            A retriever over the new index.

        Raises:
            IndexExistsError: ``name`` already exists in ``store``.
            InvalidInputError: Bad texts, ids, metadata or settings.
        """
        check_count(batch_size, "batch_size")
        _check_inputs(texts, ids, metadatas)
        retriever = cls.create(store, name, encoder, nbits=nbits, **index_settings)
        retriever.add_texts(texts, ids=ids, metadatas=metadatas, batch_size=batch_size, show_progress=show_progress)
        return retriever

    @classmethod
    def create(cls, store: Store, name: str, encoder: ColBERTEncoder, *, nbits: int = 2, **index_settings: Any) -> Retriever:
        """Create the empty index ``name`` in ``store`` for ``encoder``'s vectors, recording the encoder's identity.

        Args:
            store: Where the index lives.
            name: Index name (must not exist yet).
            encoder: Encoder for documents and queries; its dimension and identity are saved with the index.
            nbits: Bits per residual dimension (1, 2 or 4).
            **index_settings: Further :class:`~colbert_store.settings.IndexSettings` fields except ``dim``.

        Raises:
            IndexExistsError: ``name`` already exists in ``store``.
            InvalidInputError: Bad settings.
        """
        if "dim" in index_settings:
            raise InvalidInputError("the index takes dim from the encoder; do not pass it")
        index = Index.create(store, name, dim=encoder.dim, nbits=nbits, encoder=recorded_identity(encoder), **index_settings)
        return cls(index, encoder)

    @classmethod
    def open(cls, store: Store, name: str, encoder: ColBERTEncoder) -> Retriever:
        """Open the existing index ``name`` and check that ``encoder`` matches it.

        Raises:
            IndexNotFoundError: ``name`` does not exist in ``store``.
            IncompatibleIndexError: ``encoder`` does not match the index.
        """
        return cls(Index.open(store, name), encoder)

    # -- properties ---------------------------------------------------------------------------
    @property
    def index(self) -> Index:
        """The underlying index."""
        return self._index

    @property
    def encoder(self) -> ColBERTEncoder:
        """The encoder used for documents and queries."""
        return self._encoder

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"Retriever({self._index!r}, {self._encoder!r})"

    # -- writing ------------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Sequence[str],
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        batch_size: int = 256,
        show_progress: bool | None = None,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Encode and add documents; an existing id is replaced.

        Everything is validated before anything is encoded or written. Texts are encoded and written
        ``batch_size`` at a time, except that while the index has no codec yet, encoded batches are
        held back until they reach the index's ``sample_tokens`` (or the input ends), so the codec
        is trained on a sample of that size rather than on the first batch alone.

        Args:
            texts: Non-blank document strings.
            ids: Distinct document ids, one per text; random ``uuid4`` hex strings when ``None``.
            metadatas: One metadata dict (or ``None``) per text.
            batch_size: Texts per encode-and-write step.
            show_progress: ``True``/``False`` forces the tqdm progress bar; ``None`` shows it when there is
                more than one batch and no ``progress`` callback.
            progress: Called with the number of documents just encoded, after every batch (e.g. an outer
                progress bar's ``update``).

        Returns:
            The document ids, in input order.

        Raises:
            InvalidInputError: Bad texts, ids, metadata or batch size; the index is unchanged.
        """
        check_count(batch_size, "batch_size")
        texts, doc_ids, metadata = _check_inputs(texts, ids, metadatas)
        show = show_progress if show_progress is not None else progress is None and len(texts) > batch_size
        pending = _Pending()
        bar = tqdm(total=len(texts), desc="Indexing", unit="doc", disable=not show)
        # An outer bar or callback replaces the encoder's own per-batch bars.
        encoder_bars = False if show or progress is not None else None
        with bar:
            for start in range(0, len(texts), batch_size):
                stop = start + batch_size
                vectors = self._encoder.encode_documents(texts[start:stop], show_progress=encoder_bars)
                pending.extend(doc_ids[start:stop], vectors, texts[start:stop], metadata[start:stop])
                bar.update(len(vectors))
                if progress is not None:
                    progress(len(vectors))
                if self._index.codec is not None or pending.tokens >= self._index.settings.sample_tokens:
                    self._flush(pending, encoder_bars)
            self._flush(pending, encoder_bars)
        return doc_ids

    def _flush(self, pending: _Pending, encoder_bars: bool | None) -> None:
        """Write what is pending. While the index has no codec, the write trains one, with sentences
        of the pending texts encoded as queries weighing its errors (see :meth:`Index.train`)."""
        queries = None
        if pending.ids and self._index.codec is None:
            queries = self._encoder.encode_queries(sample_sentences(pending.texts), show_progress=encoder_bars)
        pending.flush(self._index, queries)

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id; unknown ids are ignored."""
        self._index.delete(ids)

    def retrain(
        self, queries: Sequence[str] | None = None, *, encoder: ColBERTEncoder | None = None, **options: Any
    ) -> None:
        """Refit the codec and re-encode the stored texts with this encoder (see :meth:`Index.retrain`).

        ``queries``: query texts (e.g. a few hundred that users asked) to weigh the new codec's
        errors by, in place of the sentences the first add encoded as queries.
        ``encoder``: move the index to another encoder of the same dimension (e.g. one fine-tuned by
        :func:`colbert_store.training.train`): the texts are re-encoded by it, the index records its
        identity, and this retriever uses it from then on. Pass ``queries`` with it, so that the new
        codec is weighed by the new encoder's queries rather than by the old codec's weighting.

        Raises:
            IncompatibleIndexError: ``encoder`` makes vectors of another dimension than the index's.
        """
        if encoder is not None and encoder.dim != self._index.settings.dim:
            raise IncompatibleIndexError(
                f"index {self._index.name!r} holds {self._index.settings.dim}-d vectors; the new encoder makes "
                f"{encoder.dim}-d ones"
            )
        new = encoder or self._encoder
        vectors = None if queries is None else new.encode_queries(queries)
        identity = None if encoder is None else recorded_identity(encoder)
        self._index.retrain(encode_texts=new.encode_documents, queries=vectors, encoder=identity, **options)
        self._encoder = new

    # -- searching ----------------------------------------------------------------------------
    def search(
        self, query: str, k: int = 10, filter: Mapping[str, Any] | None = None, hybrid: bool = False,
        fusion: Fusion | str | None = None, **params: Any,
    ) -> list[Hit]:
        """Top ``k`` documents for one query string.

        Args:
            query: The query text.
            k: Number of hits.
            filter: Metadata filter (see :mod:`colbert_store.filters`).
            hybrid: Also rank the documents by the store's BM25 for ``query`` and fuse the two rankings
                (see :meth:`colbert_store.Index.search`); hit scores are then the fused scores.
            fusion: With ``hybrid``, how to fuse (a :class:`~colbert_store.Fusion` or a method name).
            **params: :class:`~colbert_store.search.SearchParams` overrides for this call.

        Returns:
            Hits, best first.

        Raises:
            InvalidInputError: A non-string or blank query, bad ``k``, filter or parameters.
            LexicalSearchUnavailableError: ``hybrid`` on an index whose store cannot run a full-text search.
        """
        if not isinstance(query, str):
            raise InvalidInputError(f"query must be a string, got {type(query).__name__}; use search_batch for many")
        return self.search_batch([query], k=k, filter=filter, hybrid=hybrid, fusion=fusion, **params)[0]

    def search_batch(
        self, queries: Sequence[str], k: int = 10, filter: Mapping[str, Any] | None = None, hybrid: bool = False,
        fusion: Fusion | str | None = None, **params: Any,
    ) -> list[list[Hit]]:
        """:meth:`search` for many query strings with the same ``k``, filter and parameters."""
        check_count(k, "k")
        if not isinstance(hybrid, bool):
            raise InvalidInputError(f"hybrid must be True or False, got {hybrid!r}")
        vectors = self._encoder.encode_queries(queries)
        texts = list(queries) if hybrid else None
        return self._index.search_batch(vectors, k=k, filter=filter, texts=texts, fusion=fusion, **params)


# ---------------------------------------------------------------------------------------------- helpers


class _Pending:
    """Encoded documents waiting to be written."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.vectors: list[np.ndarray] = []
        self.texts: list[str] = []
        self.metadata: list[dict[str, Any]] = []
        self.tokens = 0

    def clear(self) -> None:
        """Forget everything pending."""
        self.ids, self.vectors, self.texts, self.metadata, self.tokens = [], [], [], [], 0

    def extend(self, ids: list[str], vectors: list[np.ndarray], texts: list[str], metadata: list[dict[str, Any]]) -> None:
        self.ids += ids
        self.vectors += vectors
        self.texts += texts
        self.metadata += metadata
        self.tokens += sum(len(v) for v in vectors)

    def flush(self, index: Index, queries: list[np.ndarray] | None = None) -> None:
        """Write everything pending to ``index`` (``queries``: see :meth:`Index.add`)."""
        if self.ids:
            index.add(self.ids, self.vectors, texts=self.texts, metadata=self.metadata, queries=queries)
        self.clear()


def _check_inputs(
    texts: Any, ids: Any, metadatas: Any
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Validate ``add_texts`` arguments; return texts, ids (generated when ``None``) and metadata dicts."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InvalidInputError(f"texts must be a list of strings, got {type(texts).__name__}")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"texts[{position}] is {type(text).__name__}, expected str")
        if not text.strip():
            raise InvalidInputError(f"texts[{position}] is empty or whitespace-only")
    if ids is None:
        doc_ids = [uuid.uuid4().hex for _ in texts]
    else:
        doc_ids = check_ids(ids)
        if len(doc_ids) != len(texts):
            raise InvalidInputError(f"got {len(texts)} texts but {len(doc_ids)} ids")
    if isinstance(metadatas, Sequence) and len(metadatas) != len(texts):
        raise InvalidInputError(f"got {len(texts)} texts but {len(metadatas)} metadatas")
    return list(texts), doc_ids, check_metadata(metadatas, doc_ids)


def check_compatible(index: Index, encoder: ColBERTEncoder) -> None:
    """Raise :class:`IncompatibleIndexError` unless ``encoder`` can read and extend ``index``.

    Args:
        index: The index.
        encoder: The candidate encoder.
    """
    recorded = index.settings.encoder
    current = encoder.identity
    if index.settings.dim != encoder.dim:
        raise IncompatibleIndexError(
            f"index {index.name!r} holds {index.settings.dim}-d vectors but the encoder makes {encoder.dim}-d ones; "
            f"index encoder: {recorded}, given encoder: {current}"
        )
    if recorded is None:
        return
    differing = [
        field for field in IDENTITY_FIELDS
        if _normalised(field, recorded.get(field)) != _normalised(field, current.get(field))
    ]
    if differing:
        raise IncompatibleIndexError(
            f"index {index.name!r} was built with another encoder (differs in {', '.join(differing)}); "
            f"index encoder: {recorded}, given encoder: {current}"
        )
    query_side = [field for field in QUERY_ONLY_FIELDS if recorded.get(field) != current.get(field)]
    if query_side:
        logger.info("encoder differs from index %r in query-side settings only: %s", index.name, query_side)


def recorded_identity(encoder: ColBERTEncoder) -> dict[str, Any]:
    """``encoder.identity`` as an index records it: a local folder by its resolved path."""
    identity = encoder.identity
    identity["name_or_path"] = _normalised("name_or_path", identity["name_or_path"])
    return identity


def _normalised(field: str, value: Any) -> Any:
    """An identity value prepared for comparison: local folders become their resolved absolute path, and
    an identity recorded before ``query_expansion`` existed had it on (queries were always padded)."""
    if field == "name_or_path" and isinstance(value, str) and os.path.exists(value):
        return os.path.realpath(value)
    if field == "query_expansion" and value is None:
        return True
    return value
