"""The storage protocol: everything the engine needs of a backend, and the batches it exchanges.

A backend keeps, per index, a *header* (a JSON manifest plus the serialised codec) and one record
per document: its id, a revision number unique to that write, the per-token centroid ids, the
packed residuals, the distinct centroid ids (indexed, for candidate generation), the document's
quantization error, the text and the metadata. Every method takes plain numpy arrays and Python
values; a new backend is one new file implementing :class:`Store`.

A revision's top bits hold the codec *generation* that encoded the document (see
:func:`new_revisions`), so a reader holding an older codec notices a retrained index by the
revisions it gets back instead of decoding them with the wrong codec.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from colbert_store.filters import Filter

FORMAT_VERSION = 1
_GENERATION_SHIFT = 55
GENERATIONS = 256


def new_revisions(n: int, generation: int) -> np.ndarray:
    """``n`` random positive int64 revisions tagged with ``generation`` (modulo 256; thread-safe: drawn from the OS)."""
    random = np.frombuffer(os.urandom(8 * n), dtype=np.int64) & np.int64((1 << _GENERATION_SHIFT) - 1) | np.int64(1)
    return random | np.int64((generation % GENERATIONS) << _GENERATION_SHIFT)


def revision_generations(revisions: np.ndarray) -> np.ndarray:
    """The codec generation (modulo 256) each revision was written with.

    >>> revision_generations(new_revisions(3, 258)).tolist()
    [2, 2, 2]
    """
    return revisions >> _GENERATION_SHIFT


@dataclass(frozen=True)
class IndexHeader:
    """What an index is: its manifest (settings, format version, encoder) and its codec, if trained."""

    manifest: dict[str, Any]
    codec: bytes | None = None


@dataclass(frozen=True)
class DocumentBatch:
    """Encoded documents, back to back. Document ``i`` owns tokens ``token_offsets[i]:token_offsets[i+1]``."""

    ids: list[str]
    revisions: np.ndarray  # (n_docs,) int64, unique per write
    token_offsets: np.ndarray  # (n_docs + 1,) int64
    centroid_ids: np.ndarray  # (n_tokens,) uint16 or uint32
    residuals: np.ndarray  # (n_tokens, packed_bytes) uint8
    texts: list[str | None] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    sq_errors: np.ndarray | None = None  # (n_docs,) float64: sum over tokens of |original - decoded|^2

    def __len__(self) -> int:
        return len(self.ids)

    def distinct_centroids(self) -> tuple[np.ndarray, np.ndarray]:
        """Each document's distinct centroid ids, ascending and concatenated (in the dtype of
        ``centroid_ids``), and their offsets ``(n_docs + 1,)``: one vectorised pass.

        >>> batch = DocumentBatch(["a", "b"], np.array([1, 2]), np.array([0, 3, 4]),
        ...                       np.array([7, 2, 7, 5], dtype=np.uint16), np.zeros((4, 1), np.uint8))
        >>> batch.distinct_centroids()
        (array([0, 2, 3]), array([2, 7, 5], dtype=uint16))
        """
        lengths = np.diff(self.token_offsets)
        owner = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        keys = np.unique((owner << 32) | self.centroid_ids.astype(np.int64))  # sorted by document, then centroid
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys >> 32, minlength=len(lengths)), out=offsets[1:])
        return offsets, (keys & 0xFFFFFFFF).astype(self.centroid_ids.dtype)


class Store(ABC):
    """Abstract storage backend. Implementations must make each call atomic: a header write and each
    document of an upsert are applied entirely or not at all, and a reader never sees half of one."""

    # -- index catalogue ---------------------------------------------------------------------
    @abstractmethod
    def list_indexes(self) -> list[str]:
        """Names of the indexes this store holds."""

    @abstractmethod
    def create_index(self, name: str, header: IndexHeader) -> None:
        """Create an empty index; raise :class:`~colbert_store.errors.IndexExistsError` if it exists."""

    @abstractmethod
    def drop_index(self, name: str) -> None:
        """Remove an index and all its documents; raise IndexNotFoundError if absent."""

    @abstractmethod
    def read_header(self, name: str) -> IndexHeader:
        """The index's header; raise :class:`~colbert_store.errors.IndexNotFoundError` if absent."""

    @abstractmethod
    def write_header(self, name: str, header: IndexHeader) -> None:
        """Replace the header atomically."""

    def read_manifest(self, name: str) -> dict[str, Any]:
        """The header's manifest alone; override to skip reading the codec (checked before every add)."""
        return self.read_header(name).manifest

    @abstractmethod
    def swap_index(self, name: str, staging: str) -> None:
        """Give ``name`` the header and documents of the index ``staging`` in one atomic step, then
        drop ``name``'s old documents; ``staging`` no longer exists afterwards.

        Readers see the old index or the new one, never a mix. An operation already running on the
        old documents may fail once they are dropped; reading the header again finds the new ones.
        """

    # -- documents ---------------------------------------------------------------------------
    @abstractmethod
    def upsert(self, name: str, batch: DocumentBatch) -> None:
        """Insert documents, replacing any stored document with the same id."""

    @abstractmethod
    def delete(self, name: str, ids: Sequence[str]) -> None:
        """Delete documents by id; ids not present are ignored."""

    @abstractmethod
    def count(self, name: str) -> int:
        """Number of stored documents."""

    @abstractmethod
    def candidates(self, name: str, centroid_ids: np.ndarray | None, where: Filter | None) -> np.ndarray:
        """Revisions (int64) of the documents holding any of ``centroid_ids`` and matching ``where``,
        answered by the store's index.

        ``centroid_ids=None`` drops the centroid condition: every document matching ``where``.
        """

    @abstractmethod
    def fetch(self, name: str, revisions: np.ndarray) -> DocumentBatch:
        """The stored documents with these revisions (those no longer stored are left out), any order."""

    @abstractmethod
    def scan(self, name: str, batch_size: int = 1024) -> Iterator[DocumentBatch]:
        """Every stored document, in batches of about ``batch_size``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default does nothing."""
