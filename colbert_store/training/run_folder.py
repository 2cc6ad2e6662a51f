"""A training run's folder: its settings and examples, and the checkpoints it resumes from after a kill.

Layout under ``OUT/training``: ``run.json`` (settings, the base encoder's identity), ``examples.json`` (the groups'
queries and passages, teacher scores included) and ``step-NNNNNNNN/`` holding the latest checkpoint: the modules'
weights (``network.safetensors``), the optimizer's state and the random generator's (``optimizer.pt``, read back
with ``torch.load(weights_only=True)``: never unpickled) and ``progress.json``. A checkpoint is written to a
``.partial`` folder and renamed, so a kill leaves either the previous checkpoint or the new one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from colbert_store.errors import InvalidInputError
from colbert_store.training.config import RUNTIME_FIELDS, TrainingConfig
from colbert_store.training.examples import TrainingExample

logger = logging.getLogger(__name__)

RUN_FORMAT = 1
_STEP_PREFIX = "step-"
_PARTIAL = ".partial"


class RunFolder:
    """The state of one training run under ``out/training``.

    Args:
        out: The run's output folder (the trained checkpoint goes there; the state under ``training/``).
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(out)
        self.folder = self.out / "training"

    def saved_examples(self) -> list[TrainingExample] | None:
        """The examples of a run begun here, or ``None`` when no run was begun."""
        path = self.folder / "examples.json"
        if not (self.folder / "run.json").is_file():
            return None
        return [TrainingExample.from_json(values) for values in json.loads(path.read_text(encoding="utf-8"))]

    def begin(self, config: TrainingConfig, base: Mapping[str, Any], examples: Sequence[TrainingExample]) -> None:
        """Record a new run, or check that the run begun here had the same settings, base encoder and examples.

        Raises:
            InvalidInputError: ``out`` holds a run with other settings, another base encoder or other examples.
        """
        described = {"format": RUN_FORMAT, "config": _lasting(config.to_json()), "base_encoder": dict(base)}
        run_path = self.folder / "run.json"
        if run_path.is_file():
            recorded = json.loads(run_path.read_text(encoding="utf-8"))
            differing = sorted(key for key in set(recorded) | set(described) if recorded.get(key) != described.get(key))
            saved = self.saved_examples()
            if saved != list(examples):
                differing.append("examples")
            if differing:
                raise InvalidInputError(
                    f"{str(self.out)!r} holds a training run with other {', '.join(differing)}; resume it with the same "
                    "settings or choose another output folder"
                )
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_json(self.folder / "examples.json", [example.to_json() for example in examples])
        _write_json(run_path, described)

    def latest_step(self) -> int:
        """The step of the latest complete checkpoint (0: none), removing any partly written one."""
        steps = []
        for path in self.folder.glob(f"{_STEP_PREFIX}*"):
            if path.name.endswith(_PARTIAL):
                shutil.rmtree(path)
            else:
                steps.append(int(path.name[len(_STEP_PREFIX) :]))
        return max(steps, default=0)

    def restore(self, step: int, network: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Load checkpoint ``step`` into ``network`` and ``optimizer``, and set torch's random generator as it was."""
        folder = self._step_folder(step)
        load_model(network, str(folder / "network.safetensors"), device=str(next(network.parameters()).device))
        state = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        logger.info("resuming the training run in %s from step %d", self.out, step)

    def save(self, step: int, network: torch.nn.Module, optimizer: torch.optim.Optimizer, progress: Mapping[str, Any]) -> None:
        """Write checkpoint ``step`` (atomically, by renaming its folder) and remove the older ones."""
        final = self._step_folder(step)
        partial = final.with_name(final.name + _PARTIAL)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        save_model(network, str(partial / "network.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}, partial / "optimizer.pt")
        _write_json(partial / "progress.json", {"step": step, **progress})
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for path in self.folder.glob(f"{_STEP_PREFIX}*"):
            if path != final and not path.name.endswith(_PARTIAL):
                shutil.rmtree(path)

    def _step_folder(self, step: int) -> Path:
        return self.folder / f"{_STEP_PREFIX}{step:08d}"


def _lasting(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that must stay the same when a run is resumed."""
    return {key: value for key, value in config.items() if key not in RUNTIME_FIELDS}


def _write_json(path: Path, value: Any) -> None:
    partial = path.with_name(path.name + _PARTIAL)
    partial.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    os.replace(partial, path)
