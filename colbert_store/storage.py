"""The storage protocol: everything the engine needs of a backend, and the batches it exchanges.

A backend keeps, per index, a *manifest* (a JSON object with an integer ``version`` that every
commit increments), the codecs the manifest names (immutable blobs, written once under a random id)
and one record per document: its id, a revision number unique to that write, the per-token centroid
ids, the packed residuals, the distinct centroid ids (indexed, for candidate generation), the
document's quantization error, the text and the metadata. Every method takes plain numpy arrays and
Python values; a new backend implements :class:`Store`.

Concurrency rests on two primitives every store offers natively: a compare-and-set of the manifest
(:meth:`Store.replace_manifest`), and a conditional document write that applies only where the stored
document still has an expected revision (``upsert(..., replacing=...)``). Every document write is
atomic per document.

A revision's top bits hold the codec *generation* that encoded the document (see
:func:`new_revisions`), so a search knows which codec decodes each candidate.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from colbert_store.filters import Filter

FORMAT_VERSION = 2
_GENERATION_SHIFT = 55
GENERATIONS = 256


def new_revisions(n: int, generation: int) -> np.ndarray:
    """``n`` random positive int64 revisions tagged with ``generation`` (modulo 256).

    The low 55 bits come from the OS's random source (thread- and process-safe). Revisions identify
    one write of one document for caches and fetches, so two stored documents must never share one:
    the writer asks the store whether a freshly drawn revision is already stored and draws it again
    if so (:func:`colbert_store.writing.write_batch`). What that check cannot see is another writer
    drawing the same value in the same instant; for two batches of ``a`` and ``b`` documents written
    concurrently that has probability at most ``a * b / 2**55`` (below 2e-12 for two batches of 256).
    """
    random = np.frombuffer(os.urandom(8 * n), dtype=np.int64) & np.int64((1 << _GENERATION_SHIFT) - 1) | np.int64(1)
    return random | np.int64((generation % GENERATIONS) << _GENERATION_SHIFT)


def revision_generations(revisions: np.ndarray) -> np.ndarray:
    """The codec generation (modulo 256) each revision was written with.

    >>> revision_generations(new_revisions(3, 258)).tolist()
    [2, 2, 2]
    """
    return revisions >> _GENERATION_SHIFT


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


def concatenated_batches(batches: Sequence[DocumentBatch]) -> DocumentBatch:
    """The documents of ``batches``, in order, as one batch (of the first non-empty batch's array types)."""
    batches = [batch for batch in batches if len(batch)] or list(batches[:1])
    first = batches[0]
    token_counts = [np.diff(batch.token_offsets) for batch in batches]
    return DocumentBatch(
        ids=[doc_id for batch in batches for doc_id in batch.ids],
        revisions=np.concatenate([batch.revisions for batch in batches]),
        token_offsets=np.concatenate([[0], np.cumsum(np.concatenate(token_counts))]).astype(np.int64),
        centroid_ids=np.concatenate([batch.centroid_ids for batch in batches]).astype(first.centroid_ids.dtype),
        residuals=np.concatenate([batch.residuals for batch in batches]),
        texts=[text for batch in batches for text in (batch.texts or [None] * len(batch))],
        metadata=[meta for batch in batches for meta in (batch.metadata or [{}] * len(batch))],
    )


@dataclass(frozen=True)
class PostingHolders:
    """A store's snapshot of per-centroid posting lists, as of one :meth:`Store.data_version`: how many
    documents it names (by position, ``0`` to ``documents - 1``) and per codec generation (modulo 256)
    how many hold each centroid (int64, indexed by centroid id; ids past the end hold none). A search
    reads the lists themselves (:meth:`Store.postings`) only while ``version`` is still the store's."""

    version: int
    documents: int
    holders: dict[int, np.ndarray]


class Store(ABC):
    """Abstract storage backend. Every call is atomic per record: a manifest commit, a codec and each
    document of an upsert are applied entirely or not at all, and a reader never sees half of one.
    A store retries its engine's retryable conflicts itself and raises
    :class:`~colbert_store.errors.WriteConflictError` (nothing written) only when they persist."""

    # -- index catalogue ---------------------------------------------------------------------
    @abstractmethod
    def list_indexes(self) -> list[str]:
        """Names of the indexes this store holds."""

    @abstractmethod
    def create_index(self, name: str, manifest: dict[str, Any]) -> None:
        """Create an empty index with this manifest (its ``version`` is kept); raise
        :class:`~colbert_store.errors.IndexExistsError` if it exists, also when another process
        creates it at the same moment."""

    @abstractmethod
    def drop_index(self, name: str) -> None:
        """Remove an index, its codecs and all its documents; raise IndexNotFoundError if absent."""

    @abstractmethod
    def read_manifest(self, name: str) -> dict[str, Any]:
        """The index's manifest; raise :class:`~colbert_store.errors.IndexNotFoundError` if absent."""

    @abstractmethod
    def replace_manifest(self, name: str, manifest: dict[str, Any], *, expected_version: int) -> bool:
        """Replace the manifest atomically if the stored one still has ``version == expected_version``
        (compare-and-set); return whether it was replaced. ``manifest["version"]`` must be larger."""

    @abstractmethod
    def write_codec(self, name: str, codec_id: str, data: bytes) -> None:
        """Store a codec under a fresh random id (written once, never changed; readers only look up
        ids that a committed manifest names, so a partly written codec is never read)."""

    @abstractmethod
    def read_codec(self, name: str, codec_id: str) -> bytes:
        """A codec written by :meth:`write_codec`; raise KeyError if there is none with that id."""

    @abstractmethod
    def delete_codecs(self, name: str, codec_ids: Collection[str]) -> None:
        """Delete these codecs of the index (ids it does not hold are ignored)."""

    # -- documents ---------------------------------------------------------------------------
    @abstractmethod
    def upsert(self, name: str, batch: DocumentBatch, *, replacing: np.ndarray | None = None) -> None:
        """Insert documents, replacing any stored document with the same id.

        With ``replacing`` (revisions), the write is conditional: a document is written only where a
        stored document with its id holds one of these revisions, and never inserted (a re-encoding
        that must not undo a concurrent replace or delete).
        """

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
    def text_search(self, name: str, text: str, limit: int, where: Filter | None) -> tuple[np.ndarray, np.ndarray]:
        """The lexical leg of a hybrid search, answered by the store's own full-text engine (BM25): revisions
        (int64) and scores (float32) of at most ``limit`` documents matching ``where``, best first.

        Raises:
            LexicalSearchUnavailableError: the index cannot serve it (its documents hold no text, or the
                store has no full-text index for them).
        """

    @abstractmethod
    def fetch(self, name: str, revisions: np.ndarray) -> DocumentBatch:
        """The stored documents with these revisions (those no longer stored are left out), any order."""

    @abstractmethod
    def scan(self, name: str, batch_size: int = 1024) -> Iterator[DocumentBatch]:
        """Every stored document, in batches of about ``batch_size``."""

    def centroid_lists(self, name: str, revisions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The distinct centroid ids of the stored documents with these revisions (``None``: of every
        stored document), as ``(revisions, offsets, centroids)``: document ``i``'s ids, ascending, are
        ``centroids[offsets[i]:offsets[i + 1]]``; any order, those no longer stored left out.

        The default reads the documents whole; a store that keeps the lists apart (for its candidate
        index) reads only those.
        """
        batches = self.scan(name) if revisions is None else iter([self.fetch(name, revisions)])
        parts = [(batch.revisions, *batch.distinct_centroids()) for batch in batches]
        return concatenated_lists(parts)

    def candidate_lists(
        self, name: str, centroid_ids: np.ndarray | None, where: Filter | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`candidates` with each one's distinct centroid ids, as :meth:`centroid_lists` gives them.

        The default asks for the candidates, then their lists; a store that can return both in one
        query does.
        """
        return self.centroid_lists(name, self.candidates(name, centroid_ids, where))

    def data_version(self, name: str) -> int | None:
        """A number that changes whenever the index's documents change, if the store can tell cheaply
        (a search then answers candidates from its cache while the number stays the same); ``None``
        (the default) when it cannot."""
        return None

    def posting_holders(self, name: str) -> PostingHolders | None:
        """The snapshot of posting lists the store keeps for the index (built by its own maintenance), if
        any: the data version it was built at and its holder counts. The default keeps none."""
        return None

    def postings(
        self, name: str, snapshot: PostingHolders, centroid_ids: Mapping[int, np.ndarray]
    ) -> dict[int, tuple[np.ndarray, np.ndarray]] | None:
        """From ``snapshot``, per codec generation, the documents holding each of its ``centroid_ids``
        (ascending) as ``(offsets, positions)``: the positions of centroid ``centroid_ids[g][i]``'s holders
        are ``positions[offsets[i]:offsets[i + 1]]``; ``None`` where the store holds another snapshot now."""
        raise NotImplementedError(f"{type(self).__name__} keeps no posting lists")

    def fetch_posted(self, name: str, positions: np.ndarray) -> DocumentBatch:
        """The stored documents at these positions of the latest posting snapshot, any order (read after the
        store's version moved on, they may be other stored documents, never a deleted or replaced one)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no posting lists")

    def settle(self, name: str) -> None:  # noqa: B027 - optional hook
        """Called once a call's writes are all done (an add of many batches, a retrain's pass): where a
        store brings its own indexes up to date once rather than after every batch. The default does
        nothing."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default does nothing."""


def concatenated_lists(
    parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Several ``(revisions, offsets, centroids)`` of :meth:`Store.centroid_lists` as one."""
    if not parts:
        return np.empty(0, np.int64), np.zeros(1, np.int64), np.empty(0, np.uint16)
    starts = np.cumsum([0] + [len(centroids) for _, _, centroids in parts[:-1]])
    offsets = [offsets[:-1] + start for (_, offsets, _), start in zip(parts, starts)]
    return (
        np.concatenate([revisions for revisions, _, _ in parts]),
        np.concatenate([*offsets, [starts[-1] + len(parts[-1][2])]]).astype(np.int64),
        np.concatenate([centroids for _, _, centroids in parts]),
    )
