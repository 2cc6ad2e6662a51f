"""Client handling for the Qdrant backend: which ``QdrantClient`` a store uses, and the locks and
per-collection tables that local mode needs.

qdrant-client locks a local folder to one client, so stores on the same folder in one process share
a client (and its lock) instead of failing. Local mode is not thread-safe: every call to a local
client holds that client's lock. Server clients are used concurrently, with no lock.
"""

from __future__ import annotations

import atexit
import inspect
import os
import re
import threading
import weakref
from collections.abc import Mapping
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

from colbert_store._optional import require

if TYPE_CHECKING:
    from colbert_store.adapters.qdrant.local_table import LocalTable

_LOCAL_KWARGS = frozenset({"force_disable_check_same_thread"})

_REGISTRY_LOCK = threading.Lock()
_PATH_CLIENTS: dict[str, list[Any]] = {}  # real path -> [client, number of open stores]
_CLIENT_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCAL_TABLES: weakref.WeakKeyDictionary[Any, dict[str, LocalTable]] = weakref.WeakKeyDictionary()
_WRITES: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()


@cache
def models() -> ModuleType:
    """``qdrant_client.models``, imported on first use (raises naming the ``qdrant`` extra if missing)."""
    return require("qdrant_client.models", "qdrant")


def client_class() -> Any:
    """``qdrant_client.QdrantClient``."""
    return require("qdrant_client", "qdrant").QdrantClient


def is_local(client: Any) -> bool:
    """Whether ``client`` runs qdrant-client's local mode (in memory or on a folder) rather than a server."""
    options = getattr(client, "init_options", {}) or {}
    return options.get("location") == ":memory:" or options.get("path") is not None


def check_collection_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``collection_options`` as a dict, after checking ``create_collection`` takes every name."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"collection_options must be a mapping, got {type(options).__name__}")
    parameters = inspect.signature(client_class().create_collection).parameters.values()
    named = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(options) - (named - {"self", "collection_name", "vectors_config"}))
    if unknown:
        raise TypeError(f"create_collection takes no arguments named {unknown}")
    return dict(options)


def open_client(client_or_location: Any, client_kwargs: dict[str, Any]) -> tuple[Any, str | None]:
    """The client to use, and the folder whose shared local client it is (``None`` otherwise)."""
    qdrant_client = client_class()
    if isinstance(client_or_location, qdrant_client):
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
        return qdrant_client(url=location, **client_kwargs), None
    unknown = sorted(set(client_kwargs) - _LOCAL_KWARGS)
    if unknown:  # QdrantClient silently ignores these in local mode
        raise TypeError(f"unexpected keyword arguments for local Qdrant: {unknown}")
    if location == ":memory:":
        return qdrant_client(location=":memory:", **client_kwargs), None
    # every call to a local client holds its lock, so SQLite may be used from any thread
    client_kwargs.setdefault("force_disable_check_same_thread", True)
    path = os.path.realpath(location)
    with _REGISTRY_LOCK:
        entry = _PATH_CLIENTS.get(path)
        if entry is None:
            entry = _PATH_CLIENTS[path] = [qdrant_client(path=location, **client_kwargs), 0]
        entry[1] += 1
        return entry[0], path


def release_path_client(path: str) -> bool:
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


@atexit.register
def _close_path_clients() -> None:
    """Close shared local-folder clients before interpreter teardown (their __del__ fails there)."""
    with _REGISTRY_LOCK:
        entries = list(_PATH_CLIENTS.values())
        _PATH_CLIENTS.clear()
    for client, _ in entries:
        with local_lock(client):
            client.close()


def local_lock(client: Any) -> threading.RLock:
    """The lock serialising every call to a (not thread-safe) local client, shared by its stores."""
    with _REGISTRY_LOCK:
        lock = _CLIENT_LOCKS.get(client)
        if lock is None:
            lock = _CLIENT_LOCKS[client] = threading.RLock()
        return lock


def local_tables(client: Any) -> dict[str, LocalTable]:
    """The :class:`LocalTable` of each collection of a local client, shared by its stores."""
    with _REGISTRY_LOCK:
        return _LOCAL_TABLES.setdefault(client, {})


def forget_local_table(client: Any, collection: str) -> None:
    """After a write to a local collection: drop its local table and count the write."""
    with _REGISTRY_LOCK:
        tables = _LOCAL_TABLES.get(client)
        if tables is not None:
            tables.pop(collection, None)
        writes = _WRITES.setdefault(client, {})
        writes[collection] = writes.get(collection, 0) + 1


def local_writes(client: Any, collection: str) -> int:
    """How many writes the stores of this process made to a local collection (the only writers it has)."""
    with _REGISTRY_LOCK:
        return _WRITES.get(client, {}).get(collection, 0)
