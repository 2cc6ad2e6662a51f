"""What the Qdrant store needs of a Qdrant engine, and that interface over qdrant-client.

The store keeps points in collections (a payload, a sparse vector and, in a compact collection, the
:data:`TOKEN_VECTOR` rows); every engine that speaks Qdrant's data model
(a server or qdrant-client's local mode through :class:`ClientEngine`, the in-process Qdrant Edge
engine through :class:`colbert_store.adapters.qdrant_edge.engine.EdgeEngine`) offers these few
operations, with the same payload layout and the same filter conditions.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from colbert_store.adapters.qdrant.client import (
    forget_local_table,
    is_local,
    local_lock,
    local_tables,
    local_writes,
    models,
    release_path_client,
)
from colbert_store.adapters.qdrant.filters import ClientConditions, Condition, ConditionBuilder
from colbert_store.adapters.qdrant.local_table import LocalTable

_LOCAL_TABLE_PAGE = 10_000


class WriteMode(enum.Enum):
    """How an upsert treats existing points."""

    UPSERT = "upsert"
    INSERT_ONLY = "insert_only"
    UPDATE_ONLY = "update_only"


SPARSE_VECTOR = "bm25"
"""The sparse vector every documents collection declares, with Qdrant's IDF modifier: each document's
BM25 term weights (:mod:`colbert_store.lexical`), the lexical leg of a hybrid search."""

TOKEN_VECTOR = "tokens"
"""The uint8 multivector of a compact collection: one row per token, the token's stored bytes (see
:mod:`colbert_store.adapters.qdrant.records`). Never searched, so built without an HNSW graph."""

Terms = tuple[np.ndarray, np.ndarray]
"""A sparse vector: ascending uint32 term ids and their float32 weights."""


@dataclass(frozen=True)
class Record:
    """A point as read back: its id (a UUID string), the payload fields asked for and, when asked for,
    its :data:`TOKEN_VECTOR` rows (uint8, empty for a point without them)."""

    id: str
    payload: dict[str, Any]
    tokens: np.ndarray | None = None


class PointsEngine(ABC):
    """Points in named collections. Writes are durable and visible when they return."""

    conditions: ConditionBuilder
    indexes_payload: bool = True
    """Whether integer payload indexes answer lookups (qdrant-client's local mode has none)."""

    def lock(self) -> AbstractContextManager[Any]:
        """Held around every call when the engine must not be called from two threads at once."""
        return nullcontext()

    @abstractmethod
    def collection_exists(self, collection: str) -> bool: ...

    @abstractmethod
    def drop_collection(self, collection: str) -> None: ...

    @abstractmethod
    def create_collection(self, collection: str, integer_indexes: Sequence[str], token_width: int | None = None) -> None:
        """Create a collection with integer lookup indexes on these payload fields, the
        :data:`SPARSE_VECTOR` sparse vector (IDF modifier) and, with ``token_width``, the
        :data:`TOKEN_VECTOR` multivector of rows that wide."""

    @abstractmethod
    def token_width(self, collection: str) -> int | None:
        """The width of the collection's :data:`TOKEN_VECTOR` rows; ``None`` if it has none."""

    @abstractmethod
    def upsert(
        self, collection: str, points: Sequence[tuple[str, dict[str, Any]]], *,
        terms: Sequence[Terms | None] | None = None, tokens: Sequence[np.ndarray] | None = None,
        condition: Condition | None = None, mode: WriteMode = WriteMode.UPSERT,
    ) -> None:
        """Write points (with ``terms``, each point's :data:`SPARSE_VECTOR`, ``None`` for none; with
        ``tokens``, its :data:`TOKEN_VECTOR` rows); with ``condition``, an existing point is overwritten
        only if it matches it."""

    @abstractmethod
    def has_sparse_vector(self, collection: str) -> bool:
        """Whether the collection declares :data:`SPARSE_VECTOR`."""

    @abstractmethod
    def sparse_search(self, collection: str, query: Terms, limit: int, condition: Condition | None) -> list[tuple[int, float]]:
        """``(rev, score)`` of the best ``limit`` points matching ``condition`` by :data:`SPARSE_VECTOR`
        dot product with ``query`` (IDF-weighted), best first."""

    @abstractmethod
    def retrieve(
        self, collection: str, ids: Sequence[str], fields: Sequence[str] | None, tokens: bool = False
    ) -> list[Record]:
        """The points with these ids that exist (``fields=None``: the whole payload; ``tokens``: with
        their :data:`TOKEN_VECTOR` rows)."""

    @abstractmethod
    def scroll(
        self, collection: str, condition: Condition | None, fields: Sequence[str], limit: int, offset: Any,
        tokens: bool = False,
    ) -> tuple[list[Record], Any]:
        """One page of the points matching ``condition``, in id order, and the offset of the next page (or None)."""

    @abstractmethod
    def delete(self, collection: str, ids: Sequence[str]) -> None: ...

    @abstractmethod
    def delete_where(self, collection: str, condition: Condition) -> None: ...

    @abstractmethod
    def count(self, collection: str) -> int: ...

    def written(self, collection: str) -> None:  # noqa: B027 - optional hook
        """Called after every write to ``collection`` (to drop what an engine caches about it)."""

    def data_version(self, collection: str) -> int | None:
        """A number that changes with every write to ``collection``, when the engine can know it (all its
        writers are in this process); ``None`` otherwise (the default)."""
        return None

    def local_table(self, collection: str) -> LocalTable:
        """The collection's candidate table, for an engine without payload indexes (call under :meth:`lock`)."""
        raise NotImplementedError(f"{type(self).__name__} answers lookups from its payload indexes")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine; the default does nothing."""


class ClientEngine(PointsEngine):
    """:class:`PointsEngine` over a ``QdrantClient``: a Qdrant server, or qdrant-client's local mode.

    Local mode is not thread-safe, so its calls hold the client's lock, and it has no payload indexes.
    """

    def __init__(
        self, client: Any, *, owns_client: bool, path: str | None, collection_options: dict[str, Any]
    ) -> None:
        self.client = client
        self.conditions = ClientConditions()
        self.indexes_payload = not is_local(client)
        self._owns_client = owns_client
        self._path = path
        self._collection_options = collection_options
        self._lock: AbstractContextManager[Any] = nullcontext() if self.indexes_payload else local_lock(client)
        self._closed = False
        self._sparse: set[str] = set()  # collections known to declare the sparse vector

    def lock(self) -> AbstractContextManager[Any]:
        return self._lock

    def collection_exists(self, collection: str) -> bool:
        return bool(self.client.collection_exists(collection))

    def create_collection(self, collection: str, integer_indexes: Sequence[str], token_width: int | None = None) -> None:
        m = models()
        try:
            sparse = {SPARSE_VECTOR: m.SparseVectorParams(modifier=m.Modifier.IDF)}
            vectors = {} if token_width is None else {TOKEN_VECTOR: m.VectorParams(
                size=token_width, distance=m.Distance.DOT, datatype=m.Datatype.UINT8, on_disk=True,
                multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
                hnsw_config=m.HnswConfigDiff(m=0),
            )}
            self.client.create_collection(
                collection, vectors_config=vectors, sparse_vectors_config=sparse,
                **{"on_disk_payload": True, **self._collection_options},
            )
        except Exception:  # another process created it first
            if not self.client.collection_exists(collection):
                raise
        if self.indexes_payload:  # local mode has no payload indexes (and warns about them)
            schema = m.IntegerIndexParams(type=m.IntegerIndexType.INTEGER, lookup=True, range=False)
            for field in integer_indexes:
                self.client.create_payload_index(collection, field, field_schema=schema, wait=True)

    def token_width(self, collection: str) -> int | None:
        vectors = self.client.get_collection(collection).config.params.vectors
        params = vectors.get(TOKEN_VECTOR) if isinstance(vectors, dict) else None
        return None if params is None else int(params.size)

    def drop_collection(self, collection: str) -> None:
        if self.client.collection_exists(collection):
            self.client.delete_collection(collection)
        forget_local_table(self.client, collection)

    def upsert(
        self, collection: str, points: Sequence[tuple[str, dict[str, Any]]], *,
        terms: Sequence[Terms | None] | None = None, tokens: Sequence[np.ndarray] | None = None,
        condition: Condition | None = None, mode: WriteMode = WriteMode.UPSERT,
    ) -> None:
        m = models()
        vectors = [_client_vector(vector) for vector in terms] if terms is not None else [{}] * len(points)
        if tokens is not None:
            vectors = [{**vector, **token_vector(rows)} for vector, rows in zip(vectors, tokens)]
        structs = [
            m.PointStruct(id=point_id, vector=vector, payload=payload) for (point_id, payload), vector in zip(points, vectors)
        ]
        update_filter = None if condition is None else _as_filter(condition)
        update_mode = None if mode is WriteMode.UPSERT else m.UpdateMode(mode.value)
        self.client.upsert(collection, structs, wait=True, update_filter=update_filter, update_mode=update_mode)

    def has_sparse_vector(self, collection: str) -> bool:
        if collection not in self._sparse:
            sparse = self.client.get_collection(collection).config.params.sparse_vectors or {}
            if SPARSE_VECTOR not in sparse:
                return False
            self._sparse.add(collection)
        return True

    def sparse_search(self, collection: str, query: Terms, limit: int, condition: Condition | None) -> list[tuple[int, float]]:
        m = models()
        found = self.client.query_points(
            collection, query=m.SparseVector(indices=query[0].tolist(), values=query[1].tolist()), using=SPARSE_VECTOR,
            query_filter=None if condition is None else _as_filter(condition), limit=limit, with_payload=["rev"],
            with_vectors=False,
        )
        return [((point.payload or {})["rev"], float(point.score)) for point in found.points]

    def retrieve(
        self, collection: str, ids: Sequence[str], fields: Sequence[str] | None, tokens: bool = False
    ) -> list[Record]:
        found = self.client.retrieve(
            collection, list(ids), with_payload=True if fields is None else list(fields),
            with_vectors=[TOKEN_VECTOR] if tokens else False,
        )
        return [record_of(point, tokens) for point in found]

    def scroll(
        self, collection: str, condition: Condition | None, fields: Sequence[str], limit: int, offset: Any,
        tokens: bool = False,
    ) -> tuple[list[Record], Any]:
        page, next_offset = self.client.scroll(
            collection, scroll_filter=None if condition is None else _as_filter(condition), limit=limit,
            offset=offset, with_payload=list(fields), with_vectors=[TOKEN_VECTOR] if tokens else False,
        )
        return [record_of(point, tokens) for point in page], next_offset

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        self.client.delete(collection, list(ids), wait=True)

    def delete_where(self, collection: str, condition: Condition) -> None:
        self.client.delete(collection, models().FilterSelector(filter=_as_filter(condition)), wait=True)

    def count(self, collection: str) -> int:
        return int(self.client.count(collection, exact=True).count)

    def written(self, collection: str) -> None:
        forget_local_table(self.client, collection)

    def data_version(self, collection: str) -> int | None:
        """Local mode: the writes this process made (a local folder is locked to one process); a server
        has writers elsewhere."""
        return None if self.indexes_payload else local_writes(self.client, collection)

    def local_table(self, collection: str) -> LocalTable:
        """Built by one scroll, shared by the stores of this client, dropped by any write to the collection."""
        tables = local_tables(self.client)
        table = tables.get(collection)
        if table is None:
            records, offset = [], None
            while True:
                page, offset = self.scroll(collection, None, ["rev", "centroids"], _LOCAL_TABLE_PAGE, offset)
                records += page
                if offset is None:
                    break
            table = tables[collection] = LocalTable(records)
        return table

    def close(self) -> None:
        """Close the client if the store opened it (a folder's shared client with its last store)."""
        if not self._owns_client or self._closed:
            return
        self._closed = True
        with self._lock:
            if self._path is None or release_path_client(self._path):
                self.client.close()


def token_vector(rows: np.ndarray) -> dict[str, Any]:
    """A point's :data:`TOKEN_VECTOR`, none for no rows (a multivector holds at least one)."""
    return {TOKEN_VECTOR: rows.tolist()} if len(rows) else {}


def record_of(point: Any, tokens: bool) -> Record:
    """A point an engine returned (payload, and vectors when ``tokens``) as a :class:`Record`."""
    return Record(str(point.id), dict(point.payload or {}), _token_rows(point.vector) if tokens else None)


def _token_rows(vectors: dict[str, Any] | None) -> np.ndarray:
    """A point's :data:`TOKEN_VECTOR` rows as read back (lists of floats), as uint8."""
    rows = (vectors or {}).get(TOKEN_VECTOR)
    return np.array(rows, dtype=np.float32).astype(np.uint8) if rows else np.empty((0, 0), np.uint8)


def _client_vector(terms: Terms | None) -> dict[str, Any]:
    if terms is None or not len(terms[0]):
        return {}
    return {SPARSE_VECTOR: models().SparseVector(indices=terms[0].tolist(), values=terms[1].tolist())}


def _as_filter(condition: Condition) -> Any:
    m = models()
    return condition if isinstance(condition, m.Filter) else m.Filter(must=[condition])
