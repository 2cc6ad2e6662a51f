"""The Qdrant store: one documents collection per index plus a catalogue collection for headers.

Works with a Qdrant server (``QdrantStore("http://host:6333", api_key=...)``), an existing
``QdrantClient``, or qdrant-client's local mode (``":memory:"`` or a folder). Collections hold no
vectors at all (``vectors_config={}``, points carry ``vector={}``): everything is payload (see
:mod:`colbert_store.adapters.qdrant.records`).

Documents collection ``<prefix>__<name>`` (a retrained index keeps the collection its retraining
built, named by its header's ``docs``). Catalogue ``<prefix>_catalogue``: one point per index (id =
uuid5 of the name) with ``name``, ``manifest`` (JSON), ``codec`` (base64, or ``None``) and ``docs``
(its documents collection). A codec can outgrow a server's default 32 MiB request limit, so one
over 4 MiB is written as immutable parts first, under a fresh version, and the header point then
names that version: the one-point upsert of the header stays the atomic commit, a reader that finds
the parts of its version gone (a concurrent rewrite) reads again, and stale parts are deleted after
each commit.

Payload indexes (``centroids``, ``rev``) are created in server mode only; qdrant-client's local mode
has none and evaluates filters point by point in Python, so in local mode centroid lookups and
fetches by revision are answered from a :class:`~colbert_store.adapters.qdrant.local_table.LocalTable`
(metadata filters still scan every point).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import numpy as np

from colbert_store.adapters.qdrant.client import (
    check_collection_options,
    client_class,
    forget_local_table,
    is_local,
    local_lock,
    local_tables,
    models,
    open_client,
    release_path_client,
)
from colbert_store.adapters.qdrant.filters import ClientConditions, Condition, Translated, all_of, translate_filter
from colbert_store.adapters.qdrant.local_table import LocalTable
from colbert_store.adapters.qdrant.records import (
    STORED_FIELDS,
    codec_part_id,
    document_payloads,
    header_id,
    payloads_to_batch,
    point_id,
    request_chunks,
)
from colbert_store.errors import ColbertStoreError, IndexExistsError, IndexNotFoundError, InvalidInputError
from colbert_store.filters import Filter
from colbert_store.storage import DocumentBatch, IndexHeader, Store
from colbert_store.validation import check_index_name

_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*$")  # no "__": a prefix ends at the first one
_CODEC_CHUNK_BYTES = 4 << 20
_HEADER_READ_ATTEMPTS = 8
_CANDIDATE_PAGE = 10_000
_FETCH_CHUNK = 2048
_DELETE_CHUNK = 1024


class QdrantStore(Store):
    """colbert-store on Qdrant.

    Args:
        client_or_location: a ``qdrant_client.QdrantClient`` (used as is, and not closed by
            :meth:`close`), ``":memory:"`` (local mode, in memory), an ``http(s)://`` server URL, or
            any other string or path: a local-mode folder. Stores opened on the same folder in one
            process share one client (qdrant-client locks a folder to a single client).
        prefix: name prefix of the collections this store creates (``<prefix>__<index>`` and
            ``<prefix>_catalogue``): letters, digits, ``-`` and single ``_``.
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
        self._collection_options = check_collection_options(collection_options)
        self._client, self._path = open_client(client_or_location, client_kwargs)
        self._owns_client = not isinstance(client_or_location, client_class())
        self._local = is_local(self._client)
        self._io: AbstractContextManager[Any] = local_lock(self._client) if self._local else nullcontext()
        self._admin = threading.RLock()
        self._collections: dict[str, str] = {}  # index name -> documents collection, as last read
        self._conditions = ClientConditions()
        self._closed = False
        # local mode checks MatchAny element by element in Python: answer centroid lookups (and fetches
        # by revision) from a numpy table of the collection instead (see LocalTable)
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
            if self._path is None or release_path_client(self._path):
                self._client.close()

    # -- catalogue ----------------------------------------------------------------------------
    def list_indexes(self) -> list[str]:
        catalogue = self._catalogue()
        with self._io:
            if not self._client.collection_exists(catalogue):
                return []
            query = models().Filter(must=[_match("kind", "index")])
            records = self._scroll_all(catalogue, query, ["name"], page=1024)
        return sorted(record.payload["name"] for record in records)

    def create_index(self, name: str, header: IndexHeader) -> None:
        check_index_name(name)
        m = models()
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
            forget_local_table(self._client, docs)
            self._client.create_collection(docs, vectors_config={}, **{"on_disk_payload": True, **self._collection_options})
            if not self._local:  # local mode has no payload indexes (and warns about them)
                for field in ("centroids", "rev"):
                    schema = m.IntegerIndexParams(type=m.IntegerIndexType.INTEGER, lookup=True, range=False)
                    self._client.create_payload_index(docs, field, field_schema=schema, wait=True)
            self._put_header(name, header, docs)

    def drop_index(self, name: str) -> None:
        check_index_name(name)
        m = models()
        with self._admin, self._io:
            payload = self._header_payload(name)
            if payload is None:
                raise IndexNotFoundError(name)
            catalogue = self._catalogue()
            self._client.delete(catalogue, [header_id(name)], wait=True)  # the index is gone from here on
            parts = m.Filter(must=[_match("kind", "codec_part"), _match("name", name)])
            self._client.delete(catalogue, m.FilterSelector(filter=parts), wait=True)
            self._drop_collection(payload["docs"])
            self._collections.pop(name, None)

    def read_header(self, name: str) -> IndexHeader:
        check_index_name(name)
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
        check_index_name(name)
        with self._io:
            catalogue = self._catalogue()
            found = self._client.collection_exists(catalogue) and self._client.retrieve(
                catalogue, [header_id(name)], with_payload=["manifest"], with_vectors=False
            )
        if not found:
            raise IndexNotFoundError(name)
        return json.loads(found[0].payload["manifest"])

    def write_header(self, name: str, header: IndexHeader) -> None:
        check_index_name(name)
        with self._admin, self._io:
            payload = self._header_payload(name)
            if payload is None:
                raise IndexNotFoundError(name)
            self._put_header(name, header, payload["docs"])

    def swap_index(self, name: str, staging: str) -> None:
        """Delete the staging header, then point ``name``'s header (one point upsert: the atomic
        switch) at the staging collection, then drop the old collection. Killed in between, the
        staging collection is left unreferenced and ``name`` is unchanged."""
        check_index_name(name)
        m = models()
        new = self.read_header(staging)
        with self._admin, self._io:
            old, staged = self._header_payload(name), self._header_payload(staging)
            if old is None or staged is None:
                raise IndexNotFoundError(staging if staged is None else name)
            catalogue = self._catalogue()
            self._client.delete(catalogue, [header_id(staging)], wait=True)
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
        if not len(batch):
            return
        m = models()
        ids, payloads, sizes = document_payloads(batch)
        points = [m.PointStruct(id=i, vector={}, payload=payload) for i, payload in zip(ids, payloads)]
        for chunk in request_chunks(points, sizes):
            with self._writing(name) as docs:
                self._client.upsert(docs, chunk, wait=True)

    def delete(self, name: str, ids: Sequence[str]) -> None:
        point_ids = [point_id(doc_id) for doc_id in ids]
        if not point_ids:
            self.count(name)  # raises IndexNotFoundError for a missing index, like a real delete
        for start in range(0, len(point_ids), _DELETE_CHUNK):
            with self._writing(name) as docs:
                self._client.delete(docs, point_ids[start : start + _DELETE_CHUNK], wait=True)

    def count(self, name: str) -> int:
        with self._documents(name) as docs:
            return int(self._client.count(docs, exact=True).count)

    def candidates(self, name: str, centroid_ids: np.ndarray | None, where: Filter | None) -> np.ndarray:
        """One scroll (all pages) with ``centroids`` MatchAny and the translated filter.

        In local mode the centroid test runs in numpy instead, on a table of every document's distinct
        centroids built by one scroll and kept until the next write to the collection (see
        :class:`LocalTable`); a filter is still answered by one scroll, whose revisions are then
        intersected with the centroid hits. The local client checks MatchAny element by element in
        Python and deep-copies every payload it returns, a full scan per query; the table answers
        from memory.
        """
        m = models()
        probes = None if centroid_ids is None else np.unique(np.asarray(centroid_ids, dtype=np.int64))
        conditions: list[Translated] = []
        if probes is not None and not len(probes):
            conditions.append(False)
        elif probes is not None and not self._scan_centroids_locally:
            conditions.append(m.FieldCondition(key="centroids", match=m.MatchAny(any=probes.tolist())))
        if where is not None:
            conditions.append(translate_filter(where, self._conditions))
        condition = all_of(conditions, self._conditions)
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

        In local mode the revisions are looked up in the collection's :class:`LocalTable` and the
        points retrieved by id (the local client would test MatchAny on every point in Python).
        """
        m = models()
        wanted = np.unique(np.asarray(revisions, dtype=np.int64))
        if not len(wanted):
            self.count(name)  # raises IndexNotFoundError for a missing index
            return payloads_to_batch([])
        if self._scan_centroids_locally:
            with self._documents(name) as docs:
                point_ids = self._local_table(docs).point_ids_of(wanted)
                records = self._client.retrieve(docs, point_ids, with_payload=STORED_FIELDS, with_vectors=False)
            wanted_set = set(wanted.tolist())
            return payloads_to_batch([record.payload for record in records if record.payload["rev"] in wanted_set])
        records = []
        for start in range(0, len(wanted), _FETCH_CHUNK):
            chunk = wanted[start : start + _FETCH_CHUNK].tolist()
            query = m.Filter(must=[m.FieldCondition(key="rev", match=m.MatchAny(any=chunk))])
            with self._documents(name) as docs:
                records += self._scroll_all(docs, query, STORED_FIELDS, page=len(chunk))
        return payloads_to_batch([record.payload for record in records])

    def scan(self, name: str, batch_size: int = 1024) -> Iterator[DocumentBatch]:
        offset = None
        while True:
            with self._documents(name) as docs:
                page, offset = self._client.scroll(
                    docs, limit=batch_size, offset=offset, with_payload=STORED_FIELDS, with_vectors=False
                )
            if page:
                yield payloads_to_batch([record.payload for record in page])
            if offset is None:
                return

    def size_bytes(self, name: str, fields: Sequence[str] = ("codes", "residuals")) -> int:
        """Bytes the given payload fields take as stored: the length of their base64 text (all documents)."""
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
        return f"{self._prefix}_catalogue"

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
        forget_local_table(self._client, docs)

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
                forget_local_table(self._client, docs)

    def _local_table(self, docs: str) -> LocalTable:
        """The collection's :class:`LocalTable`, built by one scroll if absent; call under the client lock."""
        table = local_tables(self._client).get(docs)
        if table is None:
            records = self._scroll_all(docs, None, ["rev", "centroids"], page=_CANDIDATE_PAGE)
            table = LocalTable(records)
            local_tables(self._client)[docs] = table
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
        found = self._client.retrieve(catalogue, [header_id(name)], with_payload=True, with_vectors=False)
        return dict(found[0].payload) if found else None

    def _read_codec(self, name: str, payload: Mapping[str, Any]) -> tuple[bool, bytes | None]:
        """``(complete, codec)``: not complete when the parts were replaced meanwhile (read again)."""
        n_parts = int(payload.get("codec_parts") or 0)
        if not n_parts:
            encoded = payload.get("codec")
            return True, None if encoded is None else base64.b64decode(encoded)
        ids = [codec_part_id(name, payload["codec_version"], i) for i in range(n_parts)]
        found = self._client.retrieve(self._catalogue(), ids, with_payload=["part", "data"], with_vectors=False)
        if len(found) != n_parts:
            return False, None
        parts = sorted(found, key=lambda record: record.payload["part"])
        return True, b"".join(base64.b64decode(record.payload["data"]) for record in parts)

    def _put_header(self, name: str, header: IndexHeader, docs: str) -> None:
        """Write the codec's parts (if large), then the header point (the atomic commit), then tidy up."""
        m = models()
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
                point = m.PointStruct(id=codec_part_id(name, version, i), vector={}, payload=part)
                self._client.upsert(catalogue, [point], wait=True)
            payload.update(codec_parts=n_parts, codec_version=version)
        self._client.upsert(catalogue, [m.PointStruct(id=header_id(name), vector={}, payload=payload)], wait=True)
        stale = m.Filter(
            must=[_match("kind", "codec_part"), _match("name", name)],
            must_not=[_match("version", payload["codec_version"])] if payload["codec_version"] else [],
        )
        self._client.delete(catalogue, m.FilterSelector(filter=stale), wait=True)




def _as_filter(condition: Condition) -> Any:
    m = models()
    return condition if isinstance(condition, m.Filter) else m.Filter(must=[condition])


def _match(key: str, value: str | int | bool) -> Condition:
    m = models()
    return m.FieldCondition(key=key, match=m.MatchValue(value=value))


