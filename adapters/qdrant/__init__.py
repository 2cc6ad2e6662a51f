"""Qdrant backend: ``QdrantStore`` on a Qdrant server or qdrant-client's local mode.

One file per concern: :mod:`.store` (the :class:`~colbert_store.storage.Store`), :mod:`.records`
(documents as points), :mod:`.filters` (metadata filters as Qdrant conditions), :mod:`.client`
(client handling) and :mod:`.local_table` (candidate lookups for local mode).
"""

from colbert_store.adapters.qdrant.filters import translate_filter
from colbert_store.adapters.qdrant.store import QdrantStore

__all__ = ["QdrantStore", "translate_filter"]
