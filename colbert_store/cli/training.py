"""The ``train`` command: fine-tune the index's encoder on judged queries, negatives mined from the index."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from colbert_store.cli.commands import parse_filter
from colbert_store.cli.resources import load_encoder, open_index, opened_store
from colbert_store.cli.sources import open_judged_queries

CONFIG_OPTIONS = (
    "n_way", "negatives_depth", "batch_size", "accumulation_steps", "steps", "learning_rate", "warmup_steps",
    "in_batch_negatives", "frozen_layers", "doc_maxlen", "checkpoint_every", "max_minutes", "seed",
)
"""The ``TrainingConfig`` fields the command line sets (under the same names, dashed); unset ones keep its defaults."""


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that set :class:`~colbert_store.training.TrainingConfig` fields (see its docstring)."""
    group = parser.add_argument_group("training settings (defaults: colbert_store.training.TrainingConfig's)")
    for name, kind, text in (
        ("n_way", int, "passages per group: the positive and N-1 negatives (ColBERTv2: 64)"),
        ("negatives_depth", int, "search results mined per query as negatives"),
        ("batch_size", int, "groups per forward pass"),
        ("accumulation_steps", int, "forward passes per optimizer step"),
        ("steps", int, "optimizer steps"),
        ("learning_rate", float, "peak learning rate"),
        ("warmup_steps", int, "steps of linear warm-up"),
        ("frozen_layers", int, "keep the embeddings and the N lowest transformer layers as they are"),
        ("doc_maxlen", int, "passage tokens while training (the saved model keeps the encoder's)"),
        ("checkpoint_every", int, "save the run's state every N steps, to resume after a kill"),
        ("max_minutes", float, "stop (after saving) after training this long"),
        ("seed", int, "seed of the data order, negatives and dropout"),
    ):
        group.add_argument(f"--{name.replace('_', '-')}", type=kind, metavar="N" if kind is int else "X", help=text)
    group.add_argument("--in-batch-negatives", action=argparse.BooleanOptionalAction,
                       help="also score each query against the other groups' passages")


def cmd_train(args: argparse.Namespace) -> int:
    """``colbert-store train``: fine-tune the index's encoder and save it to ``--out``."""
    from colbert_store.training import TrainingConfig, train

    where = parse_filter(args.filter)
    config = TrainingConfig(**{name: getattr(args, name) for name in CONFIG_OPTIONS if getattr(args, name) is not None})
    queries, positives = open_judged_queries(Path(args.source), args.qrels, args.split)
    started = time.perf_counter()
    with opened_store(args.store, args.backend, must_exist=True) as store:
        index = open_index(store, args.name, args.store)
        encoder = load_encoder(args.model, index.settings.encoder, None, show_progress=None)
        train(encoder, queries, index=index, positives=positives, out=args.out, teacher=args.teacher, filter=where,
              config=config)
    print(f"trained on {len(queries)} queries in {time.perf_counter() - started:.1f} s; the model is in {args.out}. "
          f"Re-encode the index with it: colbert-store retrain --store {args.store} --name {args.name} --model {args.out}")
    return 0

