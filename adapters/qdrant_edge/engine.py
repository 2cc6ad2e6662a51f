"""Qdrant Edge shards as a :class:`~colbert_store.adapters.qdrant.engine.PointsEngine`.

Each collection is one Edge shard, a folder under the store's root: its segments and payload indexes
are Qdrant's own. Every shard declares one sparse vector (``bm25``, with the IDF modifier): each
document's BM25 term weights, empty for a document without text. A compact shard also declares the
uint8 ``tokens`` multivector, and its segments are never rebuilt for indexing (nothing searches those
rows, and Qdrant's appendable segments keep payload indexes in less space than its indexed ones).

Shards are created without Qdrant's write-ahead log, which would hold a second copy of every payload
written: each update is flushed to the segments before it returns instead, so a write is durable once
acknowledged. Shards written with a log (by earlier versions) keep it. A shard is opened by one process
at a time (a lock file in its folder, held while it is open); within the process, calls to a shard are
serialised by a lock.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from colbert_store._optional import require
from colbert_store.adapters.qdrant.engine import (
    SPARSE_VECTOR,
    TOKEN_VECTOR,
    PointsEngine,
    Record,
    Terms,
    WriteMode,
    record_of,
    token_vector,
)
from colbert_store.adapters.qdrant.filters import Condition
from colbert_store.errors import ColbertStoreError

_CONFIG_FILE = "edge_config.json"
_LOCK_FILE = "colbert_store.lock"
_NEVER_INDEXED_KB = 1 << 40


@cache
def edge() -> ModuleType:
    """``qdrant_edge``, imported on first use (raises naming the ``qdrant-edge`` extra if missing)."""
    return require("qdrant_edge", "qdrant-edge")


class EdgeConditions:
    """:class:`~colbert_store.adapters.qdrant.filters.ConditionBuilder` for Qdrant Edge."""

    def __init__(self) -> None:
        self._e = edge()

    def match_value(self, key: str, value: bool | int | str) -> Condition:
        return self._e.FieldCondition(key=key, match=self._e.MatchValue(value))

    def match_any(self, key: str, values: list[Any]) -> Condition:
        return self._e.FieldCondition(key=key, match=self._e.MatchAny(values))

    def range(self, key: str, **bounds: float) -> Condition:
        return self._e.FieldCondition(key=key, range=self._e.RangeFloat(**bounds))

    def is_empty(self, key: str) -> Condition:
        return self._e.IsEmptyCondition(key)

    def filter(
        self, *, must: list[Condition] | None = None, should: list[Condition] | None = None,
        must_not: list[Condition] | None = None,
    ) -> Condition:
        return self._e.Filter(must=must, should=should, must_not=must_not)


class EdgeEngine(PointsEngine):
    """Shards under ``root``, one per collection, opened on first use and kept open until :meth:`close`."""

    def __init__(self, root: Path) -> None:
        self.conditions = EdgeConditions()
        self.indexes_payload = True
        self._root = root
        self._shards: dict[str, Any] = {}
        self._shard_locks: dict[str, FileLock] = {}
        self._writes: dict[str, int] = {}
        self._lock = threading.RLock()

    def lock(self) -> AbstractContextManager[Any]:
        return self._lock

    def collection_exists(self, collection: str) -> bool:
        return collection in self._shards or (self._root / collection / _CONFIG_FILE).is_file()

    def create_collection(self, collection: str, integer_indexes: Sequence[str], token_width: int | None = None) -> None:
        e = edge()
        with self._lock:
            if self.collection_exists(collection):
                return
            sparse = {SPARSE_VECTOR: e.EdgeSparseVectorParams(modifier=e.Modifier.Idf)}
            if token_width is None:
                config = e.EdgeConfig(sparse_vectors=sparse, wal_enabled=False)
            else:
                tokens = e.EdgeVectorParams(
                    size=token_width, distance=e.Distance.Dot, datatype=e.VectorStorageDatatype.Uint8,
                    multivector_config=e.MultiVectorConfig(comparator=e.MultiVectorComparator.MaxSim),
                    hnsw_config=e.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
                )
                config = e.EdgeConfig(
                    vectors={TOKEN_VECTOR: tokens}, sparse_vectors=sparse, wal_enabled=False,
                    optimizers=e.EdgeOptimizersConfig(indexing_threshold=_NEVER_INDEXED_KB),
                )
            path = self._root / collection
            path.mkdir(parents=True, exist_ok=True)
            shard = self._shards[collection] = self._locked(collection, lambda: e.EdgeShard.create(str(path), config))
            for field in integer_indexes:
                shard.update(e.UpdateOperation.create_field_index(field, e.IntegerIndexParams(lookup=True, range=False)))
            shard.flush()

    def token_width(self, collection: str) -> int | None:
        """Read from the shard's own configuration file."""
        config = json.loads((self._root / collection / _CONFIG_FILE).read_text())
        params = (config.get("vectors") or {}).get(TOKEN_VECTOR)
        return None if params is None else int(params["size"])

    def drop_collection(self, collection: str) -> None:
        with self._lock:
            shard = self._shards.pop(collection, None)
            if shard is not None:
                shard.close()
            shutil.rmtree(self._root / collection, ignore_errors=True)
            lock = self._shard_locks.pop(collection, None)
            if lock is not None:
                lock.release()

    def upsert(
        self, collection: str, points: Sequence[tuple[str, dict[str, Any]]], *,
        terms: Sequence[Terms | None] | None = None, tokens: Sequence[np.ndarray] | None = None,
        condition: Condition | None = None, mode: WriteMode = WriteMode.UPSERT,
    ) -> None:
        e = edge()
        update_mode = {WriteMode.UPSERT: None, WriteMode.INSERT_ONLY: e.UpdateMode.InsertOnly,
                       WriteMode.UPDATE_ONLY: e.UpdateMode.UpdateOnly}[mode]
        vectors = [_edge_vector(vector) for vector in terms] if terms is not None else [{}] * len(points)
        if tokens is not None:
            vectors = [{**vector, **token_vector(rows)} for vector, rows in zip(vectors, tokens)]
        structs = [e.Point(point_id, vector, payload) for (point_id, payload), vector in zip(points, vectors)]
        with self._lock:
            upsert = e.UpdateOperation.upsert_points(structs, condition=_as_filter(condition), update_mode=update_mode)
            self._update(collection, upsert)

    def has_sparse_vector(self, collection: str) -> bool:
        return True  # every Edge shard colbert-store creates declares it

    def sparse_search(self, collection: str, query: Terms, limit: int, condition: Condition | None) -> list[tuple[int, float]]:
        e = edge()
        nearest = e.Query.Nearest(e.SparseVector(query[0].tolist(), query[1].tolist()), using=SPARSE_VECTOR)
        request = e.QueryRequest(
            limit=limit, query=nearest, filter=_as_filter(condition), with_payload=["rev"], with_vector=False
        )
        with self._lock:
            found = self._shard(collection).query(request)
        return [(dict(point.payload or {})["rev"], float(point.score)) for point in found]

    def retrieve(
        self, collection: str, ids: Sequence[str], fields: Sequence[str] | None, tokens: bool = False
    ) -> list[Record]:
        if not ids:
            return []
        with self._lock:
            found = self._shard(collection).retrieve(
                list(ids), with_payload=True if fields is None else list(fields),
                with_vector=[TOKEN_VECTOR] if tokens else False,
            )
        return [record_of(point, tokens) for point in found]

    def scroll(
        self, collection: str, condition: Condition | None, fields: Sequence[str], limit: int, offset: Any,
        tokens: bool = False,
    ) -> tuple[list[Record], Any]:
        request = edge().ScrollRequest(
            offset=offset, limit=limit, filter=_as_filter(condition), with_payload=list(fields),
            with_vector=[TOKEN_VECTOR] if tokens else False,
        )
        with self._lock:
            page, next_offset = self._shard(collection).scroll(request)
        return [record_of(point, tokens) for point in page], next_offset

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            with self._lock:
                self._update(collection, edge().UpdateOperation.delete_points(list(ids)))

    def delete_where(self, collection: str, condition: Condition) -> None:
        with self._lock:
            self._update(collection, edge().UpdateOperation.delete_points_by_filter(_as_filter(condition)))

    def count(self, collection: str) -> int:
        with self._lock:
            return int(self._shard(collection).count(edge().CountRequest(exact=True)))

    def written(self, collection: str) -> None:
        with self._lock:
            self._writes[collection] = self._writes.get(collection, 0) + 1

    def data_version(self, collection: str) -> int:
        """The writes made through this engine: every writer of an Edge shard is in this process."""
        with self._lock:
            return self._writes.get(collection, 0)

    def open_shards(self) -> list[Any]:
        """The shards opened so far."""
        return list(self._shards.values())

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.close()
            self._shards.clear()
            for lock in self._shard_locks.values():
                lock.release()
            self._shard_locks.clear()

    def _update(self, collection: str, operation: Any) -> None:
        """Apply one update and flush it: a shard without a write-ahead log holds an update durably only
        once flushed."""
        shard = self._shard(collection)
        shard.update(operation)
        shard.flush()

    def _shard(self, collection: str) -> Any:
        """The collection's open shard (opened now if needed; another process holding it raises)."""
        shard = self._shards.get(collection)
        if shard is None:
            path = self._root / collection
            if not (path / _CONFIG_FILE).is_file():
                raise KeyError(f"no Qdrant Edge shard at {path}")
            shard = self._shards[collection] = self._locked(collection, lambda: edge().EdgeShard.load(str(path)))
        return shard

    def _locked(self, collection: str, open_shard: Callable[[], Any]) -> Any:
        """``open_shard()`` under the shard folder's lock file, which stays held until the shard is closed
        (a shard without a write-ahead log has no lock of Edge's own)."""
        path = self._root / collection
        lock = FileLock(path / _LOCK_FILE, thread_local=False, fallback_to_soft=False)
        try:
            lock.acquire(timeout=0)
        except Timeout as error:
            raise _open_error(path, error) from error
        try:
            shard = open_shard()
        except Exception as error:
            lock.release()
            raise _open_error(path, error) from error
        self._shard_locks[collection] = lock
        return shard


def _open_error(path: Path, error: Exception) -> ColbertStoreError:
    """A clear error for a shard that cannot be opened."""
    if isinstance(error, Timeout) or "WouldBlock" in str(error):
        return ColbertStoreError(
            f"the Qdrant Edge shard {path} is open in another process: a shard is opened by one process at a time "
            "(serve the index from one process, with threads)"
        )
    return ColbertStoreError(f"cannot open the Qdrant Edge shard {path}: {error}")


def _edge_vector(terms: Terms | None) -> dict[str, Any]:
    if terms is None or not len(terms[0]):
        return {}
    return {SPARSE_VECTOR: edge().SparseVector(terms[0].tolist(), terms[1].tolist())}


def _as_filter(condition: Condition | None) -> Any:
    if condition is None:
        return None
    e = edge()
    return condition if isinstance(condition, e.Filter) else e.Filter(must=[condition])
