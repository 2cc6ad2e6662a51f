"""The Qdrant Edge store: colbert-store on the Qdrant engine running in this process."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from colbert_store.adapters.qdrant.store import PointsStore, check_compact, check_prefix
from colbert_store.adapters.qdrant_edge.engine import EdgeEngine, edge


@dataclass
class _Shared:
    """The engine of one folder and how many stores of this process use it."""

    engine: EdgeEngine
    stores: int = 0


_REGISTRY_LOCK = threading.Lock()
_ENGINES: dict[str, _Shared] = {}  # by real path


class QdrantEdgeStore(PointsStore):
    """colbert-store on Qdrant Edge (PyPI ``qdrant-edge-py``, extra ``[qdrant-edge]``): Qdrant's own
    segments, write-ahead log, payload indexes and optimizer, in-process, one shard folder per collection.

    The payload layout, filters and catalogue are the Qdrant store's, so an index moves between Edge
    and a Qdrant server by copying its points (:func:`colbert_store.copy_index`).

    Stores opened on one folder in one process share its shards (Edge locks a shard to one process).

    Args:
        path: the folder holding the shards (created if missing).
        prefix: name prefix of the shards, as for :class:`~colbert_store.adapters.qdrant.QdrantStore`.
        compact: new indexes keep their tokens as uint8 rows (raw bytes) rather than base64 payload
            text, as for :class:`~colbert_store.adapters.qdrant.QdrantStore`: a fifth less disk, slower
            reads of uncached documents.

    Raises:
        MissingDependencyError: qdrant-edge-py is not installed.
        ColbertStoreError: the folder's shards are open in another process (one process per shard),
            or were written by a Qdrant Edge this one cannot read.
    """

    def __init__(self, path: str | os.PathLike[str], *, prefix: str = "colbert_store", compact: bool = False) -> None:
        check_prefix(prefix)
        check_compact(compact)
        edge()  # the install hint before anything touches the folder
        self._path = Path(path)
        self._path.mkdir(parents=True, exist_ok=True)
        self._real_path = os.path.realpath(self._path)
        with _REGISTRY_LOCK:
            shared = _ENGINES.setdefault(self._real_path, _Shared(EdgeEngine(self._path)))
            shared.stores += 1
        engine = shared.engine
        super().__init__(engine, prefix, compact)
        self._closed = False
        try:
            with engine.lock():  # fail now, not at the first search, when another process holds the folder
                self._catalogue.names()
        except Exception:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"QdrantEdgeStore({str(self._path)!r}, {self._options_repr()})"

    def close(self) -> None:
        """Close the folder's shards once the last store on it in this process closes."""
        with _REGISTRY_LOCK:
            if self._closed:
                return
            self._closed = True
            shared = _ENGINES[self._real_path]
            shared.stores -= 1
            if shared.stores:
                return
            del _ENGINES[self._real_path]
        self._engine.close()

    def optimize(self) -> None:
        """Run Edge's segment optimizers on every open shard, blocking until none plans more work."""
        with self._engine.lock():
            for shard in self._engine.open_shards():
                shard.optimize()
                shard.flush()
