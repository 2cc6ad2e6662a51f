"""What a search returns: one :class:`Hit` per document, best first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from colbert_store.search import ScoredDocuments


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    score: float
    text: str | None
    metadata: dict[str, Any]


def hits_of(result: ScoredDocuments) -> list[Hit]:
    """The hits of one query's scored documents, in their order."""
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
