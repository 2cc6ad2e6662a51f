"""A checkpoint's files: finding its folder (downloading a Hugging Face Hub id when needed), reading its
weights safely and its JSON settings.

Weights are only read through safetensors or ``torch.load(..., weights_only=True)``: no arbitrary object is
ever unpickled, and a weights file holding anything but tensors is refused.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file as load_safetensors

from .errors import ColbertStoreError

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_HUB_METADATA_FILE = re.compile(r".*\.(json|txt|model)$|(^|.*/)artifact\.metadata$")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def resolve_checkpoint_folder(name_or_path: str | os.PathLike[str]) -> Path:
    """Return the local folder of a checkpoint, downloading a Hub model id when needed."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ColbertStoreError(f"model path {text!r} is a file; expected a checkpoint folder")
    if isinstance(name_or_path, os.PathLike) or not _HUB_ID.fullmatch(text):
        raise FileNotFoundError(f"model path {text!r} does not exist")
    return _download_from_hub(text)


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Read a folder's weights safely (safetensors first, else ``torch.load(weights_only=True)``).

    Raises:
        ColbertStoreError: No weights file, a file holding non-tensor objects, or an unreadable file.
    """
    for name in _WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            shards = sorted(set(read_json(path).get("weight_map", {}).values()))
            if not shards:
                raise ColbertStoreError(f"{path} lists no weight shards")
            weights: dict[str, torch.Tensor] = {}
            for shard in shards:
                weights.update(_load_weights_file(folder / shard))
            return weights
        return _load_weights_file(path)
    raise ColbertStoreError(f"no weights in {folder} (expected one of {', '.join(_WEIGHT_FILES)})")


def _load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            return load_safetensors(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ColbertStoreError(f"cannot read safetensors file {path}: {exc}") from exc
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ColbertStoreError(
            f"refusing to load {path}: it holds objects other than tensors and plain containers "
            f"(only weights_only loading is allowed; convert it to safetensors): {exc}"
        ) from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ColbertStoreError(f"cannot read weights file {path}: {exc}") from exc
    if not isinstance(loaded, Mapping):
        raise ColbertStoreError(f"refusing {path}: expected a dict of tensors, found {type(loaded).__name__}")
    bad = [key for key, value in loaded.items() if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if bad:
        raise ColbertStoreError(f"refusing {path}: entries {bad[:5]!r} are not tensors")
    return dict(loaded)


def read_json(path: Path) -> Any:
    """Parse a checkpoint's JSON file, naming the file when it is missing or malformed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ColbertStoreError(f"missing checkpoint file {path}") from exc
    except (OSError, ValueError) as exc:
        raise ColbertStoreError(f"cannot parse {path} as JSON: {exc}") from exc


def _download_from_hub(repo_id: str) -> Path:
    """Download the config, tokenizer and weight files of a Hub model (safetensors preferred per folder)."""
    from huggingface_hub import list_repo_files, snapshot_download

    try:
        files = list_repo_files(repo_id)
        wanted = _select_hub_files(files)
        return Path(snapshot_download(repo_id, allow_patterns=wanted))
    except Exception as exc:  # network, auth and not-found errors all mean "cannot use this name"
        raise ColbertStoreError(
            f"model {repo_id!r} is not a local folder and could not be fetched from the Hugging Face Hub: {exc}"
        ) from exc


def _select_hub_files(files: list[str]) -> list[str]:
    by_folder: dict[str, list[str]] = {}
    for name in files:
        by_folder.setdefault(os.path.dirname(name), []).append(name)
    wanted = [name for name in files if _HUB_METADATA_FILE.fullmatch(name)]
    for names in by_folder.values():
        safetensors = [n for n in names if n.endswith(".safetensors")]
        wanted += safetensors or [n for n in names if n.endswith("pytorch_model.bin") or ".bin.index" in n]
    return wanted
