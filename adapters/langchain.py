"""LangChain retriever over a colbert-store :class:`~colbert_store.Retriever` (needs the ``langchain`` extra).

Example::

    from colbert_store import ColBERTEncoder
    from colbert_store.adapters.lancedb import LanceDBStore
    from colbert_store.adapters.langchain import ColbertStoreRetriever

    retriever = ColbertStoreRetriever.from_texts(
        ["first doc", "second doc"], encoder=ColBERTEncoder.from_pretrained("colbert-ir/colbertv2.0"),
        store=LanceDBStore("./db"), name="docs", k=2,
    )
    docs = retriever.invoke("which doc comes first?")            # k=2, the retriever's own settings
    docs = retriever.invoke("which doc comes first?", k=1, filter={"lang": "en"})   # this call only

Each search runs as one call of :meth:`colbert_store.Retriever.search`; ``ainvoke``/``abatch`` run it in a
worker thread (:func:`asyncio.to_thread`), so the event loop is never blocked. Index search is thread-safe,
so many concurrent calls on one retriever give the same results as sequential ones.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from colbert_store._optional import require

require("langchain_core", "langchain")

from langchain_core.callbacks import (  # noqa: E402
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from pydantic import Field, field_validator  # noqa: E402

from colbert_store.errors import InvalidInputError  # noqa: E402
from colbert_store.hits import Hit  # noqa: E402
from colbert_store.index import Index  # noqa: E402
from colbert_store.retriever import Retriever  # noqa: E402
from colbert_store.search import SearchParams  # noqa: E402
from colbert_store.storage import Store  # noqa: E402

if TYPE_CHECKING:  # the encoder needs the ``encoder`` extra; only its type is named here
    from colbert_store.encoder import ColBERTEncoder

__all__ = ["ColbertStoreRetriever", "hit_to_document"]

SEARCH_KEYS = frozenset({"k", "filter", "hybrid", "fusion"} | {field.name for field in fields(SearchParams)})
"""Keys accepted in ``search_kwargs`` and as per-call keyword arguments."""


class ColbertStoreRetriever(BaseRetriever):
    """A LangChain ``BaseRetriever`` that searches a colbert-store index with ColBERT late interaction.

    Settings are layered, later ones winning: the ``k`` and ``filter`` fields, then ``search_kwargs``, then
    the keyword arguments of one call (``retriever.invoke(query, k=2, filter={...}, nprobe=4)``). Each layer
    may hold ``k``, ``filter`` and any :class:`~colbert_store.SearchParams` knob (``nprobe``,
    ``ncandidates``, ``nrerank``, ``rerank_margin``, ``centroid_threshold``, ``max_pruned_pairs``); other names raise
    ``InvalidInputError``. To change settings inside a chain, make ``search_kwargs`` configurable
    (``retriever.configurable_fields(search_kwargs=ConfigurableField(id="search_kwargs"))``).

    Documents carry ``page_content`` = the stored text (``""`` for documents indexed without text),
    ``id`` = the document id, and ``metadata`` = the stored metadata plus ``"id"`` and ``"score"`` (the
    MaxSim score); these two keys replace stored fields of the same name.

    Attributes:
        retriever: The colbert-store retriever (index + encoder) to search.
        k: Documents per query (LangChain's usual default, 4).
        filter: Metadata filter (see :mod:`colbert_store.filters`), or ``None``.
        hybrid: Fuse the MaxSim ranking with the store's BM25 ranking of the query (``fusion`` in
            ``search_kwargs`` or per call chooses how; see :meth:`colbert_store.Index.search`).
        search_kwargs: Further defaults: ``k``, ``filter``, ``hybrid``, ``fusion`` or search knobs.
    """

    retriever: Retriever
    k: int = Field(default=4, ge=1)
    filter: dict[str, Any] | None = None
    hybrid: bool = False
    search_kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("search_kwargs")
    @classmethod
    def _known_search_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_keys(value, "search_kwargs")
        return value

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
        index_settings: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> ColbertStoreRetriever:
        """Index ``texts`` in a new index ``name`` (:meth:`colbert_store.Retriever.from_texts`) and wrap it.

        Args:
            texts: Documents to index.
            encoder: ColBERT encoder for documents and queries.
            store: Where the index lives.
            name: Index name (must not exist yet).
            ids: Document ids; random when ``None``.
            metadatas: One metadata dict (or ``None``) per text.
            index_settings: Keyword arguments for :meth:`colbert_store.Retriever.from_texts` (``nbits``,
                ``n_centroids``, ``batch_size``...).
            **fields: Fields of this class: ``k``, ``filter``, ``search_kwargs``, ``tags``, ``metadata``.
        """
        core = Retriever.from_texts(
            texts, encoder=encoder, store=store, name=name, ids=ids, metadatas=metadatas, **dict(index_settings or {})
        )
        return cls(retriever=core, **fields)

    @classmethod
    def from_index(cls, index: Index, encoder: ColBERTEncoder, **fields: Any) -> ColbertStoreRetriever:
        """Wrap an open index and the encoder that built it (checked as by :class:`colbert_store.Retriever`)."""
        return cls(retriever=Retriever(index, encoder), **fields)

    @classmethod
    def open(cls, store: Store, name: str, encoder: ColBERTEncoder, **fields: Any) -> ColbertStoreRetriever:
        """Open the existing index ``name`` in ``store`` (:meth:`colbert_store.Retriever.open`) and wrap it."""
        return cls(retriever=Retriever.open(store, name, encoder), **fields)

    # -- writing ------------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Sequence[str],
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Encode and add texts (an existing id is replaced); see :meth:`colbert_store.Retriever.add_texts`.

        Returns:
            The document ids, in input order.
        """
        return self.retriever.add_texts(texts, ids=ids, metadatas=metadatas, **kwargs)

    def add_documents(self, documents: Sequence[Document], ids: Sequence[str] | None = None, **kwargs: Any) -> list[str]:
        """Add LangChain documents: their ``page_content`` and ``metadata``.

        Ids come from ``ids``, else from each document's ``id``, else are random hex strings.

        Returns:
            The document ids, in input order.
        """
        if ids is None:
            ids = [document.id or uuid.uuid4().hex for document in documents]
        texts = [document.page_content for document in documents]
        return self.add_texts(texts, ids=ids, metadatas=[document.metadata for document in documents], **kwargs)

    def delete(self, ids: Sequence[str]) -> None:
        """Delete documents by id; unknown ids are ignored."""
        self.retriever.delete(ids)

    # -- searching ----------------------------------------------------------------------------
    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return self._run(query, self._settings(kwargs))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        settings = self._settings(kwargs)  # bad arguments raise here, before a thread is taken
        return await asyncio.to_thread(self._run, query, settings)

    def _settings(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """This call's ``k``, ``filter`` and knobs: fields, then ``search_kwargs``, then ``overrides``."""
        _check_keys(overrides, "search arguments")
        return {"k": self.k, "filter": self.filter, "hybrid": self.hybrid, **self.search_kwargs, **overrides}

    def _run(self, query: str, settings: dict[str, Any]) -> list[Document]:
        knobs = {name: value for name, value in settings.items() if name not in ("k", "filter", "hybrid")}
        hits = self.retriever.search(query, k=settings["k"], filter=settings["filter"], hybrid=settings["hybrid"], **knobs)
        return [hit_to_document(hit) for hit in hits]


def hit_to_document(hit: Hit) -> Document:
    """A LangChain ``Document`` for one hit: text as ``page_content``, metadata plus ``id`` and ``score``.

    >>> doc = hit_to_document(Hit(id="a", score=1.5, text="hello", metadata={"lang": "en"}))
    >>> doc.id, doc.page_content, doc.metadata
    ('a', 'hello', {'lang': 'en', 'id': 'a', 'score': 1.5})
    """
    return Document(page_content=hit.text or "", id=hit.id, metadata={**hit.metadata, "id": hit.id, "score": hit.score})


def _check_keys(values: Mapping[str, Any], where: str) -> None:
    unknown = set(values) - SEARCH_KEYS
    if unknown:
        raise InvalidInputError(f"unknown {where}: {sorted(unknown)}; known: {sorted(SEARCH_KEYS)}")
