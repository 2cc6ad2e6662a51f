"""How a training run is set up: :class:`TrainingConfig`, validated, saved with the run so a resume checks it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from colbert_store.errors import InvalidInputError
from colbert_store.validation import check_count

PAPER_N_WAY = 64
"""Passages per training group in ColBERTv2 (Santhanam et al., 2022): one highly ranked, the rest lower ranked."""
RUNTIME_FIELDS = ("checkpoint_every", "max_minutes")
"""Fields that only say how a run is carried out; a resumed run may change them."""


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of a training run (ColBERTv2's recipe: hard negatives, n-way groups, optional distillation).

    Attributes:
        n_way: Passages per group: the positive and ``n_way - 1`` negatives drawn from the mined ones.
            ColBERTv2 uses :data:`PAPER_N_WAY` (64) where memory allows; on a CPU 8 to 16 is practical.
        negatives_depth: How many search results per query are mined as negatives (its positives skipped).
        batch_size: Groups per forward pass.
        accumulation_steps: Forward passes whose gradients add up to one optimizer step (effective batch:
            ``batch_size * accumulation_steps`` groups).
        steps: Optimizer steps in all (the learning-rate schedule's length).
        learning_rate: Peak learning rate of AdamW.
        warmup_steps: Steps of linear warm-up; the rate then falls linearly to 0 at ``steps``.
        weight_decay: AdamW's weight decay.
        max_grad_norm: Gradients are clipped to this norm (``None``: not clipped).
        in_batch_negatives: Also score each query against the other groups' passages of its forward pass
            (the cross-entropy then runs over all of them).
        frozen_layers: Keep the embeddings and this many lowest transformer layers as they are, without dropout
            (cheaper steps).
        doc_maxlen: Truncate passages to this many tokens while training (ColBERT trains on shorter passages
            than it indexes); ``None``: the encoder's ``doc_maxlen``, which the saved checkpoint keeps either way.
        checkpoint_every: Save the run's state every this many steps (and at the end), for resuming.
        max_minutes: Stop (after saving) once the run has trained this long; ``None``: run all ``steps``.
        seed: Seed of the data order, the negatives drawn and dropout.
    """

    n_way: int = PAPER_N_WAY
    negatives_depth: int = 100
    batch_size: int = 8
    accumulation_steps: int = 1
    steps: int = 1000
    learning_rate: float = 1e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float | None = 2.0
    in_batch_negatives: bool = False
    frozen_layers: int = 0
    doc_maxlen: int | None = None
    checkpoint_every: int = 100
    max_minutes: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("n_way", "negatives_depth", "batch_size", "accumulation_steps", "steps", "checkpoint_every")
        for name in positive:
            check_count(getattr(self, name), name)
        if self.n_way < 2:
            raise InvalidInputError(f"n_way must be at least 2 (a positive and a negative), got {self.n_way}")
        if self.negatives_depth < self.n_way - 1:
            raise InvalidInputError(
                f"negatives_depth={self.negatives_depth} mines fewer negatives than a group of n_way={self.n_way} needs"
            )
        if self.doc_maxlen is not None and (isinstance(self.doc_maxlen, bool) or not isinstance(self.doc_maxlen, int)
                                            or self.doc_maxlen < 4):
            raise InvalidInputError(f"doc_maxlen must be an integer of at least 4 or None, got {self.doc_maxlen!r}")
        for name in ("warmup_steps", "frozen_layers", "seed"):
            check_count(getattr(self, name), name, allow_zero=True)
        for name in ("learning_rate", "weight_decay", "max_grad_norm", "max_minutes"):
            value = getattr(self, name)
            optional = name in ("max_grad_norm", "max_minutes") and value is None
            if not optional and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0):
                raise InvalidInputError(f"{name} must be a non-negative number, got {value!r}")
        if not self.learning_rate > 0:
            raise InvalidInputError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if not isinstance(self.in_batch_negatives, bool):
            raise InvalidInputError(f"in_batch_negatives must be True or False, got {self.in_batch_negatives!r}")

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON object."""
        return asdict(self)

    def learning_rate_at(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based): linear warm-up, then linear decay to 0.

        >>> config = TrainingConfig(steps=10, warmup_steps=2, learning_rate=1.0)
        >>> [round(config.learning_rate_at(s), 3) for s in (0, 1, 2, 6, 9)]
        [0.5, 1.0, 1.0, 0.5, 0.125]
        """
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / self.warmup_steps
        remaining = self.steps - self.warmup_steps
        return self.learning_rate * (self.steps - step) / remaining if remaining else self.learning_rate
