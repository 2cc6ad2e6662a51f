"""``colbert-store demo``: index the standard library's docstrings offline and answer a few questions.

Everything it prints is measured while it runs: how long reading, encoding, indexing and searching took.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from colbert_store.cli.errors import CliError
from colbert_store.cli.output import print_hits
from colbert_store.cli.resources import load_encoder

if TYPE_CHECKING:
    from colbert_store.encoder import ColBERTEncoder
    from colbert_store.index import Index
    from colbert_store.retriever import Retriever
    from colbert_store.storage import Store

DEMO_INDEX = "stdlib"
DEMO_DOC_MAXLEN = 128
"""Docstrings are truncated to this many tokens: their summary comes first, and shorter inputs encode faster."""
DEMO_MAX_CENTROIDS = 1024
"""At most this many centroids (the default rule would pick more for all the docstrings), so that k-means trains quickly."""
DEMO_QUESTIONS = (
    "how do I parse command line arguments",
    "compress data with gzip",
    "run a command in a subprocess and capture its output",
    "open a zip archive and list its files",
    "send an email message over SMTP",
)
DEMO_FILTERED = ("decode a JSON document", {"kind": "class"})
DEMO_HITS = 3

T = TypeVar("T")


def cmd_demo(args: argparse.Namespace) -> int:
    """``colbert-store demo``: index standard-library docstrings offline and answer a few questions."""
    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit must be a positive integer, got {args.limit}")
    if args.store is not None:
        return _run_demo(Path(args.store), args.model, args.limit)
    with tempfile.TemporaryDirectory(prefix="colbert-store-demo-") as folder:
        return _run_demo(Path(folder), args.model, args.limit)


def _run_demo(folder: Path, model: str | None, limit: int | None) -> int:
    """Build (or reuse) the demo index in ``folder`` and run the demo queries."""
    from colbert_store.adapters.lancedb import LanceDBStore
    from colbert_store.index import Index
    from colbert_store.retriever import Retriever

    print(f"colbert-store demo: standard-library docstrings in a LanceDB store at {folder}")
    started = time.perf_counter()
    encoder = load_encoder(model, None, DEMO_DOC_MAXLEN, show_progress=None)
    print(f"loaded {encoder} in {time.perf_counter() - started:.1f} s")
    store = LanceDBStore(folder)
    try:
        if DEMO_INDEX in store.list_indexes():
            index = Index.open(store, DEMO_INDEX)
            print(f"reusing the demo index in {folder} ({len(index)} documents)")
        else:
            index = _build_demo_index(store, encoder, limit)
        _demo_searches(Retriever(index, encoder))
    finally:
        store.close()
    return 0


def _build_demo_index(store: Store, encoder: ColBERTEncoder, limit: int | None) -> Index:
    """Read and encode the docstrings, then index them, timing each step."""
    from colbert_store.codec import default_centroid_count
    from colbert_store.pseudo_queries import sample_sentences
    from colbert_store.retriever import Retriever
    from colbert_store.stdlib_corpus import stdlib_docstrings

    started = time.perf_counter()
    docs = _spread(stdlib_docstrings(), limit)
    print(f"read {len(docs)} docstrings in {time.perf_counter() - started:.1f} s")
    texts = [doc.text for doc in docs]
    started = time.perf_counter()
    vectors = encoder.encode_documents(texts)
    n_tokens = sum(len(v) for v in vectors)
    print(f"encode: {len(texts)} docstrings -> {n_tokens} token vectors in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    n_centroids = min(DEMO_MAX_CENTROIDS, default_centroid_count(n_tokens))
    index = Retriever.create(store, DEMO_INDEX, encoder, n_centroids=n_centroids).index
    queries = encoder.encode_queries(sample_sentences(texts))  # the codec weighs its errors as queries see them
    metadata = [{"module": doc.module, "kind": doc.kind} for doc in docs]
    index.add([doc.id for doc in docs], vectors, texts, metadata, queries=queries)
    stats = index.stats()
    print(f"index: trained {stats['centroids']} centroids and stored {stats['documents']} documents in "
          f"{time.perf_counter() - started:.1f} s, {stats['bytes_per_token']} bytes per token "
          f"(float16 would take {2 * encoder.dim})")
    return index


def _spread(items: list[T], limit: int | None) -> list[T]:
    """At most ``limit`` items evenly spread over ``items`` (all of them when ``limit`` is ``None``).

    >>> _spread(list(range(10)), 3)
    [0, 3, 6]
    """
    if limit is None or limit >= len(items):
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def _demo_searches(retriever: Retriever) -> None:
    """Answer the demo questions and one filtered query, printing the top hits and the mean latency."""
    latencies = []
    for question in DEMO_QUESTIONS:
        started = time.perf_counter()
        hits = retriever.search(question, k=DEMO_HITS)
        latencies.append(time.perf_counter() - started)
        print(f"\nQ: {question}")
        print_hits(hits, indent="  ")
    question, where = DEMO_FILTERED
    started = time.perf_counter()
    hits = retriever.search(question, k=DEMO_HITS, filter=where)
    latencies.append(time.perf_counter() - started)
    print(f"\nQ: {question}   filter: {json.dumps(where)}")
    print_hits(hits, indent="  ")
    mean_ms = 1000 * sum(latencies) / len(latencies)
    print(f"\nsearch: {len(latencies)} queries in {sum(latencies):.2f} s, {mean_ms:.0f} ms each on average "
          "(query encoding included)")
