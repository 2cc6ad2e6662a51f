"""Qdrant backend: one collection per index plus a catalogue collection for headers.

Works with a Qdrant server (``QdrantStore("http://host:6333", api_key=...)``), an existing
``QdrantClient``, or qdrant-client's local mode (``":memory:"`` or a folder). Collections hold no
vectors at all (``vectors_config={}``, points carry ``vector={}``): everything is payload.

Documents collection ``<prefix>__<name>`` (a retrained index keeps the collection its retraining
built, named by its header's ``docs``), one point per document, point id = uuid5 of the id:

==========  ===========================================================================
payload     role
==========  ===========================================================================
doc_id      the caller's document id
rev         int64, unique per write (integer payload index, lookups only)
centroids   the document's distinct centroid ids (integer payload index = candidates)
n_tokens    token count
sq_error    quantization error: sum over tokens of |vector - decoded|^2
codes       per-token centroid ids, little-endian uint16/uint32, base64
residuals   per-token packed residuals, base64
text        optional text
meta        the metadata dict, as given (JSON-normalised)
filter      what metadata filters read: ``b``/``n``/``s`` hold the top-level bool, number and
            string values by kind, ``o`` an order key for each string (see below); field names
            are hex-encoded (``k<hex of utf-8>``) so any key is a valid Qdrant path
==========  ===========================================================================

Why a separate ``filter`` object instead of filtering on ``meta.<key>``: Qdrant matches any
element of an array (``[2020]`` would equal ``2020``), an integer match never matches a float
payload (``3`` vs ``3.0``), there is no "is a string" condition (needed for ``$ne``/``$nin``, which
are false on a missing field or a value of another kind), and keys with ``.``, ``[``, ``"`` or
``\\`` cannot be written as paths. In ``filter`` only top-level scalars are kept, numbers that are
whole are stored as integers, and each kind has its own sub-object, so every operator of
:mod:`colbert_store.filters` translates exactly (``matches`` semantics).

String ordering (``$gt``/``$gte``/``$lt``/``$lte`` on strings) has no native Qdrant condition; it
is answered from order keys: the UTF-8 bytes, each plus one, in base 257, six to a chunk
(``filter.o.k<hex>_<i>`` integers below 2**53, exact in float64 ranges). Lexicographic order of
the chunks is Python's string order, so a comparison becomes a disjunction of "equal chunks up to
i, then greater at i". Only the first 33 chunks are stored, so ordering is exact for filter values
up to 192 UTF-8 bytes; a longer one raises :class:`~colbert_store.errors.FilterError`.

Catalogue ``<prefix>__catalogue``: one point per index (id = uuid5 of the name) with ``name``,
``manifest`` (JSON), ``codec`` (base64, or ``None``) and ``docs`` (its documents collection).
A codec can outgrow a server's default 32 MiB request limit (65,536 float32 centroids of 128 dims
are 32 MiB before base64), so one over 4 MiB is written as immutable parts first, under a fresh
version, and the header point then names that version: the one-point upsert of the header stays
the atomic commit, a reader that finds the parts of its version gone (a concurrent rewrite) reads
again, and stale parts are deleted after each commit.

Payload indexes (``centroids``, ``rev``) are created in server mode only; qdrant-client's local
mode has no payload indexes and evaluates filters point by point in Python. So in local mode the
store keeps, per collection, a numpy table of every document's point id, revision and distinct
centroids (built by one scroll, dropped by any write through a store on the same client) and
answers centroid lookups and fetches by revision from it; metadata filters still scan every point.
Local mode is not thread-safe, so this store serialises its calls to a local client with a lock;
server clients are called concurrently. Orderings on integers beyond +-2**53 compare as float64,
as Qdrant ranges do.
"""

from __future__ import annotations

import atexit
import base64
import inspect
import itertools
import json
import os
import re
import threading
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np

from colbert_store._optional import require
from colbert_store.errors import (
    ColbertStoreError,
    FilterError,
    IndexExistsError,
    IndexNotFoundError,
    InvalidInputError,
)
from colbert_store.filters import And, Comparison, Filter, Membership, Not, Or
from colbert_store.storage import DocumentBatch, IndexHeader, Store

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*$")  # no "__": prefix ends at the first one
_CATALOGUE = "catalogue"
_DOC_NAMESPACE = uuid.UUID("6f1d8f2e-7c3b-5a4e-9d21-3c0b7e4a5f10")
_HEADER_NAMESPACE = uuid.UUID("0b5e3a8c-2f6d-5e71-8a94-d1c2e3f4a5b6")
_LOCAL_KWARGS = frozenset({"force_disable_check_same_thread"})

_UPSERT_POINTS = 256
_REQUEST_BYTES = 8 << 20  # well under the server's default 32 MiB request limit
_CODEC_CHUNK_BYTES = 4 << 20
_HEADER_READ_ATTEMPTS = 8
_CANDIDATE_PAGE = 10_000
_FETCH_CHUNK = 2048
_DELETE_CHUNK = 1024
_STORED_FIELDS = ["doc_id", "rev", "n_tokens", "sq_error", "codes", "residuals", "text", "meta"]

_ORDER_CHUNK_BYTES = 6  # 257**6 < 2**53: a chunk is exact in a float64 range
_ORDER_CHUNKS = 32  # filter values up to 192 bytes; one more chunk is stored to tell longer strings
_ORDER_WEIGHTS = 257 ** np.arange(_ORDER_CHUNK_BYTES - 1, -1, -1, dtype=np.int64)
_INT64 = (-(2**63), 2**63)

Condition = Any  # a qdrant_client.models condition; kept loose so the module imports without it
Translated = Any  # a Condition, or True / False for a clause that holds for every / no document


@cache
def _models() -> ModuleType:
    """``qdrant_client.models``, imported on first use."""
    return require("qdrant_client.models", "qdrant")


class QdrantStore(Store):
    """colbert-store on Qdrant.

    Args:
        client_or_location: a ``qdrant_client.QdrantClient`` (used as is, and not closed by
            :meth:`close`), ``":memory:"`` (local mode, in memory), an ``http(s)://`` server URL, or
            any other string or path: a local-mode folder. Stores opened on the same folder in one
            process share one client (qdrant-client locks a folder to a single client).
        prefix: name prefix of the collections this store creates (``<prefix>__<index>`` and
            ``<prefix>__catalogue``): letters, digits, ``-`` and single ``_``.
        collection_options: more ``create_collection`` arguments for the documents collections of new
            (and retrained) indexes, e.g. ``{"shard_number": 6, "replication_factor": 2}`` on a
            cluster; a name ``create_collection`` does not take raises ``TypeError``.
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
        **client_kwargs: Any,
    ) -> None:
        if not isinstance(prefix, str) or len(prefix) > 64 or not _PREFIX_PATTERN.match(prefix):
            raise InvalidInputError(
                f"prefix must be 1-64 letters, digits, '-' or single '_' (not leading or trailing); got {prefix!r}"
            )
        self._prefix = prefix
        self._collection_options = _check_collection_options(collection_options)
        self._client, self._path = _open_client(client_or_location, client_kwargs)
        self._owns_client = not isinstance(client_or_location, _client_class())
        options = getattr(self._client, "init_options", {}) or {}
        self._local = options.get("location") == ":memory:" or options.get("path") is not None
        self._io: AbstractContextManager[Any] = _local_lock(self._client) if self._local else nullcontext()
        self._admin = threading.RLock()
        self._collections: dict[str, str] = {}  # index name -> documents collection, as last read
        self._closed = False
        # local mode checks MatchAny element by element in Python: answer centroid lookups (and fetches
        # by revision) from a numpy table of the collection instead (see _LocalTable)
        self._scan_centroids_locally = self._local

    def __repr__(self) -> str:
        options = getattr(self._client, "init_options", {}) or {}
        where = options.get("path") or options.get("location") or options.get("url") or options.get("host")
        return f"QdrantStore({where!r}, prefix={self._prefix!r})"

    def close(self) -> None:
        """Close the client if this store opened it (a folder's shared client with its last store)."""
        if not self._owns_client or self._closed:
            return
        self._closed = True
        with self._io:
            if self._path is None or _release_path_client(self._path):
                self._client.close()

    # -- catalogue ----------------------------------------------------------------------------
    def list_indexes(self) -> list[str]:
        catalogue = self._catalogue()
        with self._io:
            if not self._client.collection_exists(catalogue):
                return []
            query = _models().Filter(must=[_match("kind", "index")])
            records = self._scroll_all(catalogue, query, ["name"], page=1024)
        return sorted(record.payload["name"] for record in records)

    def create_index(self, name: str, header: IndexHeader) -> None:
        _check_name(name)
        m = _models()
        with self._admin, self._io:
            catalogue = self._catalogue()
            if not self._client.collection_exists(catalogue):
                try:
                    self._client.create_collection(catalogue, vectors_config={}, on_disk_payload=True)
                except Exception:  # another process created it first
                    if not self._client.collection_exists(catalogue):
                        raise
            if self._header_payload(name) is not None:
                raise IndexExistsError(name)
            docs = f"{self._prefix}__{name}"
            if self._client.collection_exists(docs):  # left over by an interrupted drop_index
                self._client.delete_collection(docs)
            _forget_local_table(self._client, docs)
            self._client.create_collection(docs, vectors_config={}, **{"on_disk_payload": True, **self._collection_options})
            if not self._local:  # local mode has no payload indexes (and warns about them)
                for field in ("centroids", "rev"):
                    schema = m.IntegerIndexParams(type=m.IntegerIndexType.INTEGER, lookup=True, range=False)
                    self._client.create_payload_index(docs, field, field_schema=schema, wait=True)
            self._put_header(name, header, docs)

    def drop_index(self, name: str) -> None:
        _check_name(name)
        m = _models()
        with self._admin, self._io:
            payload = self._header_payload(name)
            if payload is None:
                raise IndexNotFoundError(name)
            catalogue = self._catalogue()
            self._client.delete(catalogue, [_header_id(name)], wait=True)  # the index is gone from here on
            parts = m.Filter(must=[_match("kind", "codec_part"), _match("name", name)])
            self._client.delete(catalogue, m.FilterSelector(filter=parts), wait=True)
            self._drop_collection(payload["docs"])
            self._collections.pop(name, None)

    def read_header(self, name: str) -> IndexHeader:
        _check_name(name)
        for _ in range(_HEADER_READ_ATTEMPTS):
            with self._io:
                payload = self._header_payload(name)
                if payload is None:
                    raise IndexNotFoundError(name)
                complete, codec = self._read_codec(name, payload)
            if complete:
                self._collections[name] = payload["docs"]
                return IndexHeader(manifest=json.loads(payload["manifest"]), codec=codec)
        raise ColbertStoreError(f"the header of index {name!r} kept changing while being read; try again")

    def read_manifest(self, name: str) -> dict[str, Any]:
        _check_name(name)
        with self._io:
            catalogue = self._catalogue()
            found = self._client.collection_exists(catalogue) and self._client.retrieve(
                catalogue, [_header_id(name)], with_payload=["manifest"], with_vectors=False
            )
        if not found:
            raise IndexNotFoundError(name)
        return json.loads(found[0].payload["manifest"])

    def write_header(self, name: str, header: IndexHeader) -> None:
        _check_name(name)
        with self._admin, self._io:
            payload = self._header_payload(name)
            if payload is None:
                raise IndexNotFoundError(name)
            self._put_header(name, header, payload["docs"])

    def swap_index(self, name: str, staging: str) -> None:
        """Delete the staging header, then point ``name``'s header (one point upsert: the atomic
        switch) at the staging collection, then drop the old collection. Killed in between, the
        staging collection is left unreferenced and ``name`` is unchanged."""
        _check_name(name)
        m = _models()
        new = self.read_header(staging)
        with self._admin, self._io:
            old, staged = self._header_payload(name), self._header_payload(staging)
            if old is None or staged is None:
                raise IndexNotFoundError(staging if staged is None else name)
            catalogue = self._catalogue()
            self._client.delete(catalogue, [_header_id(staging)], wait=True)
            parts = m.Filter(must=[_match("kind", "codec_part"), _match("name", staging)])
            self._client.delete(catalogue, m.FilterSelector(filter=parts), wait=True)
            self._put_header(name, new, staged["docs"])
            self._collections[name] = staged["docs"]
            self._collections.pop(staging, None)
            self._drop_collection(old["docs"])

    # -- documents ----------------------------------------------------------------------------
    def upsert(self, name: str, batch: DocumentBatch) -> None:
        """Upsert one point per document (same id => same point, overwritten atomically), in requests
        of at most 256 points and about 8 MiB."""
        _check_name(name)
        if not len(batch):
            return
        points, sizes = _document_points(batch)
        for chunk in _request_chunks(points, sizes):
            with self._writing(name) as docs:
                self._client.upsert(docs, chunk, wait=True)

    def delete(self, name: str, ids: Sequence[str]) -> None:
        _check_name(name)
        point_ids = [point_id for point_id in map(_point_id_or_none, ids) if point_id is not None]
        if not point_ids:
            self.count(name)  # raises IndexNotFoundError for a missing index, like a real delete
        for start in range(0, len(point_ids), _DELETE_CHUNK):
            with self._writing(name) as docs:
                self._client.delete(docs, point_ids[start : start + _DELETE_CHUNK], wait=True)

    def count(self, name: str) -> int:
        _check_name(name)
        with self._documents(name) as docs:
            return int(self._client.count(docs, exact=True).count)

    def candidates(self, name: str, centroid_ids: np.ndarray | None, where: Filter | None) -> np.ndarray:
        """One scroll (all pages) with ``centroids`` MatchAny and the translated filter.

        In local mode the centroid test runs in numpy instead, on a table of every document's distinct
        centroids built by one scroll and kept until the next write to the collection (see
        :class:`_LocalTable`); a filter is still answered by one scroll, whose revisions are then
        intersected with the centroid hits. The local client checks MatchAny element by element in
        Python and deep-copies every payload it returns: scrolling SciFact's 5,183 documents with
        their centroid lists took ~0.4 s a query, the table answers in about a millisecond.
        """
        _check_name(name)
        m = _models()
        probes = None if centroid_ids is None else np.unique(np.asarray(centroid_ids, dtype=np.int64))
        conditions: list[Translated] = []
        if probes is not None and not len(probes):
            conditions.append(False)
        elif probes is not None and not self._scan_centroids_locally:
            conditions.append(m.FieldCondition(key="centroids", match=m.MatchAny(any=probes.tolist())))
        if where is not None:
            conditions.append(translate_filter(where))
        condition = _all_of(conditions)
        if condition is False:
            self.count(name)  # still raises IndexNotFoundError for a missing index
            return np.empty(0, np.int64)
        query = None if condition is True else _as_filter(condition)
        if probes is not None and self._scan_centroids_locally:
            with self._documents(name) as docs:  # table and filter under one lock: a consistent answer
                table = self._local_table(docs)
                rows = table.holding_any(probes)
                if query is not None:
                    passing = self._scroll_all(docs, query, ["rev"], page=_CANDIDATE_PAGE)
                    allowed = np.fromiter((record.payload["rev"] for record in passing), np.int64, len(passing))
                    rows = rows[np.isin(table.revisions[rows], allowed)]
            return table.revisions[rows]
        with self._documents(name) as docs:  # all pages under one lock: a consistent answer in local mode
            records = self._scroll_all(docs, query, ["rev"], page=_CANDIDATE_PAGE)
        return np.fromiter((record.payload["rev"] for record in records), np.int64, len(records))

    def fetch(self, name: str, revisions: np.ndarray) -> DocumentBatch:
        """Scroll by ``rev`` MatchAny (integer payload index in server mode), 2048 revisions a query.

        In local mode the revisions are looked up in the collection's :class:`_LocalTable` and the
        points retrieved by id (the local client would test MatchAny on every point in Python).
        """
        _check_name(name)
        m = _models()
        wanted = np.unique(np.asarray(revisions, dtype=np.int64))
        if not len(wanted):
            self.count(name)  # raises IndexNotFoundError for a missing index
            return _records_to_batch([])
        if self._scan_centroids_locally:
            with self._documents(name) as docs:
                point_ids = self._local_table(docs).point_ids_of(wanted)
                records = self._client.retrieve(docs, point_ids, with_payload=_STORED_FIELDS, with_vectors=False)
            wanted_set = set(wanted.tolist())
            return _records_to_batch([record for record in records if record.payload["rev"] in wanted_set])
        records = []
        for start in range(0, len(wanted), _FETCH_CHUNK):
            chunk = wanted[start : start + _FETCH_CHUNK].tolist()
            query = m.Filter(must=[m.FieldCondition(key="rev", match=m.MatchAny(any=chunk))])
            with self._documents(name) as docs:
                records += self._scroll_all(docs, query, _STORED_FIELDS, page=len(chunk))
        return _records_to_batch(records)

    def scan(self, name: str, batch_size: int = 1024) -> Iterator[DocumentBatch]:
        _check_name(name)
        offset = None
        while True:
            with self._documents(name) as docs:
                page, offset = self._client.scroll(
                    docs, limit=batch_size, offset=offset, with_payload=_STORED_FIELDS, with_vectors=False
                )
            if page:
                yield _records_to_batch(page)
            if offset is None:
                return

    def size_bytes(self, name: str, fields: Sequence[str] = ("codes", "residuals")) -> int:
        """Bytes the given payload fields take as stored: the length of their base64 text (all documents)."""
        _check_name(name)
        total = 0
        offset = None
        while True:
            with self._documents(name) as docs:
                page, offset = self._client.scroll(
                    docs, limit=_CANDIDATE_PAGE, offset=offset, with_payload=list(fields), with_vectors=False
                )
            total += sum(len(record.payload.get(field) or "") for record in page for field in fields)
            if offset is None:
                return total

    # -- helpers ------------------------------------------------------------------------------
    def _catalogue(self) -> str:
        return f"{self._prefix}__{_CATALOGUE}"

    def _docs(self, name: str) -> str:
        """The documents collection of ``name``, from the header (read once, then after any failure)."""
        docs = self._collections.get(name)
        if docs is None:
            payload = self._header_payload(name)
            docs = payload["docs"] if payload is not None else f"{self._prefix}__{name}"
            if payload is not None:
                self._collections[name] = docs
        return docs

    def _drop_collection(self, docs: str) -> None:
        if self._client.collection_exists(docs):
            self._client.delete_collection(docs)
        _forget_local_table(self._client, docs)

    @contextmanager
    def _documents(self, name: str) -> Iterator[str]:
        """The documents collection's name, under the client lock; a missing one raises IndexNotFoundError."""
        with self._io:
            docs = self._docs(name)
            try:
                yield docs
            except Exception as error:
                if not self._client.collection_exists(docs):
                    self._collections.pop(name, None)  # dropped, or retrained by another client
                    raise IndexNotFoundError(name) from error
                raise

    @contextmanager
    def _writing(self, name: str) -> Iterator[str]:
        """:meth:`_documents` for a write: the collection's local table is dropped before the lock is released."""
        with self._documents(name) as docs:
            try:
                yield docs
            finally:
                _forget_local_table(self._client, docs)

    def _local_table(self, docs: str) -> _LocalTable:
        """The collection's :class:`_LocalTable`, built by one scroll if absent; call under the client lock."""
        table = _local_tables(self._client).get(docs)
        if table is None:
            records = self._scroll_all(docs, None, ["rev", "centroids"], page=_CANDIDATE_PAGE)
            table = _LocalTable(records)
            _local_tables(self._client)[docs] = table
        return table

    def _scroll_all(self, collection: str, query: Any, fields: list[str], page: int) -> list[Any]:
        records: list[Any] = []
        offset = None
        while True:
            batch, offset = self._client.scroll(
                collection, scroll_filter=query, limit=page, offset=offset, with_payload=fields, with_vectors=False
            )
            records += batch
            if offset is None:
                return records

    def _header_payload(self, name: str) -> dict[str, Any] | None:
        catalogue = self._catalogue()
        if not self._client.collection_exists(catalogue):
            return None
        found = self._client.retrieve(catalogue, [_header_id(name)], with_payload=True, with_vectors=False)
        return dict(found[0].payload) if found else None

    def _read_codec(self, name: str, payload: Mapping[str, Any]) -> tuple[bool, bytes | None]:
        """``(complete, codec)``: not complete when the parts were replaced meanwhile (read again)."""
        n_parts = int(payload.get("codec_parts") or 0)
        if not n_parts:
            encoded = payload.get("codec")
            return True, None if encoded is None else base64.b64decode(encoded)
        ids = [_codec_part_id(name, payload["codec_version"], i) for i in range(n_parts)]
        found = self._client.retrieve(self._catalogue(), ids, with_payload=["part", "data"], with_vectors=False)
        if len(found) != n_parts:
            return False, None
        parts = sorted(found, key=lambda record: record.payload["part"])
        return True, b"".join(base64.b64decode(record.payload["data"]) for record in parts)

    def _put_header(self, name: str, header: IndexHeader, docs: str) -> None:
        """Write the codec's parts (if large), then the header point (the atomic commit), then tidy up."""
        m = _models()
        if not isinstance(header.manifest, Mapping):
            raise InvalidInputError(f"the manifest must be a dict, got {type(header.manifest).__name__}")
        catalogue = self._catalogue()
        payload: dict[str, Any] = {
            "kind": "index",
            "name": name,
            "manifest": json.dumps(header.manifest, sort_keys=True),
            "codec": None,
            "codec_parts": 0,
            "codec_version": None,
            "docs": docs,
        }
        codec = header.codec
        if codec is not None and len(codec) <= _CODEC_CHUNK_BYTES:
            payload["codec"] = base64.b64encode(codec).decode("ascii")
        elif codec is not None:
            version = uuid.uuid4().hex
            view = memoryview(codec)
            n_parts = -(-len(codec) // _CODEC_CHUNK_BYTES)
            for i in range(n_parts):
                data = base64.b64encode(view[i * _CODEC_CHUNK_BYTES : (i + 1) * _CODEC_CHUNK_BYTES]).decode("ascii")
                part = {"kind": "codec_part", "name": name, "version": version, "part": i, "data": data}
                point = m.PointStruct(id=_codec_part_id(name, version, i), vector={}, payload=part)
                self._client.upsert(catalogue, [point], wait=True)
            payload.update(codec_parts=n_parts, codec_version=version)
        self._client.upsert(catalogue, [m.PointStruct(id=_header_id(name), vector={}, payload=payload)], wait=True)
        stale = m.Filter(
            must=[_match("kind", "codec_part"), _match("name", name)],
            must_not=[_match("version", payload["codec_version"])] if payload["codec_version"] else [],
        )
        self._client.delete(catalogue, m.FilterSelector(filter=stale), wait=True)


# -- client -----------------------------------------------------------------------------------
def _client_class() -> Any:
    return require("qdrant_client", "qdrant").QdrantClient


_REGISTRY_LOCK = threading.Lock()
_PATH_CLIENTS: dict[str, list[Any]] = {}  # real path -> [client, number of open stores]
_CLIENT_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCAL_TABLES: weakref.WeakKeyDictionary[Any, dict[str, _LocalTable]] = weakref.WeakKeyDictionary()


def _check_collection_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``collection_options`` as a dict, after checking ``create_collection`` takes every name."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"collection_options must be a mapping, got {type(options).__name__}")
    parameters = inspect.signature(_client_class().create_collection).parameters.values()
    named = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(options) - (named - {"self", "collection_name", "vectors_config"}))
    if unknown:
        raise TypeError(f"create_collection takes no arguments named {unknown}")
    return dict(options)


def _open_client(client_or_location: Any, client_kwargs: dict[str, Any]) -> tuple[Any, str | None]:
    """The client to use, and the folder whose shared local client it is (``None`` otherwise).

    qdrant-client locks a local folder to one client, so stores on the same folder in one process
    share a client (and its lock) instead of failing.
    """
    client_class = _client_class()
    if isinstance(client_or_location, client_class):
        if client_kwargs:
            raise TypeError(f"unexpected keyword arguments with a client: {sorted(client_kwargs)}")
        return client_or_location, None
    if not isinstance(client_or_location, (str, os.PathLike)):
        raise TypeError(
            "expected a QdrantClient, ':memory:', an http(s):// URL or a folder, "
            f"got {type(client_or_location).__name__}"
        )
    location = os.fspath(client_or_location)
    if re.match(r"^https?://", location, re.IGNORECASE):
        return client_class(url=location, **client_kwargs), None
    unknown = sorted(set(client_kwargs) - _LOCAL_KWARGS)
    if unknown:  # QdrantClient silently ignores these in local mode
        raise TypeError(f"unexpected keyword arguments for local Qdrant: {unknown}")
    if location == ":memory:":
        return client_class(location=":memory:", **client_kwargs), None
    # every call to a local client holds its lock, so SQLite may be used from any thread
    client_kwargs.setdefault("force_disable_check_same_thread", True)
    path = os.path.realpath(location)
    with _REGISTRY_LOCK:
        entry = _PATH_CLIENTS.get(path)
        if entry is None:
            entry = _PATH_CLIENTS[path] = [client_class(path=location, **client_kwargs), 0]
        entry[1] += 1
        return entry[0], path


@atexit.register
def _close_path_clients() -> None:
    """Close shared local-folder clients before interpreter teardown (their __del__ fails there)."""
    with _REGISTRY_LOCK:
        entries = list(_PATH_CLIENTS.values())
        _PATH_CLIENTS.clear()
    for client, _ in entries:
        with _local_lock(client):
            client.close()


def _release_path_client(path: str) -> bool:
    """Forget one store of a shared local folder client; ``True`` when it was the last one."""
    with _REGISTRY_LOCK:
        entry = _PATH_CLIENTS.get(path)
        if entry is None:  # already closed at exit
            return False
        entry[1] -= 1
        if entry[1]:
            return False
        del _PATH_CLIENTS[path]
        return True


def _local_lock(client: Any) -> threading.RLock:
    """The lock serialising every call to a (not thread-safe) local client, shared by its stores."""
    with _REGISTRY_LOCK:
        lock = _CLIENT_LOCKS.get(client)
        if lock is None:
            lock = _CLIENT_LOCKS[client] = threading.RLock()
        return lock


def _local_tables(client: Any) -> dict[str, _LocalTable]:
    """The :class:`_LocalTable` of each collection of a local client, shared by its stores."""
    with _REGISTRY_LOCK:
        return _LOCAL_TABLES.setdefault(client, {})


def _forget_local_table(client: Any, collection: str) -> None:
    """Drop a collection's local table after a write (a no-op for server clients, which have none)."""
    with _REGISTRY_LOCK:
        tables = _LOCAL_TABLES.get(client)
        if tables is not None:
            tables.pop(collection, None)


class _LocalTable:
    """Point ids, revisions and distinct centroids of one local-mode collection, in numpy.

    Built from one scroll and dropped by every write to the collection through any store on the same
    client (writes and reads of a local client hold its lock), so it always matches the collection.
    Centroid lookups use an inverted list: ``(centroid, row)`` pairs sorted by centroid.
    """

    def __init__(self, records: Sequence[Any]) -> None:
        self.point_ids = [str(record.id) for record in records]
        self.revisions = np.fromiter((record.payload["rev"] for record in records), np.int64, len(records))
        lists = [record.payload["centroids"] for record in records]
        lengths = np.fromiter(map(len, lists), np.int64, len(lists))
        flat = np.fromiter(itertools.chain.from_iterable(lists), np.int64, int(lengths.sum()))
        order = np.argsort(flat, kind="stable")
        self._centroids = flat[order]
        self._rows = np.repeat(np.arange(len(lists), dtype=np.int64), lengths)[order]
        self._revision_order = np.argsort(self.revisions, kind="stable")
        self._sorted_revisions = self.revisions[self._revision_order]

    def holding_any(self, probes: np.ndarray) -> np.ndarray:
        """Sorted rows of the documents holding any of the (sorted, distinct) ``probes``.

        >>> from types import SimpleNamespace as Point
        >>> table = _LocalTable([Point(id=i, payload={"rev": i, "centroids": c})
        ...                      for i, c in enumerate([[3, 5], [5], [7]])])
        >>> table.holding_any(np.array([5])).tolist(), table.holding_any(np.array([3, 7, 9])).tolist()
        ([0, 1], [0, 2])
        """
        starts = np.searchsorted(self._centroids, probes, side="left")
        lengths = np.searchsorted(self._centroids, probes, side="right") - starts
        first = np.cumsum(lengths) - lengths
        positions = np.arange(int(lengths.sum())) + np.repeat(starts - first, lengths)
        return np.unique(self._rows[positions])

    def point_ids_of(self, revisions: np.ndarray) -> list[str]:
        """Point ids of the stored documents with these revisions (the others are left out)."""
        if not len(self.revisions):
            return []
        at = np.searchsorted(self._sorted_revisions, revisions).clip(max=len(self.revisions) - 1)
        found = self._sorted_revisions[at] == revisions
        return [self.point_ids[i] for i in self._revision_order[at[found]].tolist()]


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise InvalidInputError(f"index name must be 1-64 letters, digits, '_' or '-'; got {name!r}")
    if name == _CATALOGUE:
        raise InvalidInputError(f"index name {name!r} is reserved for the catalogue collection")


def _header_id(name: str) -> str:
    return str(uuid.uuid5(_HEADER_NAMESPACE, name))


def _codec_part_id(name: str, version: str, part: int) -> str:
    return str(uuid.uuid5(_HEADER_NAMESPACE, f"{name}\x00codec\x00{version}\x00{part}"))


def _point_id(doc_id: str) -> str:
    return str(uuid.uuid5(_DOC_NAMESPACE, doc_id))


def _point_id_or_none(doc_id: Any) -> str | None:
    """The point id of ``doc_id``, or ``None`` for an id that can never have been stored."""
    try:
        return _point_id(doc_id) if isinstance(doc_id, str) else None
    except UnicodeEncodeError:
        return None


def _as_filter(condition: Condition) -> Any:
    m = _models()
    return condition if isinstance(condition, m.Filter) else m.Filter(must=[condition])


def _match(key: str, value: str | int | bool) -> Condition:
    m = _models()
    return m.FieldCondition(key=key, match=m.MatchValue(value=value))


# -- documents <-> points ---------------------------------------------------------------------
def _document_points(batch: DocumentBatch) -> tuple[list[Any], list[int]]:
    """One point per document, and each point's approximate request size in bytes."""
    m = _models()
    n_docs = len(batch)
    offsets = np.asarray(batch.token_offsets, dtype=np.int64)
    codes = np.asarray(batch.centroid_ids)
    if codes.dtype not in (np.dtype(np.uint16), np.dtype(np.uint32)):
        codes = codes.astype(np.uint32)
    code_width = codes.dtype.itemsize
    code_bytes = memoryview(codes.astype(codes.dtype.newbyteorder("<"), copy=False).tobytes())
    residuals = np.ascontiguousarray(batch.residuals, dtype=np.uint8)
    residual_width = residuals.shape[1] if residuals.ndim == 2 else 0
    residual_bytes = memoryview(residuals.tobytes())
    centroid_offsets, centroid_values = batch.distinct_centroids()
    distinct = centroid_values.tolist()
    texts = batch.texts or [None] * n_docs
    metadata = batch.metadata or [{}] * n_docs
    revisions = np.asarray(batch.revisions, dtype=np.int64).tolist()
    sq_errors = None if batch.sq_errors is None else np.asarray(batch.sq_errors, dtype=np.float64).tolist()
    points, sizes = [], []
    for i, doc_id in enumerate(batch.ids):
        _check_document(doc_id, texts[i])
        start, end = int(offsets[i]), int(offsets[i + 1])
        meta = _normalised_metadata(doc_id, metadata[i])
        payload: dict[str, Any] = {
            "doc_id": doc_id,
            "rev": revisions[i],
            "n_tokens": end - start,
            "sq_error": None if sq_errors is None else sq_errors[i],
            "centroids": distinct[centroid_offsets[i] : centroid_offsets[i + 1]],
            "codes": base64.b64encode(code_bytes[start * code_width : end * code_width]).decode("ascii"),
            "residuals": base64.b64encode(residual_bytes[start * residual_width : end * residual_width]).decode("ascii"),
            "text": texts[i],
            "meta": meta,
        }
        fields = _filter_fields(meta)
        if fields:
            payload["filter"] = fields
        points.append(m.PointStruct(id=_point_id(doc_id), vector={}, payload=payload))
        sizes.append(
            len(payload["codes"]) + len(payload["residuals"]) + 4 * len(texts[i] or "")
            + 12 * len(payload["centroids"]) + 2 * len(json.dumps(meta)) + 256
        )
    return points, sizes


def _check_document(doc_id: Any, text: Any) -> None:
    if not isinstance(doc_id, str) or not doc_id:
        raise InvalidInputError(f"document ids must be non-empty strings, got {doc_id!r}")
    for value, what in ((doc_id, "id"), (text, "text")):
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as error:
                raise InvalidInputError(f"document {doc_id!r}: the {what} is not valid unicode ({error})") from None
    if text is not None and not isinstance(text, str):
        raise InvalidInputError(f"document {doc_id!r}: text must be a string or None, got {type(text).__name__}")


def _normalised_metadata(doc_id: str, metadata: Any) -> dict[str, Any]:
    """``metadata`` as JSON would return it; InvalidInputError names the document and key if it can't be."""
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"document {doc_id!r}: metadata must be a dict, got {type(metadata).__name__}")
    normalised = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise InvalidInputError(f"document {doc_id!r}: metadata key {key!r} is not a string")
        try:
            text = json.dumps(value, allow_nan=False, ensure_ascii=False)
            text.encode("utf-8")
            normalised[key] = json.loads(text, parse_int=_int64)
        except (TypeError, ValueError, OverflowError) as error:  # UnicodeEncodeError is a ValueError
            raise InvalidInputError(
                f"document {doc_id!r}: metadata[{key!r}] = {value!r:.80} is not JSON-serialisable ({error})"
            ) from None
    return normalised


def _int64(text: str) -> int:
    value = int(text)
    if not _INT64[0] <= value < _INT64[1]:
        raise OverflowError(f"{value} does not fit in 64 bits")
    return value


def _request_chunks(points: list[Any], sizes: list[int]) -> Iterator[list[Any]]:
    """Consecutive runs of points, each under the point and byte budgets of one request."""
    chunk: list[Any] = []
    total = 0
    for point, size in zip(points, sizes):
        if chunk and (len(chunk) == _UPSERT_POINTS or total + size > _REQUEST_BYTES):
            yield chunk
            chunk, total = [], 0
        chunk.append(point)
        total += size
    if chunk:
        yield chunk


def _records_to_batch(records: Sequence[Any]) -> DocumentBatch:
    """A DocumentBatch from scrolled points, decoding each document's base64 then joining with numpy."""
    payloads = [record.payload for record in records]
    n_tokens = np.fromiter((p["n_tokens"] for p in payloads), np.int64, len(payloads))
    token_offsets = np.concatenate([[0], np.cumsum(n_tokens)]).astype(np.int64)
    total = int(token_offsets[-1])
    codes = [base64.b64decode(p["codes"]) for p in payloads]
    residuals = bytearray().join(base64.b64decode(p["residuals"]) for p in payloads)  # writable for numpy
    widths = {len(raw) // count for raw, count in zip(codes, n_tokens.tolist()) if count}
    if len(widths) <= 1:
        width = widths.pop() if widths else 2
        centroid_ids = np.frombuffer(bytearray().join(codes), dtype=f"<u{width}").astype(f"=u{width}", copy=False)
    else:  # written under codecs of different sizes: widen to uint32
        pairs = [(raw, count) for raw, count in zip(codes, n_tokens.tolist()) if count]
        centroid_ids = np.concatenate(
            [np.frombuffer(raw, dtype=f"<u{len(raw) // count}").astype(np.uint32) for raw, count in pairs]
        )
    residual_width = len(residuals) // total if total else 0
    return DocumentBatch(
        ids=[p["doc_id"] for p in payloads],
        revisions=np.fromiter((p["rev"] for p in payloads), np.int64, len(payloads)),
        token_offsets=token_offsets,
        centroid_ids=centroid_ids,
        residuals=np.frombuffer(residuals, dtype=np.uint8).reshape(total, residual_width),
        texts=[p.get("text") for p in payloads],
        metadata=[p.get("meta") or {} for p in payloads],
        sq_errors=np.array([np.nan if p.get("sq_error") is None else p["sq_error"] for p in payloads], np.float64),
    )


# -- metadata filters -------------------------------------------------------------------------
def _field_key(field: str) -> str:
    """A Qdrant-path-safe name for a metadata key: ``k`` + hex of its UTF-8 bytes."""
    return "k" + field.encode("utf-8", "surrogatepass").hex()


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "b"
    if isinstance(value, (int, float)):
        return "n"
    return "s"


def _as_int64(value: int | float) -> int | None:
    """``value`` as an int64 if it is a whole number in range, else ``None``."""
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    return value if _INT64[0] <= value < _INT64[1] else None


def _order_chunks(text: str) -> list[int]:
    """Order key of a string: UTF-8 bytes plus one, six per base-257 chunk, zero-padded.

    Lexicographic order of the chunk lists (a missing chunk counting as 0) is Python's str order.

    >>> _order_chunks(""), _order_chunks("a") < _order_chunks("a\\x00") < _order_chunks("b")
    ([], True)
    """
    symbols = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8).astype(np.int64) + 1
    n_chunks = -(-len(symbols) // _ORDER_CHUNK_BYTES)
    padded = np.zeros(n_chunks * _ORDER_CHUNK_BYTES, np.int64)
    padded[: len(symbols)] = symbols
    return (padded.reshape(n_chunks, _ORDER_CHUNK_BYTES) @ _ORDER_WEIGHTS).tolist()


def _filter_fields(metadata: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``filter`` payload object: top-level scalars by kind, and string order keys."""
    fields: dict[str, dict[str, Any]] = {}
    for key, value in metadata.items():
        name = _field_key(key)
        if isinstance(value, bool):
            fields.setdefault("b", {})[name] = value
        elif isinstance(value, (int, float)):
            whole = _as_int64(value)
            fields.setdefault("n", {})[name] = value if whole is None else whole
        elif isinstance(value, str):
            fields.setdefault("s", {})[name] = value
            order = fields.setdefault("o", {})
            for i, chunk in enumerate(_order_chunks(value)[: _ORDER_CHUNKS + 1]):
                order[f"{name}_{i}"] = chunk
        # lists, dicts and None are left out: no comparison matches them
    return fields


def translate_filter(expr: Filter) -> Translated:
    """A parsed filter as a Qdrant condition over the ``filter`` payload, with ``matches`` semantics.

    Returns ``True`` / ``False`` for a filter that holds for every / no document.
    """
    if isinstance(expr, And):
        return _all_of([translate_filter(clause) for clause in expr.clauses])
    if isinstance(expr, Or):
        return _any_of([translate_filter(clause) for clause in expr.clauses])
    if isinstance(expr, Not):
        inner = translate_filter(expr.clause)
        return (not inner) if isinstance(inner, bool) else _models().Filter(must_not=[inner])
    if isinstance(expr, Membership):
        kind = _kind(expr.values[0])
        path = f"filter.{kind}.{_field_key(expr.field)}"
        found = _equal_any(kind, path, expr.values)
        return found if expr.op == "$in" else _present_and_not(path, found)
    if isinstance(expr, Comparison):
        return _comparison(expr)
    raise FilterError(f"not a parsed filter: {expr!r}")


def _comparison(expr: Comparison) -> Translated:
    kind = _kind(expr.value)
    name = _field_key(expr.field)
    path = f"filter.{kind}.{name}"
    if expr.op == "$eq":
        return _equal_any(kind, path, (expr.value,))
    if expr.op == "$ne":
        return _present_and_not(path, _equal_any(kind, path, (expr.value,)))
    if isinstance(expr.value, str):
        return _all_of([_present(path), _string_order(name, expr.op, expr.value)])
    if kind == "n":
        return _number_order(path, expr.op, expr.value)
    raise FilterError(f"{expr.field} {expr.op}: ordering needs a number or a string, got {expr.value!r}")


def _number_order(path: str, op: str, value: int | float) -> Translated:
    """``stored <op> value`` on numbers: a float64 range (ints beyond float range decided here)."""
    m = _models()
    try:
        bound = float(value)
    except OverflowError:  # |value| > every finite float: the answer does not depend on the stored number
        below = (op in ("$lt", "$lte")) == (value > 0)
        return _present(path) if below else False
    return m.FieldCondition(key=path, range=m.Range(**{op[1:]: bound}))


def _equal_any(kind: str, path: str, values: Iterable[Any]) -> Translated:
    """The field (of this kind) equals one of ``values``."""
    m = _models()
    distinct = list(dict.fromkeys(values))
    if kind == "s":
        return m.FieldCondition(key=path, match=m.MatchAny(any=distinct))
    if kind == "b":
        if len(set(distinct)) == 2:
            return _present(path)
        return m.FieldCondition(key=path, match=m.MatchValue(value=bool(distinct[0])))
    whole = list(dict.fromkeys(v for v in map(_as_int64, distinct) if v is not None))
    clauses: list[Translated] = [m.FieldCondition(key=path, match=m.MatchAny(any=whole))] if whole else []
    for value in distinct:
        if _as_int64(value) is None:
            clauses.append(_equal_fraction(path, value))
    return _any_of(clauses)


def _equal_fraction(path: str, value: int | float) -> Translated:
    """Equality with a number that is not a whole int64 (stored numbers like it stay floats)."""
    m = _models()
    try:
        exact = float(value)
    except OverflowError:
        return False
    if exact != value:  # an int beyond int64 that no float equals
        return False
    return m.FieldCondition(key=path, range=m.Range(gte=exact, lte=exact))


def _present(path: str) -> Condition:
    m = _models()
    return m.Filter(must_not=[m.IsEmptyCondition(is_empty=m.PayloadField(key=path))])


def _missing(path: str) -> Condition:
    m = _models()
    return m.IsEmptyCondition(is_empty=m.PayloadField(key=path))


def _present_and_not(path: str, condition: Translated) -> Translated:
    """The field exists (with this kind) and ``condition`` does not hold: ``$ne`` / ``$nin``."""
    m = _models()
    if condition is False:
        return _present(path)
    if condition is True:
        return False
    return m.Filter(must_not=[m.IsEmptyCondition(is_empty=m.PayloadField(key=path)), condition])


def _string_order(name: str, op: str, value: str) -> Translated:
    """``stored <op> value`` on strings, from the order-key chunks (see the module docstring)."""
    m = _models()
    chunks = _order_chunks(value)
    if len(chunks) > _ORDER_CHUNKS:
        raise FilterError(
            f"string ordering ({op}) on Qdrant supports values up to {_ORDER_CHUNKS * _ORDER_CHUNK_BYTES} "
            f"UTF-8 bytes; got {len(value.encode('utf-8', 'surrogatepass'))}"
        )

    def key(i: int) -> str:
        return f"filter.o.{name}_{i}"

    def equal_up_to(i: int) -> list[Translated]:
        return [m.FieldCondition(key=key(j), match=m.MatchValue(value=chunks[j])) for j in range(i)]

    branches: list[Translated] = []
    for i, chunk in enumerate(chunks):
        if op in ("$gt", "$gte"):
            step: Translated = m.FieldCondition(key=key(i), range=m.Range(gt=chunk))
        else:  # a missing chunk is 0: the stored string ended, so it is smaller
            step = _any_of([_missing(key(i)), m.FieldCondition(key=key(i), range=m.Range(lt=chunk))])
        branches.append(_all_of([*equal_up_to(i), step]))
    n = len(chunks)
    tail = {"$gt": _present(key(n)), "$gte": True, "$lt": False, "$lte": _missing(key(n))}[op]
    branches.append(_all_of([*equal_up_to(n), tail]))
    return _any_of(branches)


def _all_of(clauses: list[Translated]) -> Translated:
    if any(clause is False for clause in clauses):
        return False
    kept = [clause for clause in clauses if clause is not True]
    if not kept:
        return True
    return kept[0] if len(kept) == 1 else _models().Filter(must=kept)


def _any_of(clauses: list[Translated]) -> Translated:
    if any(clause is True for clause in clauses):
        return True
    kept = [clause for clause in clauses if clause is not False]
    if not kept:
        return False
    return kept[0] if len(kept) == 1 else _models().Filter(should=kept)
