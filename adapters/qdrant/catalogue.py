"""The Qdrant catalogue: which indexes a store holds, their manifests and their codecs, as points of
one catalogue collection.

Per index (each creation gets a fresh documents collection name, ``docs``, which also keys the rest):

- a *head* point (id from the index name): ``name``, ``docs`` and a recent ``version``;
- one *manifest* point per committed version (id from ``docs`` and the version), never overwritten:
  a commit inserts the next version's point in insert-only mode, so of two processes committing over
  the same version exactly one succeeds, and it can tell (it reads back its own random ``commit``
  token). The manifest is the highest version present; the head is only where the search for it
  starts;
- the codecs, each split into parts of at most 4 MiB (a server's request limit is 32 MiB), written
  before any manifest names them.

Creating an index inserts its head in insert-only mode after its documents collection and first
manifest exist, so a reader never sees an index without them, and two creators end with one index.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Collection
from typing import Any

from colbert_store.adapters.qdrant.engine import PointsEngine, WriteMode
from colbert_store.errors import IndexNotFoundError

_NAMESPACE = uuid.UUID("0b5e3a8c-2f6d-5e71-8a94-d1c2e3f4a5b6")
_CODEC_PART_BYTES = 4 << 20
_PROBED_VERSIONS = 8
_NAMES_PAGE = 1024


class Catalogue:
    """The catalogue collection of one store (created on first write)."""

    def __init__(self, engine: PointsEngine, collection: str) -> None:
        self._engine = engine
        self._collection = collection

    def names(self) -> list[str]:
        if not self._exists():
            return []
        build = self._engine.conditions
        heads, offset = [], None
        while True:
            page, offset = self._engine.scroll(
                self._collection, build.match_value("kind", "head"), ["name"], _NAMES_PAGE, offset
            )
            heads += page
            if offset is None:
                return sorted(record.payload["name"] for record in heads)

    def entry(self, name: str) -> dict[str, Any]:
        """The index's latest ``manifest`` (parsed), its ``version`` and ``docs``."""
        head = self._head(name)
        if head is None:
            raise IndexNotFoundError(name)
        docs, version = head["docs"], int(head["version"])
        while True:
            probed = list(range(version, version + _PROBED_VERSIONS))
            found = self._engine.retrieve(self._collection, [_manifest_id(docs, v) for v in probed], ["version", "manifest"])
            latest = max(found, key=lambda record: record.payload["version"], default=None)
            if latest is None:  # dropped while being read
                raise IndexNotFoundError(name)
            version = int(latest.payload["version"])
            if version < probed[-1]:
                return {"manifest": json.loads(latest.payload["manifest"]), "version": version, "docs": docs}

    def insert(self, name: str, manifest: dict[str, Any], docs: str) -> bool:
        """Add the index (its first manifest, then its head) unless it exists; whether it was added."""
        if self._head(name) is not None:
            return False
        self._ensure()
        version = int(manifest["version"])
        self._engine.upsert(self._collection, [self._manifest_point(name, docs, manifest, uuid.uuid4().hex)],
                            mode=WriteMode.INSERT_ONLY)
        head = {"kind": "head", "name": name, "docs": docs, "version": version}
        self._engine.upsert(self._collection, [(_head_id(name), head)], mode=WriteMode.INSERT_ONLY)
        if self._head(name) == head:
            return True
        self._engine.delete(self._collection, [_manifest_id(docs, version)])
        return False

    def replace(self, name: str, manifest: dict[str, Any], expected_version: int) -> bool:
        """Commit ``manifest`` (version ``expected_version + 1``) if no other process committed that
        version first; whether it was committed."""
        current = self.entry(name)
        if current["version"] != expected_version:
            return False
        docs, version, token = current["docs"], int(manifest["version"]), uuid.uuid4().hex
        if version != expected_version + 1:
            raise ValueError(f"a manifest replacing version {expected_version} must have version {expected_version + 1}")
        self._engine.upsert(self._collection, [self._manifest_point(name, docs, manifest, token)], mode=WriteMode.INSERT_ONLY)
        stored = self._engine.retrieve(self._collection, [_manifest_id(docs, version)], ["commit"])
        if not stored or stored[0].payload["commit"] != token:
            return False
        build = self._engine.conditions
        head = {"kind": "head", "name": name, "docs": docs, "version": version}
        self._engine.upsert(  # the head moves forward only (a later commit may have moved it already)
            self._collection, [(_head_id(name), head)], condition=build.range("version", lt=version),
            mode=WriteMode.UPDATE_ONLY,
        )
        return True

    def remove(self, name: str) -> str:
        """Delete the index from the catalogue (its head first: from then on it does not exist); its
        documents collection's name."""
        head = self._head(name)
        if head is None:
            raise IndexNotFoundError(name)
        self._engine.delete(self._collection, [_head_id(name)])
        self._engine.delete_where(self._collection, self._engine.conditions.match_value("docs", head["docs"]))
        return str(head["docs"])

    def write_codec(self, name: str, codec_id: str, data: bytes) -> None:
        docs = self.entry(name)["docs"]
        view = memoryview(data)
        n_parts = max(1, -(-len(data) // _CODEC_PART_BYTES))
        for part in range(n_parts):
            chunk = base64.b64encode(view[part * _CODEC_PART_BYTES : (part + 1) * _CODEC_PART_BYTES]).decode("ascii")
            payload = {"kind": "codec_part", "name": name, "docs": docs, "codec_id": codec_id, "part": part,
                       "parts": n_parts, "data": chunk}
            self._engine.upsert(self._collection, [(_codec_part_id(docs, codec_id, part), payload)])

    def read_codec(self, name: str, codec_id: str) -> bytes:
        docs = self.entry(name)["docs"]
        first = self._engine.retrieve(self._collection, [_codec_part_id(docs, codec_id, 0)], ["parts", "data"])
        if not first:
            raise KeyError(f"index {name!r} has no codec {codec_id!r}")
        n_parts = int(first[0].payload["parts"])
        rest = self._engine.retrieve(
            self._collection, [_codec_part_id(docs, codec_id, part) for part in range(1, n_parts)], ["part", "data"]
        )
        if len(rest) != n_parts - 1:
            raise KeyError(f"index {name!r}: codec {codec_id!r} is incomplete")
        parts = [first[0].payload["data"], *(r.payload["data"] for r in sorted(rest, key=lambda r: r.payload["part"]))]
        return b"".join(base64.b64decode(part) for part in parts)

    def delete_codecs(self, name: str, codec_ids: Collection[str]) -> None:
        if not codec_ids:
            return
        build = self._engine.conditions
        docs = self.entry(name)["docs"]
        condition = build.filter(must=[
            build.match_value("docs", docs),
            build.match_value("kind", "codec_part"),
            build.match_any("codec_id", list(codec_ids)),
        ])
        self._engine.delete_where(self._collection, condition)

    def _head(self, name: str) -> dict[str, Any] | None:
        if not self._exists():
            return None
        found = self._engine.retrieve(self._collection, [_head_id(name)], None)
        return dict(found[0].payload) if found else None

    def _manifest_point(self, name: str, docs: str, manifest: dict[str, Any], token: str) -> tuple[str, dict[str, Any]]:
        version = int(manifest["version"])
        payload = {"kind": "manifest", "name": name, "docs": docs, "version": version,
                   "manifest": json.dumps(manifest, sort_keys=True), "commit": token}
        return _manifest_id(docs, version), payload

    def _exists(self) -> bool:
        return self._engine.collection_exists(self._collection)

    def _ensure(self) -> None:
        if not self._exists():
            self._engine.create_collection(self._collection, integer_indexes=())


def _head_id(name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{name}\x00head"))


def _manifest_id(docs: str, version: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{docs}\x00manifest\x00{version}"))


def _codec_part_id(docs: str, codec_id: str, part: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{docs}\x00codec\x00{codec_id}\x00{part}"))
