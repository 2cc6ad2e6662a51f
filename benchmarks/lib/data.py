"""What every system of the side-by-side benchmark is given and how its answers are scored."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.lib.metrics import ranking_quality
from benchmarks.lib.paths import DEFAULT_CACHE_DIR
from benchmarks.lib.scifact import ScifactVectors
from benchmarks.lib.timing import latency_summary

SCIFACT_INDEX = "scifact"
"""Name of the colbert-store index the systems build and ``benchmarks.head_to_head`` opens."""


def folder_bytes(path: Path) -> int:
    """Bytes the files under ``path`` hold on disk: each file's size, except that a sparse file (Qdrant
    preallocates its write-ahead log and storage pages as 32 MiB sparse files) counts only its allocated
    blocks."""
    stats = [f.stat() for f in path.rglob("*") if f.is_file()]
    return sum(min(stat.st_size, stat.st_blocks * 512) for stat in stats)


def evict_page_cache(path: Path) -> None:
    """Write back and drop from the OS page cache every file under ``path`` (``posix_fadvise`` DONTNEED; no
    root needed), so the next read of the folder comes from the disk, as in a freshly started machine."""
    os.sync()
    for file in (f for f in path.rglob("*") if f.is_file()):
        descriptor = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def load_page_cache(path: Path) -> None:
    """Read every file under ``path`` once, so that the OS page cache holds the folder, as on a machine that has
    served it for a while (the machines measured have several times its size in memory)."""
    for file in (f for f in path.rglob("*") if f.is_file()):
        with file.open("rb") as stream:
            while stream.read(1 << 23):
                pass


def open_store(kind: str, folder: Path) -> Any:
    """colbert-store's store of ``kind`` ("lancedb", "qdrant" local mode, "qdrant-edge" or "qdrant-edge-compact")
    in ``folder``."""
    if kind == "lancedb":
        from colbert_store.adapters.lancedb import LanceDBStore

        return LanceDBStore(folder)
    if kind in ("qdrant-edge", "qdrant-edge-compact"):
        from colbert_store.adapters.qdrant_edge import QdrantEdgeStore

        return QdrantEdgeStore(folder, compact=kind == "qdrant-edge-compact")
    from colbert_store.adapters.qdrant import QdrantStore

    return QdrantStore(folder)


@dataclass
class BenchData:
    """What every system gets: the vectors, the queries it evaluates and the exact rankings to score against.

    Attributes:
        vectors: The cached SciFact vectors.
        queries: The queries this system evaluates, the first ``len(queries)`` of the cache.
        exact: Exact top-k ids per query (filled in by the exact system itself).
        k: Results per query.
        workdir: An empty folder for the system's index.
        cache_dir: The cache folder the vectors came from (PLAID reads it itself).
    """

    vectors: ScifactVectors
    queries: list[np.ndarray]
    exact: list[list[str]]
    k: int
    workdir: Path
    cache_dir: Path = DEFAULT_CACHE_DIR

    @cached_property
    def docs(self) -> list[np.ndarray]:
        """Token vectors of every document, in ``vectors.doc_ids`` order."""
        return self.vectors.docs()

    @property
    def query_ids(self) -> list[str]:
        """Ids of :attr:`queries`."""
        return self.vectors.query_ids[: len(self.queries)]

    @property
    def n_tokens(self) -> int:
        """Document tokens in the corpus."""
        return int(self.vectors.doc_offsets[-1])

    def score(self, rankings: list[list[str]], seconds: list[float], batch_seconds: float | None = None) -> dict[str, Any]:
        """Recall and nDCG of the first ``len(rankings)`` queries, their latency, and (given the seconds the
        same queries took in batches) queries per second."""
        n = len(rankings)
        return {
            **ranking_quality(rankings, self.exact, self.query_ids, self.vectors.qrels, self.k),
            **latency_summary(seconds),
            "n_queries": n,
            "qps_batch": n / batch_seconds if batch_seconds else None,
        }
