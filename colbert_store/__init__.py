"""colbert-store: ColBERTv2/PLAID late-interaction retrieval with the index kept in your vector database."""

from colbert_store.codec import ResidualCodec
from colbert_store.errors import (
    ColbertStoreError,
    FilterError,
    IncompatibleIndexError,
    IndexExistsError,
    IndexNotFoundError,
    InvalidInputError,
    MissingDependencyError,
    NotTrainedError,
)
from colbert_store.index import Hit, Index, IndexSettings
from colbert_store.maxsim import maxsim
from colbert_store.search import SearchParams
from colbert_store.storage import Store

__all__ = [
    "ColbertStoreError",
    "FilterError",
    "Hit",
    "IncompatibleIndexError",
    "Index",
    "IndexExistsError",
    "IndexNotFoundError",
    "IndexSettings",
    "InvalidInputError",
    "MissingDependencyError",
    "NotTrainedError",
    "ResidualCodec",
    "SearchParams",
    "Store",
    "maxsim",
]
