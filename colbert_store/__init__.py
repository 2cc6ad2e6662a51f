"""colbert-store: ColBERTv2/PLAID late-interaction retrieval with the index kept in your vector database.

``ColBERTEncoder`` needs the ``encoder`` extra (transformers); it is imported on first use, so
``import colbert_store`` works without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from colbert_store.cache import CacheInfo
from colbert_store.codec import ResidualCodec
from colbert_store.errors import (
    ColbertStoreError,
    FilterError,
    IncompatibleIndexError,
    IndexChangedError,
    IndexExistsError,
    IndexNotFoundError,
    InvalidInputError,
    LexicalSearchUnavailableError,
    MissingDependencyError,
    NotTrainedError,
    StoreUnavailableError,
    WriteConflictError,
)
from colbert_store.fusion import Fusion
from colbert_store.hits import Hit
from colbert_store.index import Index
from colbert_store.maintenance import IndexHealth
from colbert_store.maxsim import maxsim
from colbert_store.retriever import Retriever
from colbert_store.search import SearchParams
from colbert_store.settings import IndexSettings
from colbert_store.storage import Store
from colbert_store.transfer import copy_index

if TYPE_CHECKING:
    from colbert_store.encoder import ColBERTEncoder

__all__ = [
    "CacheInfo",
    "ColBERTEncoder",
    "ColbertStoreError",
    "FilterError",
    "Fusion",
    "Hit",
    "IncompatibleIndexError",
    "Index",
    "IndexChangedError",
    "IndexExistsError",
    "IndexHealth",
    "IndexNotFoundError",
    "IndexSettings",
    "InvalidInputError",
    "LexicalSearchUnavailableError",
    "MissingDependencyError",
    "NotTrainedError",
    "ResidualCodec",
    "Retriever",
    "SearchParams",
    "Store",
    "StoreUnavailableError",
    "WriteConflictError",
    "copy_index",
    "maxsim",
]


def __getattr__(name: str) -> Any:
    """Import ``ColBERTEncoder`` lazily, with an install hint when the ``encoder`` extra is missing."""
    if name != "ColBERTEncoder":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from colbert_store._optional import require

    require("transformers", "encoder")
    require("safetensors", "encoder")
    from colbert_store.encoder import ColBERTEncoder

    return ColBERTEncoder
