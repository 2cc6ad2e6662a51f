"""Fine-tuning MiniLM the ColBERTv2 way on SciFact's judged train queries, negatives mined from a colbert-store index.

    flock /tmp/colbert-bench.lock python -m benchmarks.training [--minutes 30]

The 809 queries judged in ``qrels/train.tsv`` are split by a stable hash of their id (SHA-256; one in five held
out). The untrained encoder is all-MiniLM-L6-v2 as a plain encoder (queries not expanded, documents up to 512
tokens) with the cache's 128-d PCA projection as its linear layer: the model every other SciFact benchmark uses,
so its index is built from the cached document vectors (``benchmarks.scifact_vectors``). Then, in one run:

1. nDCG@10 of the held-out (and training) queries searched through that index, untrained;
2. ``colbert_store.training.train`` on the training queries: negatives mined by the index's own search, no
   teacher (the positives from the qrels), for at most ``--minutes`` of training;
3. ``Retriever.retrain(encoder=tuned)`` re-encodes every stored text with the trained encoder (the new codec
   weighed by sentences of the corpus encoded as queries by it) and records it as the index's encoder;
4. nDCG@10 of the same queries through the rebuilt index.

Writes ``results/training.json`` and prints a table. The model and its training examples (which hold SciFact
text) live in a temporary folder that is deleted at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.lib.beir import BeirDataset, load_beir
from benchmarks.lib.metrics import ndcg_at_k
from benchmarks.lib.paths import RESULTS_DIR, default_data_dir
from benchmarks.lib.report import markdown_table, save_results
from benchmarks.lib.scifact import (
    PSEUDO_QUERIES,
    QRELS_SPLIT,
    QUERY_MAXLEN,
    add_scifact_arguments,
    load_scifact_vectors,
    minilm_path,
)
from colbert_store.adapters.lancedb import LanceDBStore
from colbert_store.encoder import ColBERTEncoder
from colbert_store.pseudo_queries import sample_sentences
from colbert_store.retriever import Retriever
from colbert_store.training import TrainingConfig, TrainingStep, train

K = 10
HELD_OUT_EVERY = 5
"""A query is held out when the SHA-256 of its id, as an integer, is divisible by this (about 20%)."""
DOC_MAXLEN = 512
"""The cache's document length: the index the training starts from is the other benchmarks' index."""


def held_out(query_id: str) -> bool:
    """Whether ``query_id`` belongs to the held-out part (a stable split, independent of order and count).

    >>> [held_out(q) for q in ("0", "1", "2")]
    [True, True, False]
    """
    return int(hashlib.sha256(query_id.encode("utf-8")).hexdigest(), 16) % HELD_OUT_EVERY == 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_scifact_arguments(parser)
    parser.add_argument("--minutes", type=float, default=30.0, help="training time limit (default %(default)s)")
    parser.add_argument("--steps", type=int, default=250, help="optimizer steps planned (the schedule's length)")
    parser.add_argument("--n-way", type=int, default=8, help="passages per group (default %(default)s)")
    parser.add_argument("--depth", type=int, default=50, help="negatives mined per query (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4, help="groups per forward pass (default %(default)s)")
    parser.add_argument("--accumulation", type=int, default=1, help="forward passes per step (default %(default)s)")
    parser.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up steps (default %(default)s)")
    parser.add_argument("--train-doc-maxlen", type=int, default=128, help="passage tokens while training (default %(default)s)")
    parser.add_argument("--frozen-layers", type=int, default=2, help="lowest transformer layers kept (default %(default)s)")
    parser.add_argument("--in-batch-negatives", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--docs", type=int, default=None, help="smoke run: index only the positives and N other documents")
    parser.add_argument("--queries", type=int, default=None, help="smoke run: use N queries of each part")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "training.json")
    args = parser.parse_args(argv)
    config = TrainingConfig(
        n_way=args.n_way, negatives_depth=args.depth, batch_size=args.batch_size, accumulation_steps=args.accumulation,
        steps=args.steps, learning_rate=args.lr, warmup_steps=args.warmup, in_batch_negatives=args.in_batch_negatives,
        frozen_layers=args.frozen_layers, doc_maxlen=args.train_doc_maxlen, max_minutes=args.minutes,
        checkpoint_every=max(1, args.steps // 4),
    )
    dataset = load_beir(args.data or default_data_dir(), QRELS_SPLIT)
    training = [q for q in dataset.query_ids if not held_out(q)][: args.queries]
    testing = [q for q in dataset.query_ids if held_out(q)][: args.queries]
    with tempfile.TemporaryDirectory(prefix="colbert-store-training-") as work:
        results = run(args, config, dataset, training, testing, Path(work))
    rows = [
        [part, results["queries"][part], f"{results['untrained'][part]:.4f}", f"{results['trained'][part]:.4f}",
         f"{results['trained'][part] - results['untrained'][part]:+.4f}"]
        for part in ("held_out", "training")
    ]
    save_results(args.out, results, markdown_table(["queries", "n", "untrained nDCG@10", "trained nDCG@10", "gain"], rows))


def run(
    args: argparse.Namespace, config: TrainingConfig, dataset: BeirDataset, training: list[str], testing: list[str], work: Path
) -> dict[str, Any]:
    """Build the untrained index, measure, train, retrain the index, measure again; return the results."""
    cached = load_scifact_vectors(args.cache, data_dir=args.data)
    base = ColBERTEncoder.from_pretrained(
        minilm_path(), projection=cached.projection, query_maxlen=QUERY_MAXLEN, doc_maxlen=DOC_MAXLEN, show_progress=True
    )
    keep = _documents(dataset, training + testing, args.docs)
    texts = dict(zip(dataset.doc_ids, dataset.doc_texts))
    position = {doc_id: i for i, doc_id in enumerate(cached.doc_ids)}
    timings: dict[str, float] = {}
    started = time.perf_counter()
    retriever = Retriever.create(LanceDBStore(work / "db"), "scifact", base)
    retriever.index.add(
        keep, [np.asarray(cached.doc(position[d]), dtype=np.float32) for d in keep], texts=[texts[d] for d in keep],
        queries=cached.pseudo_query_vectors,
    )
    timings["untrained_index_s"] = time.perf_counter() - started
    queries = dict(zip(dataset.query_ids, dataset.query_texts))
    untrained = _quality(retriever, queries, dataset.qrels, training, testing)
    steps: list[TrainingStep] = []
    started = time.perf_counter()
    tuned = train(
        base, {q: queries[q] for q in training}, index=retriever.index, out=work / "tuned", config=config,
        positives={q: [d for d, score in dataset.qrels[q].items() if score > 0] for q in training}, on_step=steps.append,
    )
    timings["mining_and_training_s"] = time.perf_counter() - started
    timings["training_s"] = steps[-1].seconds if steps else 0.0
    started = time.perf_counter()
    retriever.retrain(sample_sentences([texts[d] for d in keep], PSEUDO_QUERIES, 0), encoder=tuned)
    timings["retrain_s"] = time.perf_counter() - started
    trained = _quality(retriever, queries, dataset.qrels, training, testing)
    return {
        "dataset": "scifact", "qrels_split": QRELS_SPLIT, "documents": len(keep),
        "queries": {"training": len(training), "held_out": len(testing)},
        "split": f"held out: sha256(query id) % {HELD_OUT_EVERY} == 0",
        "untrained": untrained, "trained": trained,
        "gain_held_out": trained["held_out"] - untrained["held_out"],
        "config": config.to_json(), "steps_done": len(steps),
        "loss_first_10": [s.loss for s in steps[:10]], "loss_last_10": [s.loss for s in steps[-10:]],
        "timings_s": timings, "training_minutes": timings["training_s"] / 60,
        "base_encoder": {k: v for k, v in base.identity.items() if k != "name_or_path"},
        "index_encoder_after_retrain_is_trained": retriever.index.settings.encoder is not None
        and retriever.index.settings.encoder["name_or_path"] == os.path.realpath(work / "tuned"),
        "load_average": os.getloadavg(),
        "arguments": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
    }


def _documents(dataset: BeirDataset, query_ids: list[str], limit: int | None) -> list[str]:
    """Every document, or (smoke run) the judged ones of ``query_ids`` and the first ``limit`` others."""
    if limit is None:
        return list(dataset.doc_ids)
    judged = {doc_id for q in query_ids for doc_id in dataset.qrels[q]}
    others = set([doc_id for doc_id in dataset.doc_ids if doc_id not in judged][:limit])
    return [doc_id for doc_id in dataset.doc_ids if doc_id in judged or doc_id in others]


def _quality(retriever: Retriever, queries: dict[str, str], qrels: dict[str, dict[str, int]],
             training: list[str], testing: list[str]) -> dict[str, float]:
    """Mean nDCG@10 of the training and held-out queries searched through ``retriever``."""
    quality = {}
    for part, ids in (("training", training), ("held_out", testing)):
        hits = retriever.search_batch([queries[q] for q in ids], k=K)
        quality[part] = float(np.mean([ndcg_at_k([h.id for h in ranked], qrels[q], K) for q, ranked in zip(ids, hits)]))
    return quality


if __name__ == "__main__":
    main()
