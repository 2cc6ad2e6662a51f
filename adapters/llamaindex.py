"""LlamaIndex retriever over a colbert-store :class:`~colbert_store.Retriever` (needs the ``llamaindex`` extra).

Example::

    from colbert_store import ColBERTEncoder
    from colbert_store.adapters.lancedb import LanceDBStore
    from colbert_store.adapters.llamaindex import ColbertStoreLlamaIndexRetriever

    retriever = ColbertStoreLlamaIndexRetriever.from_texts(
        ["first doc", "second doc"], encoder=ColBERTEncoder.from_pretrained("colbert-ir/colbertv2.0"),
        store=LanceDBStore("./db"), name="docs", similarity_top_k=2,
    )
    for result in retriever.retrieve("which doc comes first?"):
        print(result.node.id_, result.score, result.node.get_content())

Results are ``NodeWithScore`` objects holding a ``TextNode`` (``id_`` = document id, ``text``, ``metadata``)
and the MaxSim score. ``aretrieve`` runs the search in a worker thread (:func:`asyncio.to_thread`), so the
event loop is never blocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from colbert_store._optional import require

require("llama_index.core", "llamaindex")

from llama_index.core.base.base_retriever import BaseRetriever  # noqa: E402
from llama_index.core.callbacks import CallbackManager  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

from colbert_store.errors import FilterError, InvalidInputError  # noqa: E402
from colbert_store.hits import Hit  # noqa: E402
from colbert_store.index import Index  # noqa: E402
from colbert_store.retriever import Retriever  # noqa: E402
from colbert_store.storage import Store  # noqa: E402
from colbert_store.validation import check_count  # noqa: E402

if TYPE_CHECKING:  # the encoder needs the ``encoder`` extra; only its type is named here
    from colbert_store.encoder import ColBERTEncoder

__all__ = ["ColbertStoreLlamaIndexRetriever", "hit_to_node", "metadata_filters_to_dict"]

DEFAULT_SIMILARITY_TOP_K = 2
"""LlamaIndex's own default for vector retrievers."""

_OPERATORS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}


class ColbertStoreLlamaIndexRetriever(BaseRetriever):
    """A LlamaIndex ``BaseRetriever`` that searches a colbert-store index with ColBERT late interaction.

    Args:
        retriever: The colbert-store retriever (index + encoder) to search.
        similarity_top_k: Nodes per query.
        filters: A colbert-store filter dict (see :mod:`colbert_store.filters`) or LlamaIndex
            ``MetadataFilters`` using the operators ``== != > >= < <= in nin`` (others raise ``FilterError``).
        search_params: :class:`~colbert_store.SearchParams` overrides for every search (``nprobe``...),
            and ``fusion`` for hybrid searches.
        hybrid: Fuse the MaxSim ranking with the store's BM25 ranking of the query
            (see :meth:`colbert_store.Index.search`).
        callback_manager: LlamaIndex callback manager.
        verbose: LlamaIndex's verbose flag.
    """

    def __init__(
        self,
        retriever: Retriever,
        *,
        similarity_top_k: int = DEFAULT_SIMILARITY_TOP_K,
        filters: MetadataFilters | Mapping[str, Any] | None = None,
        search_params: Mapping[str, Any] | None = None,
        hybrid: bool = False,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if not isinstance(retriever, Retriever):
            raise InvalidInputError(f"retriever must be a colbert_store.Retriever, got {type(retriever).__name__}")
        check_count(similarity_top_k, "similarity_top_k")
        self._retriever = retriever
        self._top_k = similarity_top_k
        self._filter = metadata_filters_to_dict(filters) if isinstance(filters, MetadataFilters) else filters
        self._search_params = dict(search_params or {})
        if not isinstance(hybrid, bool):
            raise InvalidInputError(f"hybrid must be True or False, got {hybrid!r}")
        self._hybrid = hybrid
        super().__init__(callback_manager=callback_manager, verbose=verbose)

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
        **options: Any,
    ) -> ColbertStoreLlamaIndexRetriever:
        """Index ``texts`` in a new index ``name`` (:meth:`colbert_store.Retriever.from_texts`) and wrap it.

        ``index_settings`` go to :meth:`colbert_store.Retriever.from_texts` (``nbits``, ``n_centroids``...);
        ``options`` are this class's keyword arguments (``similarity_top_k``, ``filters``...).
        """
        core = Retriever.from_texts(
            texts, encoder=encoder, store=store, name=name, ids=ids, metadatas=metadatas, **dict(index_settings or {})
        )
        return cls(core, **options)

    @classmethod
    def from_index(cls, index: Index, encoder: ColBERTEncoder, **options: Any) -> ColbertStoreLlamaIndexRetriever:
        """Wrap an open index and the encoder that built it (checked as by :class:`colbert_store.Retriever`)."""
        return cls(Retriever(index, encoder), **options)

    @property
    def retriever(self) -> Retriever:
        """The colbert-store retriever searched (use it to add or delete documents)."""
        return self._retriever

    @property
    def similarity_top_k(self) -> int:
        """Nodes per query."""
        return self._top_k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self._retriever.search(
            query_bundle.query_str, k=self._top_k, filter=self._filter, hybrid=self._hybrid, **self._search_params
        )
        return [hit_to_node(hit) for hit in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)


def hit_to_node(hit: Hit) -> NodeWithScore:
    """A ``NodeWithScore`` for one hit: a ``TextNode`` with the document's id, text and metadata.

    >>> result = hit_to_node(Hit(id="a", score=1.5, text="hello", metadata={"lang": "en"}))
    >>> result.node.id_, result.node.text, result.node.metadata, result.score
    ('a', 'hello', {'lang': 'en'}, 1.5)
    """
    return NodeWithScore(node=TextNode(id_=hit.id, text=hit.text or "", metadata=dict(hit.metadata)), score=hit.score)


def metadata_filters_to_dict(filters: MetadataFilters) -> dict[str, Any]:
    """Translate LlamaIndex ``MetadataFilters`` into a colbert-store filter dict.

    ``condition="not"`` matches documents that match none of the filters, as LlamaIndex's own stores do.

    >>> metadata_filters_to_dict(MetadataFilters(filters=[
    ...     MetadataFilter(key="year", value=2020, operator=">="), MetadataFilter(key="lang", value=["en", "de"], operator="in"),
    ... ], condition="or"))
    {'$or': [{'year': {'$gte': 2020}}, {'lang': {'$in': ['en', 'de']}}]}

    Raises:
        FilterError: An operator or condition colbert-store filters cannot express.
    """
    clauses = [
        metadata_filters_to_dict(item) if isinstance(item, MetadataFilters) else _clause(item) for item in filters.filters
    ]
    if not clauses:
        raise FilterError("MetadataFilters holds no filters")
    condition = filters.condition or FilterCondition.AND
    either = clauses[0] if len(clauses) == 1 else {"$or": clauses}
    if condition == FilterCondition.AND:
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}
    if condition == FilterCondition.OR:
        return either
    if condition == FilterCondition.NOT:
        return {"$not": either}
    raise FilterError(f"unsupported MetadataFilters condition {condition!r}")


def _clause(item: MetadataFilter) -> dict[str, Any]:
    operator = _OPERATORS.get(FilterOperator(item.operator))
    if operator is None:
        supported = ", ".join(op.value for op in _OPERATORS)
        raise FilterError(f"filter on {item.key!r}: operator {item.operator.value!r} is not supported; supported: {supported}")
    return {item.key: {operator: item.value}}
