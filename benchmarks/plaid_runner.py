"""Stanford PLAID (PyPI colbert-ai) on the cached token vectors, on the CPU: build an index and search it.

    .venv-plaid/bin/python benchmarks/plaid_runner.py --cache ~/.cache/colbert-store/scifact --index-dir DIR --out plaid.json

Runs inside PLAID's own virtual environment (colbert-ai is a benchmark baseline, never a dependency of
colbert-store; ``benchmarks.lib.plaid`` creates the environment and runs this script), so it imports
nothing of colbert-store and reads the cache with numpy alone. Writes each query's top-k document ids,
per-query seconds, build seconds, index bytes, peak memory and PLAID's search settings, searching with
PLAID's defaults. With ``--serve`` it builds nothing: it opens the index in ``--index-dir`` and answers
blocks of queries for ``benchmarks.head_to_head`` (``block_server``).

colbert-ai builds from text through a checkpoint; here its own indexer pipeline (plan, k-means,
residual codec, chunks, IVF) runs with an encoder that hands back the precomputed vectors, and its
own ``Searcher.dense_search`` ranks precomputed query tensors. Its C++ kernels compile on first use
(then cached), so warm-up searches run before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from block_server import claim_stdout, serve  # noqa: E402  (benchmarks/, this script's folder)
from colbert.data.collection import Collection  # noqa: E402
from colbert.indexing.collection_indexer import CollectionIndexer  # noqa: E402
from colbert.indexing.index_saver import IndexSaver  # noqa: E402
from colbert.infra.config import ColBERTConfig  # noqa: E402
from colbert.modeling.colbert import ColBERT  # noqa: E402
from colbert.search.index_storage import IndexScorer  # noqa: E402
from colbert.searcher import Searcher  # noqa: E402


class CachedVectors:
    """The encoder PLAID's indexer calls: passage ids are document positions in the cache."""

    def __init__(self, vectors: np.ndarray, offsets: np.ndarray) -> None:
        self.vectors = vectors
        self.offsets = offsets

    def encode_passages(self, positions: list[int]) -> tuple[torch.Tensor, list[int]]:
        rows = [np.arange(self.offsets[p], self.offsets[p + 1]) for p in positions]
        lengths = [len(r) for r in rows]
        taken = self.vectors[np.concatenate(rows)] if rows else np.empty((0, self.vectors.shape[1]), np.float32)
        return torch.from_numpy(np.asarray(taken, dtype=np.float32)), lengths  # its CPU path wants float32


def build(vectors: np.ndarray, offsets: np.ndarray, index_dir: Path, nbits: int) -> float:
    """PLAID's indexer run end to end (its __init__ would load a checkpoint, so it is bypassed)."""
    started = time.perf_counter()
    index_dir.mkdir(parents=True, exist_ok=True)
    config = ColBERTConfig(nbits=nbits, dim=int(vectors.shape[1]), index_path=str(index_dir), rank=0, nranks=1)
    indexer = CollectionIndexer.__new__(CollectionIndexer)
    indexer.verbose, indexer.config, indexer.rank, indexer.nranks, indexer.use_gpu = 0, config, 0, 1, False
    indexer.collection = Collection(data=list(range(len(offsets) - 1)))
    indexer.encoder = CachedVectors(vectors, offsets)
    indexer.saver = IndexSaver(config)
    indexer.run(shared_lists=[[None]])
    return time.perf_counter() - started


def open_searcher(index_dir: Path) -> Searcher:
    """PLAID's Searcher over the index with no checkpoint (queries arrive as tensors)."""
    ColBERT.try_load_torch_extensions(use_gpu=False)  # a checkpoint would load the MaxSim kernel
    searcher = Searcher.__new__(Searcher)
    searcher.verbose, searcher.index, searcher.checkpoint, searcher.collection = 0, str(index_dir), None, None
    searcher.index_config = ColBERTConfig.load_from_index(str(index_dir))
    searcher.config = ColBERTConfig.from_existing(searcher.index_config)
    searcher.ranker = IndexScorer(str(index_dir), use_gpu=False, load_index_with_mmap=False)
    return searcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", required=True, help="folder written by benchmarks.scifact_vectors")
    parser.add_argument("--index-dir", required=True)
    parser.add_argument("--out", help="where the results go (needed unless --serve)")
    parser.add_argument("--serve", action="store_true", help="open the index in --index-dir and answer query blocks")
    parser.add_argument("--nbits", type=int, default=2)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--padded", action="store_true", help="the queries padded with [MASK] to 32 tokens")
    args = parser.parse_args()
    if not args.serve and not args.out:
        parser.error("--out is required unless --serve")
    channel = claim_stdout() if args.serve else None

    cache = Path(args.cache).expanduser()
    vectors = np.load(cache / "doc_vectors.npy", mmap_mode="r")
    offsets = np.load(cache / "doc_offsets.npy").astype(np.int64)
    doc_ids = json.loads((cache / "doc_ids.json").read_text())
    suffix = "_expanded" if args.padded else ""
    query_vectors = np.load(cache / f"query_vectors{suffix}.npy")
    query_offsets = np.load(cache / f"query_offsets{suffix}.npy")
    queries = [query_vectors[query_offsets[i] : query_offsets[i + 1]] for i in range(len(query_offsets) - 1)]
    index_dir = Path(args.index_dir).resolve()

    if not args.serve:
        build_seconds = build(vectors, offsets, index_dir, args.nbits)
        peak_build_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    searcher = open_searcher(index_dir)

    def search(query: np.ndarray) -> list[str]:
        positions, _, _ = searcher.dense_search(torch.from_numpy(np.asarray(query, np.float32))[None], k=args.k)
        return [doc_ids[p] for p in positions]

    for query in queries[: args.warmup]:
        search(query)
    if channel:
        serve(lambda position: search(queries[position]), channel)
        return
    rankings, seconds = [], []
    for query in queries:
        started = time.perf_counter()
        rankings.append(search(query))
        seconds.append(time.perf_counter() - started)
    index_bytes = sum(f.stat().st_size for f in index_dir.rglob("*") if f.is_file())
    Path(args.out).write_text(json.dumps({
        "rankings": rankings,
        "seconds": seconds,
        "build_seconds": build_seconds,
        "index_bytes": index_bytes,
        "n_tokens": int(offsets[-1]),
        "peak_rss_build_mib": peak_build_kib / 1024,
        "search_settings": {key: getattr(searcher.config, key) for key in ("ncells", "centroid_score_threshold", "ndocs")},
        "torch_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
