"""Native multivector baselines: every document token vector stored uncompressed in the store's own multivector type.

    python -m benchmarks.native_multivector --queries 20

One record per document holds its whole token matrix as fp32, and the store scores it with its built-in cosine
MaxSim; no colbert-store code is involved. Four systems:

* ``edge_native(data, datatype)``: the Qdrant engine itself, in process (Qdrant Edge), one shard with a
  ``MAX_SIM`` multivector of ``float32`` or ``float16`` storage and HNSW off (``m=0``), as Qdrant advises for
  ColBERT token vectors that are used for rescoring: every search scores every document exactly. The shard is
  optimized after the writes and the whole folder (segments and write-ahead log) is counted, also before the
  optimize (`bytes_per_token_before_optimize`: as the writes leave it, its log holding a copy).
* ``qdrant_native``: qdrant-client's local mode on disk (``QdrantClient(path=...)``), ``MAX_SIM``: a Python
  emulation of Qdrant, not the engine. Local mode pickles each point into SQLite and searches by brute force in
  numpy, one small matmul per document, so it matches exhaustive exact MaxSim but is slow. Those small matmuls
  suffer from OpenBLAS's thread pool when another process is busy: on a shared machine run with
  ``OPENBLAS_NUM_THREADS=1`` (``benchmarks.run`` does).
* ``lancedb_native(data, indexed=False)``: LanceDB flat (no index) multivector search, exact.
* ``lancedb_native(data, indexed=True)``: LanceDB with its IVF_PQ multivector index, which indexes every token vector;
  the index settings and search settings are recorded in the row.

Each row has recall@10 against exhaustive exact MaxSim, nDCG@10, single-query latency (after ``WARMUP`` untimed
queries), batch throughput, build time (empty folder to searchable) and folder bytes per document token. Doc vectors
are converted from fp16 to fp32 ``WRITE_BATCH_DOCS`` documents at a time, never all at once. ``benchmarks.systems``
runs them as systems of the side-by-side run; run alone, this prints the four rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import IvfPq
from qdrant_client import QdrantClient, models

from benchmarks.lib.data import BenchData, folder_bytes
from benchmarks.lib.exhaustive import ExhaustiveMaxSim
from benchmarks.lib.scifact import add_scifact_arguments, load_scifact_vectors
from benchmarks.lib.timing import time_each, time_exhaustive

COLLECTION = "docs"
WRITE_BATCH_DOCS = 256
QUERY_BATCH = 32
WARMUP = 3

# IVF_PQ on a multivector column partitions and quantizes each token vector on its own, so partitions are sized
# by tokens, not rows: the usual sqrt(n) rule, rounded to a power of two. 16 sub-vectors of 8 dims each (the
# SIMD-friendly width LanceDB recommends) make a 16-byte code per 128-d token, the size of colbert-store's 1-bit
# residuals.
PQ_SUB_VECTORS = 16
# Without refinement LanceDB ranks documents on PQ-approximated token scores (XTR-style: documents missing from a
# query token's candidates get an estimate); refine_factor re-scores limit * refine_factor candidate documents with
# their full vectors. 10 puts its recall in colbert-store's range (benchmarks/README.md has the measurements behind
# this choice); 20 probes is LanceDB's default.
NPROBES = 20
REFINE_FACTOR = 10


def _fp32_batches(docs: list[np.ndarray]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(first document, (n_tokens, dim) float32 tokens, offsets)`` for each run of ``WRITE_BATCH_DOCS`` documents."""
    for first in range(0, len(docs), WRITE_BATCH_DOCS):
        batch = docs[first : first + WRITE_BATCH_DOCS]
        offsets = np.concatenate([[0], np.cumsum([len(doc) for doc in batch])])
        yield first, np.concatenate(batch).astype(np.float32), offsets


def _score(data: BenchData, positions: list[list[int]], seconds: list[float], **extra: Any) -> dict[str, Any]:
    """``data.score`` of rankings given as document positions, plus ``extra``."""
    rankings = [[data.vectors.doc_ids[i] for i in ranking] for ranking in positions]
    return {**data.score(rankings, seconds), **extra}


def edge_native(data: BenchData, datatype: str) -> dict[str, Any]:
    """Qdrant Edge, one point per document with its token matrix stored as ``datatype`` ("float32" or
    "float16"), cosine MaxSim, HNSW off: an exact scan by the engine."""
    import qdrant_edge as edge

    path = data.workdir / f"edge-{datatype}"
    storage = {"float32": edge.VectorStorageDatatype.Float32, "float16": edge.VectorStorageDatatype.Float16}[datatype]
    params = edge.EdgeVectorParams(
        size=data.docs[0].shape[1], distance=edge.Distance.Cosine, datatype=storage,
        multivector_config=edge.MultiVectorConfig(edge.MultiVectorComparator.MaxSim),
        hnsw_config=edge.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
    )
    start = time.perf_counter()
    shard = edge.EdgeShard.create(str(path), edge.EdgeConfig(vectors={"tokens": params}))
    try:
        for first, tokens, offsets in _fp32_batches(data.docs):
            documents = np.split(tokens, offsets[1:-1])
            points = [edge.Point(first + i, {"tokens": document.tolist()}) for i, document in enumerate(documents)]
            shard.update(edge.UpdateOperation.upsert_points(points))
        written_size = folder_bytes(path)
        shard.optimize()
        shard.flush()
        build_seconds = time.perf_counter() - start
        size = folder_bytes(path)

        def search(query: np.ndarray) -> list[int]:
            nearest = edge.Query.Nearest(query.tolist(), using="tokens")
            request = edge.QueryRequest(limit=data.k, query=nearest, with_payload=False)
            return [int(point.id) for point in shard.query(request)]

        rankings, seconds = time_each(search, data.queries, WARMUP)
    finally:
        shard.close()
    return _score(
        data, rankings, seconds,
        qps_batch=len(seconds) / sum(seconds),
        batch_note="qps_batch is the sequential single-query pass",
        build_seconds=build_seconds,
        bytes_per_token=size / data.n_tokens,
        bytes_per_token_before_optimize=written_size / data.n_tokens,
        storage=f"Qdrant Edge shard: {datatype} multivector, HNSW m=0 (exact scan)",
    )


def qdrant_native(data: BenchData) -> dict[str, Any]:
    """Qdrant local mode on disk, one point per document with its fp32 token matrix, cosine MaxSim."""
    queries = data.queries
    path = data.workdir / "qdrant"
    start = time.perf_counter()
    client = QdrantClient(path=str(path))
    try:
        client.create_collection(
            COLLECTION,
            vectors_config=models.VectorParams(
                size=data.docs[0].shape[1],
                distance=models.Distance.COSINE,
                multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            ),
        )
        for first, tokens, offsets in _fp32_batches(data.docs):
            documents = np.split(tokens, offsets[1:-1])
            client.upload_collection(COLLECTION, vectors=documents, ids=range(first, first + len(documents)))
        build_seconds = time.perf_counter() - start
        size = folder_bytes(path)

        def search(query: np.ndarray) -> list[int]:
            return [int(p.id) for p in client.query_points(COLLECTION, query=query, limit=data.k, with_payload=False).points]

        rankings, seconds = time_each(search, queries, WARMUP)
        start = time.perf_counter()
        for first in range(0, len(queries), QUERY_BATCH):
            requests = [
                models.QueryRequest(query=query.tolist(), limit=data.k, with_payload=False)
                for query in queries[first : first + QUERY_BATCH]
            ]
            client.query_batch_points(COLLECTION, requests=requests)
        batch_seconds = time.perf_counter() - start
    finally:
        client.close()
    return _score(
        data, rankings, seconds,
        qps_batch=len(queries) / batch_seconds,
        batch_note=f"query_batch_points, {QUERY_BATCH} queries per call (local mode answers them one after another)",
        build_seconds=build_seconds,
        bytes_per_token=size / data.n_tokens,
        storage="local mode: SQLite of pickled points (vectors as Python float lists), searched in RAM with numpy",
    )


def lancedb_native(data: BenchData, indexed: bool) -> dict[str, Any]:
    """LanceDB, one row per document with a list<fixed_size_list<float32>> token column, cosine MaxSim.

    ``indexed``: build an IVF_PQ multivector index and search it with ``NPROBES`` and ``REFINE_FACTOR``;
    otherwise search flat (exact).
    """
    dim = data.docs[0].shape[1]
    queries = data.queries
    path = data.workdir / "lancedb"
    schema = pa.schema([pa.field("doc", pa.int32()), pa.field("vector", pa.list_(pa.list_(pa.float32(), dim)))])

    def batches() -> Iterator[pa.RecordBatch]:
        for first, tokens, offsets in _fp32_batches(data.docs):
            matrices = pa.ListArray.from_arrays(
                pa.array(offsets.astype(np.int32)), pa.FixedSizeListArray.from_arrays(pa.array(tokens.reshape(-1)), dim)
            )
            positions = pa.array(np.arange(first, first + len(offsets) - 1, dtype=np.int32))
            yield pa.RecordBatch.from_arrays([positions, matrices], schema=schema)

    start = time.perf_counter()
    table = lancedb.connect(path).create_table(COLLECTION, data=pa.RecordBatchReader.from_batches(schema, batches()))
    settings: dict[str, Any] = {}
    if indexed:
        num_partitions = 2 ** round(math.log2(math.sqrt(data.n_tokens)))
        table.create_index(
            "vector", config=IvfPq(distance_type="cosine", num_partitions=num_partitions, num_sub_vectors=PQ_SUB_VECTORS)
        )
        settings = {
            "index": "IVF_PQ", "num_partitions": num_partitions, "num_sub_vectors": PQ_SUB_VECTORS, "num_bits": 8,
            "nprobes": NPROBES, "refine_factor": REFINE_FACTOR,
        }
    build_seconds = time.perf_counter() - start
    size = folder_bytes(path)

    def search(query: np.ndarray) -> list[int]:
        builder = table.search(query).limit(data.k).select(["doc", "_distance"])
        if indexed:
            builder = builder.nprobes(NPROBES).refine_factor(REFINE_FACTOR)
        return builder.to_arrow()["doc"].to_pylist()

    rankings, seconds = time_each(search, queries, WARMUP)
    return _score(
        data, rankings, seconds,
        qps_batch=len(seconds) / sum(seconds),
        batch_note="no batch API for multivector queries (several query vectors form one multivector query): "
        "qps_batch is the sequential single-query pass",
        build_seconds=build_seconds,
        bytes_per_token=size / data.n_tokens,
        **settings,
    )


def main(argv: list[str] | None = None) -> None:
    """Run the four baselines on the first ``--queries`` cached SciFact queries and print one JSON row each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_scifact_arguments(parser)
    parser.add_argument("--queries", type=int, default=20, help="evaluate only the first N queries")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args(argv)

    vectors = load_scifact_vectors(args.cache, data_dir=args.data)
    queries = vectors.queries()[: args.queries]
    exact, _ = time_exhaustive(ExhaustiveMaxSim(vectors.doc_ids, vectors.doc_vectors, vectors.doc_offsets), queries, args.k)
    systems: dict[str, Callable[[BenchData], dict[str, Any]]] = {
        "edge_native_float32": lambda data: edge_native(data, "float32"),
        "edge_native_float16": lambda data: edge_native(data, "float16"),
        "qdrant_native": qdrant_native,
        "lancedb_native_flat": lambda data: lancedb_native(data, indexed=False),
        "lancedb_native_ivf_pq": lambda data: lancedb_native(data, indexed=True),
    }
    for name, system in systems.items():
        with tempfile.TemporaryDirectory(prefix=f"{name}-") as workdir:
            data = BenchData(vectors=vectors, queries=queries, exact=exact, k=args.k, workdir=Path(workdir), cache_dir=args.cache)
            print(json.dumps({"system": name, **system(data)}), flush=True)


if __name__ == "__main__":
    main()
