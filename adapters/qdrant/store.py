"""The Qdrant store: one documents collection per index plus a catalogue collection, on any engine
that speaks Qdrant's data model (:class:`PointsStore`), and :class:`QdrantStore` on qdrant-client.

Every document is one point (see :mod:`colbert_store.adapters.qdrant.records`), its id derived from
the document id, so writing a document again overwrites its point atomically: a payload (and, in a
compact collection, its tokens as rows of a uint8 multivector), and one sparse vector, the BM25 term
weights of its text (:mod:`colbert_store.lexical`), which Qdrant's IDF modifier turns into BM25
scores for the lexical leg of a hybrid search. Candidates are one filtered scroll over an integer
payload index on ``centroids``; a fetch by revision, one over an index on ``rev``. qdrant-client's
local mode has no payload indexes and evaluates filters point by point in Python, so there centroid
lookups and fetches by revision are answered from a
:class:`~colbert_store.adapters.qdrant.local_table.LocalTable` (metadata filters still scan).

A conditional write (``upsert(..., replacing=...)``) is Qdrant's conditional upsert: update-only,
with a filter on the stored ``rev``.
"""

from __future__ import annotations

import itertools
import re
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

import numpy as np

from colbert_store.adapters.qdrant.catalogue import Catalogue
from colbert_store.adapters.qdrant.client import check_collection_options, client_class, open_client
from colbert_store.adapters.qdrant.engine import ClientEngine, PointsEngine, Record, WriteMode
from colbert_store.adapters.qdrant.filters import Translated, all_of, translate_filter
from colbert_store.adapters.qdrant.records import (
    STORED_FIELDS,
    compact_to_batch,
    compact_width,
    document_payloads,
    payloads_to_batch,
    point_id,
    request_chunks,
)
from colbert_store.errors import IndexExistsError, IndexNotFoundError, InvalidInputError, LexicalSearchUnavailableError
from colbert_store.filters import Filter
from colbert_store.lexical import query_vector
from colbert_store.storage import DocumentBatch, Store
from colbert_store.validation import check_index_name

_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*$")  # no "__": a prefix ends at the first one
_INDEXED_FIELDS = ("centroids", "rev")
_CANDIDATE_PAGE = 10_000
_FETCH_CHUNK = 2048
_DELETE_CHUNK = 1024

T = TypeVar("T")


class PointsStore(Store):
    """colbert-store on a Qdrant engine (:class:`~colbert_store.adapters.qdrant.engine.PointsEngine`).

    Collections are ``<prefix>_catalogue`` and ``<prefix>__<index>__<random>`` (one per index, named
    when it is created), so a catalogue is never mistaken for an index. With ``compact``, indexes this
    store creates keep their tokens in a uint8 multivector; every index is read in the layout it has.
    """

    def __init__(self, engine: PointsEngine, prefix: str, compact: bool = False) -> None:
        self._engine = engine
        self._prefix = prefix
        self._compact = compact
        self._catalogue = Catalogue(engine, f"{prefix}_catalogue")
        self._collections: dict[str, str] = {}  # index name -> its documents collection
        self._token_widths: dict[str, int | None] = {}  # documents collection -> its row width
        self._admin = threading.Lock()

    def close(self) -> None:
        self._engine.close()

    def _options_repr(self) -> str:
        """The constructor's keyword options, as a repr shows them."""
        return f"prefix={self._prefix!r}" + (", compact=True" if self._compact else "")

    # -- catalogue ----------------------------------------------------------------------------
    def list_indexes(self) -> list[str]:
        with self._engine.lock():
            return self._catalogue.names()

    def create_index(self, name: str, manifest: dict[str, Any]) -> None:
        check_index_name(name)
        docs = f"{self._prefix}__{name}__{uuid.uuid4().hex[:12]}"
        token_width = _row_width(manifest) if self._compact else None
        with self._admin, self._engine.lock():
            if name in self._catalogue.names():
                raise IndexExistsError(name)
            self._engine.create_collection(docs, _INDEXED_FIELDS, token_width)
            if not self._catalogue.insert(name, manifest, docs):
                self._engine.drop_collection(docs)
                raise IndexExistsError(name)

    def drop_index(self, name: str) -> None:
        with self._admin, self._engine.lock():
            docs = self._catalogue.remove(check_index_name(name))
            self._collections.pop(name, None)
            self._engine.drop_collection(docs)

    def read_manifest(self, name: str) -> dict[str, Any]:
        with self._engine.lock():
            entry = self._catalogue.entry(check_index_name(name))
        self._collections[name] = entry["docs"]
        manifest: dict[str, Any] = entry["manifest"]
        return manifest

    def replace_manifest(self, name: str, manifest: dict[str, Any], *, expected_version: int) -> bool:
        with self._engine.lock():
            return self._catalogue.replace(check_index_name(name), manifest, expected_version)

    def write_codec(self, name: str, codec_id: str, data: bytes) -> None:
        with self._engine.lock():
            self._catalogue.write_codec(name, codec_id, data)

    def read_codec(self, name: str, codec_id: str) -> bytes:
        with self._engine.lock():
            return self._catalogue.read_codec(name, codec_id)

    def delete_codecs(self, name: str, codec_ids: Collection[str]) -> None:
        with self._engine.lock():
            self._catalogue.delete_codecs(name, codec_ids)

    # -- documents ----------------------------------------------------------------------------
    def upsert(self, name: str, batch: DocumentBatch, *, replacing: np.ndarray | None = None) -> None:
        """Upsert one point per document, in requests of at most 256 points and about 8 MiB; with
        ``replacing``, update-only and only where the stored ``rev`` is one of those revisions."""
        if not len(batch):
            return
        ids, payloads, terms, tokens, sizes = document_payloads(batch, self._run(name, self._token_width))
        condition = None
        if replacing is not None:
            condition = self._engine.conditions.match_any("rev", np.asarray(replacing, dtype=np.int64).tolist())
        mode = WriteMode.UPSERT if replacing is None else WriteMode.UPDATE_ONLY
        points = list(zip(ids, payloads, terms, tokens or [None] * len(ids)))
        for chunk in request_chunks(points, sizes):
            write = partial(
                self._engine.upsert, points=[(point, payload) for point, payload, _, _ in chunk],
                terms=[vector for _, _, vector, _ in chunk],
                tokens=None if tokens is None else [rows for _, _, _, rows in chunk], condition=condition, mode=mode,
            )
            self._run(name, write, writing=True)

    def delete(self, name: str, ids: Sequence[str]) -> None:
        point_ids = [point_id(doc_id) for doc_id in ids]
        if not point_ids:
            self.count(name)  # raises IndexNotFoundError for a missing index, like a real delete
        for start in range(0, len(point_ids), _DELETE_CHUNK):
            chunk = point_ids[start : start + _DELETE_CHUNK]
            self._run(name, partial(self._engine.delete, ids=chunk), writing=True)

    def count(self, name: str) -> int:
        return self._run(name, self._engine.count)

    def data_version(self, name: str) -> int | None:
        return self._run(name, self._engine.data_version)

    def candidates(self, name: str, centroid_ids: np.ndarray | None, where: Filter | None) -> np.ndarray:
        """One scroll (all pages) with ``centroids`` matching any probe and the translated filter.

        Without payload indexes (local mode) the centroid test runs in numpy instead, on the
        collection's :class:`LocalTable`; a filter is still answered by one scroll, whose revisions are
        then intersected with the centroid hits.
        """
        build = self._engine.conditions
        probes = None if centroid_ids is None else np.unique(np.asarray(centroid_ids, dtype=np.int64))
        locally = probes is not None and not self._engine.indexes_payload
        conditions: list[Translated] = []
        if probes is not None and not len(probes):
            conditions.append(False)
        elif probes is not None and not locally:
            conditions.append(build.match_any("centroids", probes.tolist()))
        if where is not None:
            conditions.append(translate_filter(where, build))
        condition = all_of(conditions, build)
        if condition is False:
            self.count(name)  # still raises IndexNotFoundError for a missing index
            return np.empty(0, np.int64)
        query = None if condition is True else condition

        def answer(docs: str) -> np.ndarray:  # all pages under one lock: a consistent answer in local mode
            if not locally:
                return _revisions(self._scroll_all(docs, query, ["rev"]))
            assert probes is not None
            table = self._engine.local_table(docs)
            rows = table.holding_any(probes)
            if query is not None:
                rows = rows[np.isin(table.revisions[rows], _revisions(self._scroll_all(docs, query, ["rev"])))]
            return table.revisions[rows]

        return self._run(name, answer)

    def text_search(self, name: str, text: str, limit: int, where: Filter | None) -> tuple[np.ndarray, np.ndarray]:
        """BM25: the query's terms against each document's BM25 term weights (the ``bm25`` sparse vector),
        weighted by Qdrant's IDF modifier, with the translated filter in the same query."""
        build = self._engine.conditions
        query = query_vector(text)
        condition = all_of([translate_filter(where, build)], build) if where is not None else True

        def search(docs: str) -> list[tuple[int, float]]:
            if not self._engine.has_sparse_vector(docs):
                raise LexicalSearchUnavailableError(
                    name, "its collection has no bm25 sparse vector (written by an older colbert-store: "
                    "copy_index it into a new index to add one)"
                )
            found = []
            if len(query[0]) and condition is not False:
                found = self._engine.sparse_search(docs, query, limit, None if condition is True else condition)
            if not found and self._holds_no_text(docs):
                raise LexicalSearchUnavailableError(name, "its documents were stored without text")
            return found

        found = self._run(name, search)
        revisions = np.fromiter((rev for rev, _ in found), np.int64, len(found))
        return revisions, np.fromiter((score for _, score in found), np.float32, len(found))

    def fetch(self, name: str, revisions: np.ndarray) -> DocumentBatch:
        """Scroll by ``rev`` (integer payload index), 2048 revisions a query; without payload indexes,
        the revisions are looked up in the collection's :class:`LocalTable` and the points retrieved by id."""

        def read(docs: str) -> DocumentBatch:
            width = self._token_width(docs)
            records = self._records_with_revisions(docs, revisions, STORED_FIELDS, tokens=width is not None)
            return _documents(records, width)

        return self._run(name, read)

    def centroid_lists(self, name: str, revisions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read from the ``rev`` and ``centroids`` payload fields alone."""
        fields = ["rev", "centroids"]
        if revisions is None:
            records = self._run(name, lambda docs: self._scroll_all(docs, None, fields))
        else:
            records = self._run(name, partial(self._records_with_revisions, revisions=revisions, fields=fields))
        lists = [record.payload["centroids"] for record in records]
        offsets = np.zeros(len(lists) + 1, np.int64)
        np.cumsum([len(listed) for listed in lists], out=offsets[1:])
        centroids = np.fromiter(itertools.chain.from_iterable(lists), np.int64, int(offsets[-1]))
        return _revisions(records), offsets, centroids
    def scan(self, name: str, batch_size: int = 1024) -> Iterator[DocumentBatch]:
        offset = None

        def read(docs: str) -> tuple[DocumentBatch | None, Any]:
            width = self._token_width(docs)
            page, next_offset = self._engine.scroll(
                docs, None, STORED_FIELDS, batch_size, offset, tokens=width is not None
            )
            return (_documents(page, width) if page else None), next_offset

        while True:
            batch, offset = self._run(name, read)
            if batch is not None:
                yield batch
            if offset is None:
                return

    def size_bytes(self, name: str, fields: Sequence[str] = ("codes", "residuals")) -> int:
        """Bytes the given payload fields take as stored: the length of their base64 text (all documents).
        In a compact collection, the tokens' rows: token count times row width, whatever ``fields``."""

        def measure(docs: str) -> int:
            width = self._token_width(docs)
            if width is not None:
                return width * sum(record.payload["n_tokens"] for record in self._scroll_all(docs, None, ["n_tokens"]))
            records = self._scroll_all(docs, None, list(fields))
            return sum(len(record.payload.get(field) or "") for record in records for field in fields)

        return self._run(name, measure)

    # -- helpers ------------------------------------------------------------------------------
    def _token_width(self, docs: str) -> int | None:
        """The row width of a compact documents collection, ``None`` for one with tokens in the payload."""
        if docs not in self._token_widths:
            self._token_widths[docs] = self._engine.token_width(docs)
        return self._token_widths[docs]

    def _records_with_revisions(
        self, docs: str, revisions: np.ndarray, fields: list[str], tokens: bool = False
    ) -> list[Record]:
        wanted = np.unique(np.asarray(revisions, dtype=np.int64))
        if not self._engine.indexes_payload:
            found = self._engine.retrieve(docs, self._engine.local_table(docs).point_ids_of(wanted), fields, tokens)
            wanted_set = set(wanted.tolist())
            return [record for record in found if record.payload["rev"] in wanted_set]
        records: list[Record] = []
        for start in range(0, len(wanted), _FETCH_CHUNK):
            chunk = wanted[start : start + _FETCH_CHUNK].tolist()
            records += self._scroll_all(docs, self._engine.conditions.match_any("rev", chunk), fields, tokens)
        return records

    def _run(self, name: str, operation: Callable[[str], T], writing: bool = False) -> T:
        """``operation(documents collection)`` under the engine's lock (a write then tells the engine).

        The collection's name is read from the catalogue once; if the collection is gone (the index
        was dropped, perhaps created again, by another store), it is read again and the operation
        runs once more, or IndexNotFoundError is raised.
        """
        for attempt in range(2):
            with self._engine.lock():
                docs = self._collections.get(name)
                if docs is None:
                    docs = self._collections[name] = self._catalogue.entry(check_index_name(name))["docs"]
                try:
                    return operation(docs)
                except Exception as error:
                    if self._engine.collection_exists(docs):
                        raise
                    self._collections.pop(name, None)
                    if attempt:
                        raise IndexNotFoundError(name) from error
                finally:
                    if writing:
                        self._engine.written(docs)
        raise AssertionError("unreachable")

    def _holds_no_text(self, collection: str) -> bool:
        """Whether the collection holds documents but none with text."""
        with_text = self._engine.conditions.filter(must_not=[self._engine.conditions.is_empty("text")])
        page, _ = self._engine.scroll(collection, with_text, ["rev"], 1, None)
        return not page and bool(self._engine.count(collection))

    def _scroll_all(self, collection: str, condition: Any, fields: list[str], tokens: bool = False) -> list[Record]:
        records: list[Record] = []
        offset = None
        while True:
            page, offset = self._engine.scroll(collection, condition, fields, _CANDIDATE_PAGE, offset, tokens)
            records += page
            if offset is None:
                return records


class QdrantStore(PointsStore):
    """colbert-store on Qdrant through qdrant-client: a server, or qdrant-client's local mode.

    Args:
        client_or_location: a ``qdrant_client.QdrantClient`` (used as is, and not closed by
            :meth:`close`), ``":memory:"`` (local mode, in memory), an ``http(s)://`` server URL, or
            any other string or path: a local-mode folder. Stores opened on the same folder in one
            process share one client (qdrant-client locks a folder to a single client).
        prefix: name prefix of the collections this store creates: letters, digits, ``-`` and single ``_``.
        collection_options: more ``create_collection`` arguments for the documents collections of new
            indexes, e.g. ``{"shard_number": 6, "replication_factor": 2}`` on a cluster; a name
            ``create_collection`` does not take raises ``TypeError``.
        compact: new indexes keep each token's centroid id and packed residual as a row of a uint8
            multivector, which Qdrant stores as raw bytes, instead of base64 text in the payload: a
            fifth less disk, but a document not yet cached comes back as lists of numbers, about ten
            times slower to read than base64 text (benchmarks/README.md, "Compact Qdrant").
        **client_kwargs: passed to ``QdrantClient`` for a URL (e.g. ``api_key``, ``timeout``,
            ``prefer_grpc``); unknown ones raise ``TypeError``. Local mode takes only
            ``force_disable_check_same_thread``; a client takes none.

    Raises:
        MissingDependencyError: qdrant-client is not installed.
    """

    def __init__(
        self,
        client_or_location: Any,
        *,
        prefix: str = "colbert_store",
        collection_options: Mapping[str, Any] | None = None,
        compact: bool = False,
        **client_kwargs: Any,
    ) -> None:
        check_prefix(prefix)
        check_compact(compact)
        options = check_collection_options(collection_options)
        client, path = open_client(client_or_location, client_kwargs)
        engine = ClientEngine(
            client, owns_client=not isinstance(client_or_location, client_class()), path=path, collection_options=options
        )
        super().__init__(engine, prefix, compact)
        self._client = client

    def __repr__(self) -> str:
        options = getattr(self._client, "init_options", {}) or {}
        where = options.get("path") or options.get("location") or options.get("url") or options.get("host")
        return f"QdrantStore({where!r}, {self._options_repr()})"


def check_prefix(prefix: Any) -> None:
    """A collection prefix: 1-64 letters, digits, ``-`` and single ``_`` (a prefix ends at the first ``__``)."""
    if not isinstance(prefix, str) or len(prefix) > 64 or not _PREFIX_PATTERN.match(prefix):
        raise InvalidInputError(
            f"prefix must be 1-64 letters, digits, '-' or single '_' (not leading or trailing); got {prefix!r}"
        )


def _row_width(manifest: Mapping[str, Any]) -> int:
    """The row width of a new compact collection, from the manifest's ``settings.dim`` and ``settings.nbits``."""
    settings = manifest.get("settings")
    try:
        return compact_width(int(settings["dim"]) * int(settings["nbits"]) // 8)  # type: ignore[index]
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidInputError(
            f"a compact Qdrant store sizes its rows from the manifest's settings.dim and settings.nbits; got {settings!r}"
        ) from error


def _documents(records: list[Record], token_width: int | None) -> DocumentBatch:
    """The documents of these records (read with their rows from a compact collection of ``token_width``)."""
    payloads = [record.payload for record in records]
    if token_width is None:
        return payloads_to_batch(payloads)
    rows = [record.tokens for record in records]
    return compact_to_batch(payloads, [part for part in rows if part is not None], token_width)


def check_compact(compact: Any) -> None:
    """The ``compact`` flag of a Qdrant store: a bool."""
    if not isinstance(compact, bool):
        raise InvalidInputError(f"compact must be True or False; got {compact!r}")


def _revisions(records: list[Record]) -> np.ndarray:
    return np.fromiter((record.payload["rev"] for record in records), np.int64, len(records))
