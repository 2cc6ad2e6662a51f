"""A cross-encoder teacher: any transformers sequence-classification model that scores (query, passage) pairs.

ColBERTv2 distils such a teacher's scores into the student (Santhanam et al., 2022): every training group's
passages are scored once, before training, and the student learns to match their distribution over the group.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import (
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
    AutoConfig,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from colbert_store.checkpoint_files import load_weights
from colbert_store.checkpoints import quiet_transformers
from colbert_store.errors import ColbertStoreError, InvalidInputError
from colbert_store.training.examples import TrainingExample


class CrossEncoderTeacher:
    """Scores (query, passage) pairs with a sequence-classification model (one logit, or two: positive minus negative).

    Build it with :meth:`from_pretrained`.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, name: str, batch_size: int = 32) -> None:
        self._model = model.eval()
        self._tokenizer = tokenizer
        self._name = name
        self._batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], device: str | torch.device = "cpu", *, batch_size: int = 32
    ) -> CrossEncoderTeacher:
        """Load a cross-encoder from a local transformers folder (weights read safely, never unpickled).

        Raises:
            InvalidInputError: ``path`` is not a folder, or holds no sequence-classification model with one or
                two labels and all its weights.
        """
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise InvalidInputError(f"teacher {os.fspath(path)!r} is not a folder holding a cross-encoder")
        try:
            config = AutoConfig.from_pretrained(folder)
        except (OSError, ValueError) as error:
            raise InvalidInputError(f"teacher {str(folder)!r} has no readable transformers config: {error}") from error
        architectures = list(config.architectures or [])
        model_class: Any = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING.get(type(config), None)
        if model_class is None or not any(name.endswith("ForSequenceClassification") for name in architectures):
            raise InvalidInputError(
                f"teacher {str(folder)!r} is not a cross-encoder: its config names {architectures or 'no architecture'}, "
                "not a ...ForSequenceClassification model"
            )
        if config.num_labels not in (1, 2):
            raise InvalidInputError(f"teacher {str(folder)!r} has {config.num_labels} labels; a cross-encoder has 1 (or 2)")
        try:
            with quiet_transformers():
                model, info = model_class.from_pretrained(
                    None, config=config, state_dict=load_weights(folder), dtype=torch.float32, output_loading_info=True
                )
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError, ColbertStoreError) as error:
            raise InvalidInputError(f"cannot load teacher {str(folder)!r}: {error}") from error
        if info["missing_keys"]:
            raise InvalidInputError(
                f"teacher {str(folder)!r} lacks trained weights for {sorted(info['missing_keys'])[:5]}: not a cross-encoder"
            )
        return cls(model.to(device), tokenizer, name=str(folder), batch_size=batch_size)

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """The teacher's score of each ``(query, passage)`` pair, float32."""
        scores = []
        device = next(self._model.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(passages), self._batch_size):
                chunk = list(passages[start : start + self._batch_size])
                inputs = self._tokenizer([query] * len(chunk), chunk, truncation=True, padding=True, return_tensors="pt")
                logits = self._model(**inputs.to(device)).logits.float()
                scores.append(logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0])
        return torch.cat(scores).cpu().numpy()

    def score_examples(self, examples: Sequence[TrainingExample], *, show_progress: bool | None = None) -> list[TrainingExample]:
        """Copies of ``examples`` holding this teacher's score of each of their passages."""
        bar = tqdm(examples, desc="Teacher scoring", unit="query", disable=show_progress is False)
        return [example.with_teacher_scores(self.score(example.query, example.passages)) for example in bar]

    def __repr__(self) -> str:
        return f"CrossEncoderTeacher({self._name!r})"
