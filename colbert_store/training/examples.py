"""Training examples: each judged query with its positive passage and hard negatives mined from the user's index.

Mining is ColBERTv2's first step (Santhanam et al., 2022): retrieve the top passages of every training query with
the ColBERT model itself; those that are not judged relevant are hard negatives. Here the retrieval is
colbert-store's own search over the user's index, with the user's metadata filter.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from colbert_store.errors import InvalidInputError
from colbert_store.index import Index
from colbert_store.retriever import check_compatible

if TYPE_CHECKING:
    from colbert_store.encoder import ColBERTEncoder

logger = logging.getLogger(__name__)

_QUOTED = 5
"""How many offending ids an error message lists."""


@dataclass(frozen=True)
class TrainingExample:
    """One training query, its positive passage first, then its negatives best-ranked first.

    Attributes:
        query_id: The query's id.
        query: The query's text.
        passage_ids: The positive's document id, then the negatives'.
        passages: Their texts, aligned with ``passage_ids``.
        teacher_scores: A teacher's score of each passage, aligned with ``passage_ids``, or ``None``.
    """

    query_id: str
    query: str
    passage_ids: tuple[str, ...]
    passages: tuple[str, ...]
    teacher_scores: tuple[float, ...] | None = None

    @property
    def n_negatives(self) -> int:
        """How many negatives the example holds."""
        return len(self.passage_ids) - 1

    def with_teacher_scores(self, scores: Sequence[float]) -> TrainingExample:
        """A copy holding ``scores`` (one per passage) as its teacher scores."""
        if len(scores) != len(self.passage_ids):
            raise InvalidInputError(
                f"query {self.query_id!r}: got {len(scores)} teacher scores for {len(self.passage_ids)} passages"
            )
        return replace(self, teacher_scores=tuple(float(s) for s in scores))

    def to_json(self) -> dict[str, Any]:
        """The example as a JSON object."""
        return {
            "query_id": self.query_id, "query": self.query, "passage_ids": list(self.passage_ids),
            "passages": list(self.passages),
            "teacher_scores": None if self.teacher_scores is None else list(self.teacher_scores),
        }

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> TrainingExample:
        """Inverse of :meth:`to_json`."""
        scores = values.get("teacher_scores")
        return cls(
            str(values["query_id"]), str(values["query"]), tuple(values["passage_ids"]), tuple(values["passages"]),
            None if scores is None else tuple(float(s) for s in scores),
        )


def check_judgements(queries: Mapping[str, str], positives: Mapping[str, Collection[str]]) -> dict[str, list[str]]:
    """Each query's positive ids (sorted), after checking that every query has one and every judged query exists.

    Raises:
        InvalidInputError: A query without a positive, positives of an unknown query, or a blank query.
    """
    if not queries:
        raise InvalidInputError("no training queries given")
    blank = [query_id for query_id, text in queries.items() if not isinstance(text, str) or not text.strip()]
    if blank:
        raise InvalidInputError(f"{len(blank)} queries have no text, e.g. {blank[:_QUOTED]}")
    unknown = sorted(set(positives) - set(queries))
    if unknown:
        raise InvalidInputError(
            f"positives are given for {len(unknown)} queries that are not among the queries, e.g. {unknown[:_QUOTED]}"
        )
    lacking = [query_id for query_id in queries if not positives.get(query_id)]
    if lacking:
        raise InvalidInputError(f"{len(lacking)} queries have no positive passage, e.g. {lacking[:_QUOTED]}")
    return {query_id: sorted(map(str, positives[query_id])) for query_id in queries}


def stored_texts(index: Index, ids: Collection[str]) -> dict[str, str]:
    """The stored texts of ``ids`` (one scan of the index).

    Raises:
        InvalidInputError: An id the index does not hold, or a document stored without text.
    """
    wanted, found = set(ids), {}
    for batch in index.documents():
        for doc_id, text in zip(batch.ids, batch.texts or [None] * len(batch)):
            if doc_id in wanted:
                if text is None:
                    raise InvalidInputError(f"document {doc_id!r} of index {index.name!r} is stored without text")
                found[doc_id] = text
    missing = sorted(wanted - set(found))
    if missing:
        raise InvalidInputError(
            f"{len(missing)} positive passages are not in index {index.name!r}, e.g. {missing[:_QUOTED]}"
        )
    return found


def mine_examples(
    encoder: ColBERTEncoder,
    queries: Mapping[str, str],
    positives: Mapping[str, Collection[str]],
    index: Index,
    *,
    depth: int,
    filter: Mapping[str, Any] | None = None,
    **search_params: Any,
) -> list[TrainingExample]:
    """One example per (query, positive) pair, its negatives the query's top ``depth`` non-positive search results.

    Args:
        encoder: The encoder whose vectors the index holds; it encodes the queries.
        queries: Query id -> text.
        positives: Query id -> ids of its relevant documents (e.g. the qrels with a positive score).
        index: The index to mine from; it must hold the positives, with their texts.
        depth: Negatives kept per query.
        filter: Metadata filter applied to the search (see :mod:`colbert_store.filters`).
        **search_params: :class:`~colbert_store.search.SearchParams` overrides for the mining searches.

    Returns:
        The examples, in query order; a query with fewer than ``depth`` non-positive hits gets fewer negatives.

    Raises:
        InvalidInputError: See :func:`check_judgements` and :func:`stored_texts`.
        IncompatibleIndexError: ``encoder`` is not the index's encoder.
    """
    judged = check_judgements(queries, positives)
    check_compatible(index, encoder)
    texts = stored_texts(index, {doc_id for ids in judged.values() for doc_id in ids})
    query_ids = list(judged)
    vectors = encoder.encode_queries([queries[query_id] for query_id in query_ids])
    k = depth + max(len(ids) for ids in judged.values())
    results = index.search_batch(vectors, k=k, filter=filter, **search_params)
    examples = []
    for query_id, hits in zip(query_ids, results, strict=True):
        relevant = set(judged[query_id])
        negatives = [hit for hit in hits if hit.id not in relevant][:depth]
        without_text = [hit.id for hit in negatives if hit.text is None]
        if without_text:
            raise InvalidInputError(f"documents {without_text[:_QUOTED]} of index {index.name!r} are stored without text")
        for positive in judged[query_id]:
            examples.append(TrainingExample(
                query_id, queries[query_id], (positive, *(hit.id for hit in negatives)),
                (texts[positive], *(str(hit.text) for hit in negatives)),
            ))
    logger.info("mined %d examples of %d queries (up to %d negatives each) in %r", len(examples), len(judged), depth, index.name)
    return examples
