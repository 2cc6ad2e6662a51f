"""Fine-tune a ColBERT encoder the ColBERTv2 way (Santhanam et al., 2022) on your own queries, with hard negatives
mined by colbert-store's search over your own index.

Needs the ``train`` extra (torch and transformers). The recipe, each step usable on its own:

1. :func:`mine_examples`: encode the training queries, search the index (your filter applied) and keep the top
   results that are not the query's positives as hard negatives;
2. optionally :class:`CrossEncoderTeacher`: score every (query, passage) pair with a cross-encoder;
3. :func:`fit`: train on n-way groups (a positive and ``n_way - 1`` sampled negatives) with cross-entropy on the
   positive, plus KL(teacher || student) over the group when there are teacher scores; checkpoints every N steps,
   resumed after a kill;
4. :func:`save_checkpoint` writes the result in the Stanford ColBERT layout, which
   :meth:`ColBERTEncoder.from_pretrained` loads like any pretrained checkpoint.

Example::

    from colbert_store.training import TrainingConfig, train

    tuned = train(encoder, {"q1": "what causes inflation?"}, index=retriever.index, positives={"q1": ["doc-7"]},
                  out="./tuned", config=TrainingConfig(n_way=16, steps=500, learning_rate=2e-5))
    retriever.retrain(encoder=tuned)   # re-encode the index with it; the index records the new encoder
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from colbert_store._optional import require

require("transformers", "train")

from colbert_store.errors import InvalidInputError  # noqa: E402
from colbert_store.training.checkpoint import save_checkpoint  # noqa: E402
from colbert_store.training.config import PAPER_N_WAY, TrainingConfig  # noqa: E402
from colbert_store.training.examples import TrainingExample, mine_examples  # noqa: E402
from colbert_store.training.loop import TrainingStep, check_examples, fit  # noqa: E402
from colbert_store.training.run_folder import RunFolder  # noqa: E402
from colbert_store.training.teacher import CrossEncoderTeacher  # noqa: E402

if TYPE_CHECKING:
    from colbert_store.encoder import ColBERTEncoder
    from colbert_store.index import Index

__all__ = [
    "PAPER_N_WAY",
    "CrossEncoderTeacher",
    "TrainingConfig",
    "TrainingExample",
    "TrainingStep",
    "fit",
    "mine_examples",
    "save_checkpoint",
    "train",
]


def train(
    encoder: ColBERTEncoder,
    queries: Mapping[str, str],
    *,
    index: Index,
    positives: Mapping[str, Collection[str]],
    out: str | os.PathLike[str],
    teacher: str | os.PathLike[str] | None = None,
    filter: Mapping[str, Any] | None = None,
    config: TrainingConfig | None = None,
    on_step: Callable[[TrainingStep], None] | None = None,
    show_progress: bool | None = None,
) -> ColBERTEncoder:
    """Fine-tune ``encoder`` on judged queries, with hard negatives mined from ``index`` (which it built).

    Every input is checked before training starts. Called again with the same ``out`` after a kill, it resumes
    the run from its latest checkpoint, with the examples mined the first time.

    Args:
        encoder: The encoder to start from: the one whose vectors ``index`` holds. It is left unchanged.
        queries: Training query id -> text.
        positives: Query id -> ids of its relevant documents in ``index`` (e.g. qrels with a positive score).
        index: The index to mine negatives from; it must hold the positives, with texts.
        out: Folder of the trained checkpoint and of the run's state.
        teacher: Folder of a transformers sequence-classification cross-encoder whose scores the student learns
            to match (KL over each group); ``None``: the positives alone teach.
        filter: Metadata filter for the mining searches.
        config: The recipe's settings (group size, batch, steps, learning rate, ...); ``None``: the defaults.
        on_step: Called after every optimizer step with a :class:`TrainingStep`.
        show_progress: Progress bars on or off; ``None`` shows them.

    Returns:
        The trained encoder, loaded from ``out``; re-encode the index with it by
        ``Retriever.retrain(encoder=...)`` (or ``colbert-store retrain --model OUT``).

    Raises:
        InvalidInputError: A query without a positive, a positive the index does not hold, an empty or short
            group, a teacher that is not a cross-encoder, or ``out`` holding another run.
        IncompatibleIndexError: ``encoder`` is not the encoder ``index`` records.
    """
    config = config or TrainingConfig()
    examples = RunFolder(out).saved_examples()
    if examples is None:
        judge = None if teacher is None else CrossEncoderTeacher.from_pretrained(teacher, encoder.device)
        mined = mine_examples(encoder, queries, positives, index, depth=config.negatives_depth, filter=filter)
        check_examples(mined, config)
        examples = mined if judge is None else judge.score_examples(mined, show_progress=show_progress)
    elif (teacher is None) != (examples[0].teacher_scores is None):
        kind = "without" if teacher else "with"
        raise InvalidInputError(f"{os.fspath(out)!r} holds a run {kind} a teacher; resume it the same way")
    return fit(encoder, examples, out, config=config, on_step=on_step, show_progress=show_progress)
