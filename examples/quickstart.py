"""Quickstart with precomputed token vectors: create an index in LanceDB, add, filter, replace, delete.

Run it with ``python examples/quickstart.py [STORE_DIR]`` (default: a temporary folder). It needs no model
and no network: the "documents" are random token vectors around a few topic directions, and the query
is eight token vectors of document ``doc-2``.
"""

from __future__ import annotations

import sys
import tempfile

import numpy as np

import colbert_store as cs
from colbert_store.adapters.lancedb import LanceDBStore

DIM = 128


def topic_tokens(rng: np.random.Generator, topic: np.ndarray, n_tokens: int) -> np.ndarray:
    """``n_tokens`` unit vectors scattered around one unit topic direction."""
    vectors = topic + 0.08 * rng.standard_normal((n_tokens, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def main(folder: str) -> None:
    rng = np.random.default_rng(0)
    topics = rng.standard_normal((20, DIM))
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    ids = [f"doc-{i}" for i in range(200)]
    docs = [topic_tokens(rng, topics[i % 20], int(rng.integers(20, 60))) for i in range(200)]
    metadata = [{"year": 2000 + i % 25, "lang": "en" if i % 3 else "de"} for i in range(200)]

    store = LanceDBStore(folder)
    index = cs.Index.create(store, "papers", dim=DIM, nbits=2)  # cs.Index.open(store, "papers") reopens it
    index.add(ids, docs, texts=[f"{doc_id}, about topic {i % 20}" for i, doc_id in enumerate(ids)], metadata=metadata)
    print(f"indexed {len(index)} documents: {index.stats()['bytes_per_token']} bytes per token (float16: {2 * DIM})")

    query = docs[2][:8]  # eight tokens of doc-2: it should come first, then other documents of topic 2
    print("top 3:", [(hit.id, round(hit.score, 2)) for hit in index.search(query, k=3)])
    recent = index.search(query, k=3, filter={"year": {"$gte": 2020}, "lang": "en"})
    print("top 3 with year >= 2020 and lang = en:", [(hit.id, hit.metadata["year"]) for hit in recent])

    index.add(["doc-2"], [topic_tokens(rng, topics[7], 30)], texts=["doc-2, now about topic 7"])  # replaces doc-2
    index.delete(["doc-22"])
    print("after replacing doc-2 and deleting doc-22:", [hit.id for hit in index.search(query, k=3)])
    print(f"{len(index)} documents")
    store.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as temporary:
            main(temporary)
