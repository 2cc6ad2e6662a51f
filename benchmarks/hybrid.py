"""Hybrid search on SciFact train: the store's BM25 alone, colbert-store alone, and the two fused.

    python -m benchmarks.hybrid [--stores lancedb qdrant-edge qdrant] [--queries N]

Per store (LanceDB, Qdrant Edge, qdrant-client's local mode) the whole corpus is indexed with its text
at nbits=2 (the codec trained with the cached pseudo-queries, as in ``benchmarks.systems``), then:

1. sweep (untimed): per query, each leg's top 100 (colbert-store's exact scores, the store's BM25) is
   kept, and every fusion setting of :data:`SWEEP` is applied to them offline, each leg cut to the
   setting's depth: as the library fuses (a document only the lexical leg returned has no dense part),
   and with those documents given their MaxSim over decoded vectors (a second exact pass);
2. timed: for each query in turn, BM25 alone (``store.text_search``), colbert-store alone, hybrid with
   reciprocal-rank fusion and hybrid with the weighted sum (the library's default settings for each),
   after 50 untimed rounds; nDCG@10 and p50/p95 latency of each.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

import colbert_store as cs
from benchmarks.lib.beir import load_beir
from benchmarks.lib.data import SCIFACT_INDEX, open_store
from benchmarks.lib.metrics import ndcg_at_k
from benchmarks.lib.paths import RESULTS_DIR, default_data_dir
from benchmarks.lib.report import markdown_table, save_results
from benchmarks.lib.scifact import QRELS_SPLIT, add_scifact_arguments, load_scifact_vectors
from benchmarks.lib.timing import WARMUP, latency_summary, use_search_threads
from colbert_store.fusion import Fusion, fuse
from colbert_store.maxsim import maxsim

K = 10
DEPTH = 100
SWEEP = (
    [Fusion("rrf", rrf_k=rrf_k) for rrf_k in (5, 10, 20, 40, 60, 100)]
    + [Fusion("weighted", weight=weight) for weight in (0.2, 0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9)]
    + [Fusion("rrf", depth=depth) for depth in (20, 50)]
    + [Fusion("weighted", weight=weight, depth=depth) for weight in (0.6, 0.7) for depth in (20, 50)]
)
SYSTEMS = ("BM25 (store)", "colbert-store", "hybrid rrf", "hybrid weighted")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_scifact_arguments(parser)
    parser.add_argument("--stores", nargs="+", default=["lancedb", "qdrant-edge", "qdrant"],
                        choices=["lancedb", "qdrant-edge", "qdrant"])
    parser.add_argument("--queries", type=int, default=None, help="evaluate the first N judged queries (default all)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "hybrid.json")
    args = parser.parse_args(argv)
    use_search_threads()
    vectors = load_scifact_vectors(args.cache, data_dir=args.data)
    dataset = load_beir(args.data or default_data_dir(), QRELS_SPLIT)
    text_of = dict(zip(dataset.doc_ids, dataset.doc_texts))
    query_text = dict(zip(dataset.query_ids, dataset.query_texts))
    n = args.queries or len(vectors.query_ids)
    corpus = Corpus(vectors, [text_of[doc] for doc in vectors.doc_ids], vectors.queries()[:n],
                    [query_text[query] for query in vectors.query_ids[:n]], vectors.query_ids[:n])
    stores = {}
    for kind in args.stores:
        with tempfile.TemporaryDirectory() as folder:
            stores[kind] = run_store(kind, Path(folder), corpus)
        print(kind, {system: round(row["ndcg_at_10"], 4) for system, row in stores[kind]["systems"].items()}, flush=True)
    rows = [[kind, system, f"{row['ndcg_at_10']:.4f}", f"{row['p50_ms']:.1f}", f"{row['p95_ms']:.1f}"]
            for kind, result in stores.items() for system, row in result["systems"].items()]
    table = markdown_table(["store", "system", "nDCG@10", "p50 ms", "p95 ms"], rows)
    save_results(args.out, {"queries": n, "k": K, "depth": DEPTH, "defaults": {
        method: asdict(Fusion(method)) for method in ("rrf", "weighted")}, "stores": stores}, table)


class Corpus:
    """SciFact as the benchmark uses it: cached vectors, texts aligned with them, judged queries."""

    def __init__(self, vectors: Any, texts: list[str], queries: list[np.ndarray], query_texts: list[str],
                 query_ids: list[str]) -> None:
        self.vectors, self.texts, self.queries, self.query_texts, self.query_ids = (
            vectors, texts, queries, query_texts, query_ids)

    def ndcg(self, rankings: list[list[str]]) -> float:
        return float(np.mean([ndcg_at_k(ranking, self.vectors.qrels[query], K)
                              for ranking, query in zip(rankings, self.query_ids)]))


def run_store(kind: str, folder: Path, corpus: Corpus) -> dict[str, Any]:
    """Build the index on store ``kind`` in ``folder``, then the sweep and the timed pass."""
    store = open_store(kind, folder)
    started = time.perf_counter()
    index = cs.Index.create(store, SCIFACT_INDEX, dim=corpus.vectors.dim, nbits=2)
    index.add(corpus.vectors.doc_ids, corpus.vectors.docs(), texts=corpus.texts,
              queries=corpus.vectors.pseudo_query_vectors)
    build_seconds = time.perf_counter() - started
    if kind == "lancedb":
        store.optimize(SCIFACT_INDEX, cleanup_older_than=timedelta(0))
    elif kind == "qdrant-edge":
        store.optimize()
    index.warm()
    names = {int(rev): doc for batch in index.documents() for rev, doc in zip(batch.revisions, batch.ids)}
    sweep = run_sweep(index, store, names, corpus)
    systems = run_timed(index, store, names, corpus)
    store.close()
    return {"build_seconds": build_seconds, "sweep": sweep, "systems": systems}


def run_sweep(index: cs.Index, store: cs.Store, names: dict[int, str], corpus: Corpus) -> list[dict[str, Any]]:
    """nDCG@10 of every :data:`SWEEP` setting, fused offline from each query's two legs: as the library
    fuses (a document only the lexical leg returned has no dense score), and with those documents scored
    by MaxSim over their decoded vectors (what a second exact pass would give)."""
    assert index.codec is not None
    legs = []
    for query, text in zip(corpus.queries, corpus.query_texts):
        dense = {hit.id: hit.score for hit in index.search(query, k=DEPTH)}
        revisions, scores = store.text_search(SCIFACT_INDEX, text, DEPTH, None)
        lexical = dict(zip((names[int(rev)] for rev in revisions), scores.tolist()))
        only_lexical = store.fetch(SCIFACT_INDEX, revisions[[names[int(rev)] not in dense for rev in revisions]])
        vectors = index.codec.decompress(only_lexical.centroid_ids, only_lexical.residuals)
        rescored = dict(zip(only_lexical.ids, maxsim(query, vectors, only_lexical.token_offsets).tolist()))
        legs.append((dense, lexical, rescored))
    points = []
    for fusion in SWEEP:
        point: dict[str, Any] = asdict(fusion)
        for label, rescore in (("ndcg_at_10", False), ("ndcg_at_10_lexical_rescored", True)):
            rankings = []
            for dense, lexical, rescored in legs:
                dense_top = dict(list(dense.items())[: fusion.depth])
                lexical_top = dict(list(lexical.items())[: fusion.depth])
                ids = list(dense_top.keys() | lexical_top.keys())
                dense_scores = [dense_top.get(doc, rescored.get(doc, np.nan) if rescore else np.nan) for doc in ids]
                order, _ = fuse(np.array(dense_scores), np.array([lexical_top.get(doc, np.nan) for doc in ids]), fusion)
                rankings.append([ids[i] for i in order[:K]])
            point[label] = corpus.ndcg(rankings)
        points.append(point)
        print(point, flush=True)
    return points


def run_timed(index: cs.Index, store: cs.Store, names: dict[int, str], corpus: Corpus) -> dict[str, dict[str, Any]]:
    """The four systems, taking turns query by query, each with the library's defaults."""
    searches = {
        SYSTEMS[0]: lambda query, text: [names[int(rev)] for rev in store.text_search(SCIFACT_INDEX, text, K, None)[0]],
        SYSTEMS[1]: lambda query, text: [hit.id for hit in index.search(query, k=K)],
        SYSTEMS[2]: lambda query, text: [hit.id for hit in index.search(query, k=K, text=text, fusion="rrf")],
        SYSTEMS[3]: lambda query, text: [hit.id for hit in index.search(query, k=K, text=text, fusion="weighted")],
    }
    pairs = list(zip(corpus.queries, corpus.query_texts))
    for query, text in pairs[:WARMUP]:
        for search in searches.values():
            search(query, text)
    rankings: dict[str, list[list[str]]] = {system: [] for system in searches}
    seconds: dict[str, list[float]] = {system: [] for system in searches}
    for query, text in pairs:
        for system, search in searches.items():
            started = time.perf_counter()
            rankings[system].append(search(query, text))
            seconds[system].append(time.perf_counter() - started)
    return {system: {"ndcg_at_10": corpus.ndcg(rankings[system]), **latency_summary(seconds[system])} for system in searches}


if __name__ == "__main__":
    main()
