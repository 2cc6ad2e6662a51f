"""The training loop: n-way groups scored by the student's MaxSim, cross-entropy on the positive plus, with a teacher,
KL(teacher || student) over each group (ColBERTv2's losses, Santhanam et al., 2022); gradient accumulation,
checkpoints every N steps and a resume that reaches the same weights as an uninterrupted run."""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from colbert_store.encoder import ColBERTEncoder
from colbert_store.errors import InvalidInputError
from colbert_store.maxsim import grouped_maxsim
from colbert_store.retriever import recorded_identity
from colbert_store.training.checkpoint import save_checkpoint
from colbert_store.training.config import TrainingConfig
from colbert_store.training.examples import TrainingExample
from colbert_store.training.run_folder import RunFolder

logger = logging.getLogger(__name__)

_QUOTED = 5


@dataclass(frozen=True)
class TrainingStep:
    """One optimizer step, as reported to ``on_step``.

    Attributes:
        step: Steps completed (1 after the first).
        loss: The step's loss (mean over its forward passes).
        learning_rate: The learning rate it used.
        seconds: Time since this call began training.
    """

    step: int
    loss: float
    learning_rate: float
    seconds: float


Group = tuple[TrainingExample, np.ndarray]
"""An example and the rows of its passages that make one group (the positive, row 0, first)."""


def check_examples(examples: Sequence[TrainingExample], config: TrainingConfig) -> list[TrainingExample]:
    """The examples as a list, after checking that each makes a full group.

    Raises:
        InvalidInputError: No examples, an empty group (no negative), fewer negatives than ``n_way - 1``,
            misaligned passages, or teacher scores on some examples only.
    """
    listed = list(examples)
    if not listed:
        raise InvalidInputError("no training examples")
    misaligned = [e.query_id for e in listed if len(e.passage_ids) != len(e.passages) or not e.passage_ids]
    if misaligned:
        raise InvalidInputError(f"examples of queries {misaligned[:_QUOTED]} have passage ids and texts of different lengths")
    empty = list(dict.fromkeys(e.query_id for e in listed if e.n_negatives == 0))
    if empty:
        raise InvalidInputError(
            f"the training groups of {len(empty)} queries are empty (no negative passage: every search result was a "
            f"positive, or the filter left none), e.g. {empty[:_QUOTED]}"
        )
    short = list(dict.fromkeys(f"{e.query_id!r} ({e.n_negatives})" for e in listed if e.n_negatives < config.n_way - 1))
    if short:
        raise InvalidInputError(
            f"{len(short)} queries have fewer negatives than a group of n_way={config.n_way} needs ({config.n_way - 1}), "
            f"e.g. {', '.join(short[:_QUOTED])}: lower n_way or mine deeper"
        )
    if len({e.teacher_scores is None for e in listed}) > 1:
        raise InvalidInputError("some examples have teacher scores and others not")
    return listed


def fit(
    encoder: ColBERTEncoder,
    examples: Sequence[TrainingExample],
    out: str | os.PathLike[str],
    *,
    config: TrainingConfig | None = None,
    on_step: Callable[[TrainingStep], None] | None = None,
    show_progress: bool | None = None,
) -> ColBERTEncoder:
    """Fine-tune a copy of ``encoder`` on ``examples``; save it to ``out`` and return it loaded from there.

    A run begun in ``out`` before (killed, or stopped by ``max_minutes``) resumes from its latest checkpoint and
    ends with the weights an uninterrupted run would have (on the CPU, bit for bit). ``encoder`` is left as it was;
    torch's global random generator too (dropout draws from a forked one, seeded by ``config.seed``).

    Args:
        encoder: The encoder to start from.
        examples: Training groups (see :func:`colbert_store.training.examples.mine_examples`).
        out: Folder of the trained checkpoint (Stanford ColBERT layout) and of the run's state (``training/``).
        config: The recipe's settings; ``None``: the defaults.
        on_step: Called after every optimizer step (after its checkpoint, if one was due).
        show_progress: The progress bar on or off; ``None`` shows it.

    Returns:
        The trained encoder, loaded from ``out`` by :meth:`ColBERTEncoder.from_pretrained` (so its identity names
        ``out``).

    Raises:
        InvalidInputError: Bad examples (see :func:`check_examples`), a ``frozen_layers`` the model does not have,
            or ``out`` holding a run with other settings.
    """
    config = config or TrainingConfig()
    listed = check_examples(examples, config)
    run = RunFolder(out)
    base = recorded_identity(encoder)
    student = copy.deepcopy(encoder)
    if config.doc_maxlen is not None:
        student.checkpoint.doc_maxlen = min(config.doc_maxlen, encoder.doc_maxlen)
    network = student.network
    frozen = _frozen_modules(network["model"], config.frozen_layers)
    run.begin(config, base, listed)
    parameters = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    sampler = GroupSampler(listed, config)
    started = time.monotonic()
    with torch.random.fork_rng(devices=[]):
        step = run.latest_step()
        if step:
            run.restore(step, network, optimizer)
        else:
            torch.manual_seed(config.seed)
        network.train()
        for module in frozen:
            module.eval()
        with tqdm(total=config.steps, initial=step, desc="Training", unit="step", disable=show_progress is False) as bar:
            while step < config.steps:
                rate = config.learning_rate_at(step)
                for group in optimizer.param_groups:
                    group["lr"] = rate
                loss = 0.0
                for micro in range(config.accumulation_steps):
                    value = _loss(student, sampler.batch(step * config.accumulation_steps + micro), config)
                    (value / config.accumulation_steps).backward()
                    loss += value.item() / config.accumulation_steps
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                seconds = time.monotonic() - started
                out_of_time = config.max_minutes is not None and seconds >= 60 * config.max_minutes
                if step % config.checkpoint_every == 0 or step == config.steps or out_of_time:
                    run.save(step, network, optimizer, {"loss": loss, "seconds": seconds})
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if on_step is not None:
                    on_step(TrainingStep(step, loss, rate, seconds))
                if out_of_time:
                    logger.warning("stopped after %d of %d steps: max_minutes=%s reached", step, config.steps, config.max_minutes)
                    break
    network.eval()
    student.checkpoint.doc_maxlen = encoder.doc_maxlen
    provenance = {"base_encoder": base, "config": config.to_json(), "steps_done": step, "examples": len(listed)}
    save_checkpoint(student, out, extra={"colbert_store_training": provenance})
    return ColBERTEncoder.from_pretrained(out, str(encoder.device))


class GroupSampler:
    """The groups of each forward pass, rebuilt from the pass's number alone (so a resume needs no sampler state).

    The examples run in a seeded random order per epoch; a group's negatives are drawn without replacement from
    its example's mined negatives by a generator seeded by the group's position in that stream.
    """

    def __init__(self, examples: Sequence[TrainingExample], config: TrainingConfig) -> None:
        self._examples = examples
        self._config = config
        self._epoch, self._order = -1, np.arange(0)

    def batch(self, number: int) -> list[Group]:
        """The groups of forward pass ``number`` (0-based)."""
        size, n_way, seed = self._config.batch_size, self._config.n_way, self._config.seed
        groups = []
        for position in range(number * size, (number + 1) * size):
            epoch, offset = divmod(position, len(self._examples))
            if epoch != self._epoch:
                self._epoch, self._order = epoch, np.random.default_rng([seed, epoch]).permutation(len(self._examples))
            example = self._examples[int(self._order[offset])]
            chosen = np.random.default_rng([seed, epoch, position]).choice(example.n_negatives, n_way - 1, replace=False)
            groups.append((example, np.concatenate([[0], 1 + chosen])))
        return groups


def _loss(student: ColBERTEncoder, groups: list[Group], config: TrainingConfig) -> torch.Tensor:
    """Cross-entropy on each group's positive (over every passage of the pass with in-batch negatives), plus
    KL(teacher || student) over the group where the examples carry teacher scores."""
    size, n_way = len(groups), config.n_way
    queries, query_mask = student.token_vectors([example.query for example, _ in groups], is_query=True)
    docs, doc_mask = student.token_vectors([example.passages[row] for example, rows in groups for row in rows], is_query=False)
    docs, doc_mask = docs.view(size, n_way, *docs.shape[1:]), doc_mask.view(size, n_way, -1)
    each = torch.arange(size, device=queries.device)
    if config.in_batch_negatives:
        flat, flat_mask = docs.flatten(0, 1)[None], doc_mask.flatten(0, 1)[None]
        scores = grouped_maxsim(queries, query_mask, flat.expand(size, -1, -1, -1), flat_mask.expand(size, -1, -1))
        own, target = scores.view(size, size, n_way)[each, each], each * n_way
    else:
        scores = own = grouped_maxsim(queries, query_mask, docs, doc_mask)
        target = torch.zeros_like(each)
    loss = F.cross_entropy(scores, target)
    teacher = [np.asarray(example.teacher_scores)[rows] for example, rows in groups if example.teacher_scores is not None]
    if teacher:
        targets = torch.as_tensor(np.stack(teacher), dtype=own.dtype, device=own.device)
        loss = loss + F.kl_div(F.log_softmax(own, dim=-1), F.log_softmax(targets, dim=-1), log_target=True, reduction="batchmean")
    return loss


def _frozen_modules(model: Any, layers: int) -> list[torch.nn.Module]:
    """Freeze the embeddings and the ``layers`` lowest transformer layers of ``model``; return those modules."""
    if not layers:
        return []
    count = int(getattr(model.config, "num_hidden_layers", 0))
    blocks = next((m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == count), None)
    if blocks is None or layers > count:
        raise InvalidInputError(f"frozen_layers={layers}, but the model has {count} transformer layers")
    embeddings = getattr(model, "embeddings", None) or model.get_input_embeddings()
    frozen = [embeddings, *list(blocks)[:layers]]
    for module in frozen:
        module.requires_grad_(False)
    return frozen
