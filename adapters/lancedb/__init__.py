"""LanceDB backend: ``LanceDBStore`` in a local folder or on object storage.

One file per concern: :mod:`.store` (the :class:`~colbert_store.storage.Store`), :mod:`.records`
(documents as Arrow rows), :mod:`.filters` (metadata filters as SQL), :mod:`.connection`
(connections, and the async reader of candidate queries) and :mod:`.row_ids` (fetches by row id).
"""

from colbert_store.adapters.lancedb.store import LanceDBStore

__all__ = ["LanceDBStore"]
