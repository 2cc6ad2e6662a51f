"""Qdrant Edge backend: ``QdrantEdgeStore``, the Qdrant engine in-process (PyPI ``qdrant-edge-py``).

:mod:`.engine` adapts Edge shards to the engine interface of the Qdrant backend; :mod:`.store` is the
store, the Qdrant store's logic (catalogue, records, filters) on that engine.
"""

from colbert_store.adapters.qdrant_edge.store import QdrantEdgeStore

__all__ = ["QdrantEdgeStore"]
