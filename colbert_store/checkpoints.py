"""Loading ColBERT checkpoints from disk (or the Hugging Face Hub) in three layouts.

The layout is detected from the files in the checkpoint folder:

``stanford``
    The ``colbert-ir/colbertv2.0`` layout: a BERT ``config.json``, weights whose BERT part sits under the
    ``bert.`` prefix next to a bias-free ``linear.weight`` projection, tokenizer files and an
    ``artifact.metadata`` JSON file (markers, lengths, ``mask_punctuation``, ``attend_to_mask_tokens``, and
    ``query_expansion`` where a checkpoint saved by :mod:`colbert_store.training` turns it off; a ``null`` marker
    means none).
``pylate``
    A PyLate / sentence-transformers ColBERT: ``modules.json`` listing a Transformer module and one or more
    Dense modules, plus ``config_sentence_transformers.json`` (prefixes, lengths, skiplist).
``plain``
    Any other transformers encoder (a ``modules.json`` without a Dense module counts as plain). Defaults:
    no marker tokens, ``query_maxlen`` 32, ``doc_maxlen`` ``min(512, usable model positions)``, no query
    expansion (the model never learned to use ``[MASK]`` slots), punctuation dropped from documents (as
    ColBERT's ``mask_punctuation``).

Query expansion (padding every query with ``[MASK]`` to ``query_maxlen`` and keeping those vectors) is a
ColBERT training device: on by default for Stanford checkpoints (unless ``artifact.metadata`` says otherwise), as
PyLate's ``do_query_expansion`` says (default on) for PyLate models, and off for plain encoders.

Finding the folder and reading its weights and JSON files is :mod:`colbert_store.checkpoint_files`'s job
(weights are never unpickled).
"""

from __future__ import annotations

import contextlib
import logging
import os
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from transformers import MODEL_MAPPING, AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from .checkpoint_files import load_weights, read_json, resolve_checkpoint_folder
from .errors import ColbertStoreError

logger = logging.getLogger(__name__)

Layout = Literal["stanford", "pylate", "plain"]

DEFAULT_QUERY_MAXLEN = 32
"""Query length (tokens, markers and ``[MASK]`` expansion included) when the checkpoint does not say."""
STANFORD_DEFAULT_DOC_MAXLEN = 180
"""ColBERT's own ``doc_maxlen`` default, used when ``artifact.metadata`` lacks it."""
PYLATE_DEFAULT_DOC_MAXLEN = 180
"""PyLate's ``document_length`` default, used when ``config_sentence_transformers.json`` lacks it."""
PLAIN_MAX_DOC_MAXLEN = 512
"""Upper bound of the plain layout's default ``doc_maxlen`` (also bounded by the model's positions)."""

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "torch.nn.modules.linear.Identity": nn.Identity,
    "torch.nn.modules.activation.Tanh": nn.Tanh,
    "torch.nn.modules.activation.ReLU": nn.ReLU,
    "torch.nn.modules.activation.GELU": nn.GELU,
    "torch.nn.modules.activation.Sigmoid": nn.Sigmoid,
}


class DenseLayer(nn.Module):
    """A token-wise projection ``activation(x @ W.T + b)`` (+ optional residual), as PyLate's Dense module.

    Args:
        weight: ``(out_features, in_features)`` matrix.
        bias: Optional ``(out_features,)`` bias.
        activation: Activation applied after the linear map.
        residual: ``None`` for no residual, ``"identity"`` to add the input itself, or an
            ``(out_features, in_features)`` matrix mapping the input to the output size.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        activation: nn.Module | None = None,
        residual: torch.Tensor | Literal["identity"] | None = None,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            if bias is not None:
                self.linear.bias.copy_(bias)
        self.activation = activation if activation is not None else nn.Identity()
        self.residual_identity = residual == "identity"
        self.residual = None
        if isinstance(residual, torch.Tensor):
            self.residual = nn.Linear(residual.shape[1], residual.shape[0], bias=False)
            with torch.no_grad():
                self.residual.weight.copy_(residual)

    @property
    def in_features(self) -> int:
        """Input width."""
        return self.linear.in_features

    @property
    def out_features(self) -> int:
        """Output width."""
        return self.linear.out_features

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Project ``(..., in_features)`` token vectors to ``(..., out_features)``."""
        out = self.activation(self.linear(hidden))
        if self.residual is not None:
            out = out + self.residual(hidden)
        elif self.residual_identity:
            out = out + hidden
        return out


@dataclass
class LoadedCheckpoint:
    """Everything the encoder needs from a checkpoint, whatever its layout.

    Attributes:
        layout: Detected layout kind.
        folder: Local folder the checkpoint was read from.
        model: The transformer backbone, float32, in eval mode, on CPU.
        tokenizer: Its tokenizer.
        head: Projection layers applied to the last hidden state, in order (may be empty).
        query_marker: Query marker token (e.g. ``"[unused0]"``), or ``None``.
        doc_marker: Document marker token, or ``None``.
        query_marker_id: Token id of ``query_marker``, or ``None``.
        doc_marker_id: Token id of ``doc_marker``, or ``None``.
        query_maxlen: Query length in tokens (markers, specials and ``[MASK]`` expansion included).
        doc_maxlen: Maximum document length in tokens (markers and specials included).
        max_positions: Longest input the backbone accepts.
        query_expansion: Whether queries are padded with ``[MASK]`` to ``query_maxlen`` and keep those vectors.
        attend_to_mask_tokens: Whether query ``[MASK]`` expansion tokens are attended to.
        skiplist_ids: Token ids dropped from document outputs (punctuation / skiplist words).
    """

    layout: Layout
    folder: Path
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    head: list[DenseLayer]
    query_marker: str | None
    doc_marker: str | None
    query_marker_id: int | None
    doc_marker_id: int | None
    query_maxlen: int
    doc_maxlen: int
    max_positions: int
    query_expansion: bool
    attend_to_mask_tokens: bool
    skiplist_ids: list[int]


def load_checkpoint(name_or_path: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Find, detect and load a checkpoint.

    Args:
        name_or_path: A local checkpoint folder, or a Hugging Face Hub model id (downloaded when the Hub
            is reachable).

    Returns:
        The loaded checkpoint with its layout-specific settings (before any user override).

    Raises:
        FileNotFoundError: ``name_or_path`` looks like a local path and does not exist.
        ColbertStoreError: The checkpoint is malformed, unsafe, or could not be fetched from the Hub.
    """
    folder = resolve_checkpoint_folder(name_or_path)
    if (folder / "artifact.metadata").is_file():
        return _load_stanford(folder)
    modules = _read_modules(folder)
    pylate = None if modules is None else _pylate_modules(folder, modules)
    if pylate is not None:
        return _load_pylate(folder, *pylate)
    return _load_plain(folder)


# --------------------------------------------------------------------------------------------------- layouts


def _load_stanford(folder: Path) -> LoadedCheckpoint:
    meta = read_json(folder / "artifact.metadata")
    weights = load_weights(folder)
    linear = weights.pop("linear.weight", None)
    if linear is None or linear.ndim != 2:
        raise ColbertStoreError(f"{folder} has artifact.metadata but its weights lack a 2-D 'linear.weight'")
    model = _build_backbone(folder, weights)
    if linear.shape[1] != model.config.hidden_size:
        raise ColbertStoreError(
            f"{folder}: linear.weight has {linear.shape[1]} inputs but the model's hidden size is {model.config.hidden_size}"
        )
    if meta.get("dim") not in (None, linear.shape[0]):
        logger.warning(
            "%s: artifact.metadata says dim=%s but linear.weight gives %d; using %d",
            folder,
            meta["dim"],
            linear.shape[0],
            linear.shape[0],
        )
    tokenizer = _load_tokenizer(folder)
    query_marker, query_marker_id = _resolve_marker(tokenizer, meta.get("query_token_id", "[unused0]"), folder)
    doc_marker, doc_marker_id = _resolve_marker(tokenizer, meta.get("doc_token_id", "[unused1]"), folder)
    skiplist = punctuation_ids(tokenizer) if meta.get("mask_punctuation", True) else []
    return LoadedCheckpoint(
        layout="stanford",
        folder=folder,
        model=model,
        tokenizer=tokenizer,
        head=[DenseLayer(linear.float())],
        query_marker=query_marker,
        doc_marker=doc_marker,
        query_marker_id=query_marker_id,
        doc_marker_id=doc_marker_id,
        query_maxlen=int(meta.get("query_maxlen", DEFAULT_QUERY_MAXLEN)),
        doc_maxlen=int(meta.get("doc_maxlen", STANFORD_DEFAULT_DOC_MAXLEN)),
        max_positions=_max_positions(model, tokenizer),
        query_expansion=bool(meta.get("query_expansion", True)),
        attend_to_mask_tokens=bool(meta.get("attend_to_mask_tokens", False)),
        skiplist_ids=skiplist,
    )


def _load_pylate(folder: Path, transformer_dir: Path, dense_dirs: list[Path]) -> LoadedCheckpoint:
    settings_path = folder / "config_sentence_transformers.json"
    settings = read_json(settings_path) if settings_path.is_file() else {}
    model = _build_backbone(transformer_dir, load_weights(transformer_dir))
    tokenizer = _load_tokenizer(transformer_dir)
    head = [_load_dense(path) for path in dense_dirs]
    _check_head(head, model.config.hidden_size, folder)
    query_marker, query_marker_id = _resolve_marker(tokenizer, settings.get("query_prefix", "[Q] "), folder)
    doc_marker, doc_marker_id = _resolve_marker(tokenizer, settings.get("document_prefix", "[D] "), folder)
    words = settings.get("skiplist_words")
    return LoadedCheckpoint(
        layout="pylate",
        folder=folder,
        model=model,
        tokenizer=tokenizer,
        head=head,
        query_marker=query_marker,
        doc_marker=doc_marker,
        query_marker_id=query_marker_id,
        doc_marker_id=doc_marker_id,
        query_maxlen=int(settings.get("query_length") or DEFAULT_QUERY_MAXLEN),
        doc_maxlen=int(settings.get("document_length") or PYLATE_DEFAULT_DOC_MAXLEN),
        max_positions=_max_positions(model, tokenizer),
        query_expansion=bool(settings.get("do_query_expansion", True)),
        attend_to_mask_tokens=bool(settings.get("attend_to_expansion_tokens", False)),
        skiplist_ids=_skiplist_ids(tokenizer, list(string.punctuation) if words is None else words),
    )


def _load_plain(folder: Path) -> LoadedCheckpoint:
    model = _build_backbone(folder, load_weights(folder))
    tokenizer = _load_tokenizer(folder)
    max_positions = _max_positions(model, tokenizer)
    return LoadedCheckpoint(
        layout="plain",
        folder=folder,
        model=model,
        tokenizer=tokenizer,
        head=[],
        query_marker=None,
        doc_marker=None,
        query_marker_id=None,
        doc_marker_id=None,
        query_maxlen=DEFAULT_QUERY_MAXLEN,
        doc_maxlen=min(PLAIN_MAX_DOC_MAXLEN, max_positions),
        max_positions=max_positions,
        query_expansion=False,
        attend_to_mask_tokens=False,
        skiplist_ids=punctuation_ids(tokenizer),
    )


# --------------------------------------------------------------------------------------------------- pieces


def _read_modules(folder: Path) -> list[dict[str, Any]] | None:
    path = folder / "modules.json"
    if not path.is_file():
        return None
    modules = read_json(path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ColbertStoreError(f"{path} is not a list of module entries")
    return sorted(modules, key=lambda m: int(m.get("idx", 0)))


def _pylate_modules(folder: Path, modules: list[dict[str, Any]]) -> tuple[Path, list[Path]] | None:
    """Return (transformer folder, Dense folders) for a ColBERT modules.json, or None when it is plain."""
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if "Dense" not in kinds:
        return None
    if "Pooling" in kinds:
        logger.warning(
            "%s: modules.json pools before its Dense layer (a single-vector model); "
            "loading it as plain and ignoring the Dense layer",
            folder,
        )
        return None
    transformer_dir: Path | None = None
    dense_dirs: list[Path] = []
    for module, kind in zip(modules, kinds, strict=True):
        sub = folder / str(module.get("path", ""))
        if kind == "Transformer" and transformer_dir is None:
            transformer_dir = sub
        elif kind == "Dense":
            dense_dirs.append(sub)
        elif kind != "Normalize":  # output rows are always L2-normalised anyway
            logger.warning("%s: ignoring unsupported module %r", folder, module.get("type"))
    if transformer_dir is None:
        raise ColbertStoreError(f"{folder / 'modules.json'} lists no Transformer module")
    return transformer_dir, dense_dirs


def _load_dense(folder: Path) -> DenseLayer:
    config = read_json(folder / "config.json")
    weights = load_weights(folder)
    weight = weights.get("linear.weight")
    if weight is None or weight.ndim != 2:
        raise ColbertStoreError(f"Dense module {folder} lacks a 2-D 'linear.weight'")
    expected = (config.get("out_features", weight.shape[0]), config.get("in_features", weight.shape[1]))
    if tuple(weight.shape) != tuple(expected):
        raise ColbertStoreError(
            f"Dense module {folder}: linear.weight is {tuple(weight.shape)}, config.json says (out, in) = {expected}"
        )
    bias = weights.get("linear.bias") if config.get("bias", True) else None
    if config.get("bias", True) and bias is None:
        raise ColbertStoreError(f"Dense module {folder} has bias=true but no 'linear.bias'")
    name = str(config.get("activation_function", "torch.nn.modules.linear.Identity"))
    if name not in _ACTIVATIONS:
        raise ColbertStoreError(
            f"Dense module {folder}: unsupported activation_function {name!r} (supported: {', '.join(sorted(_ACTIVATIONS))})"
        )
    residual: torch.Tensor | Literal["identity"] | None = None
    if config.get("use_residual", False):
        residual = weights["residual.weight"].float() if "residual.weight" in weights else "identity"
    return DenseLayer(weight.float(), None if bias is None else bias.float(), _ACTIVATIONS[name](), residual)


def _check_head(head: list[DenseLayer], hidden_size: int, folder: Path) -> None:
    width = hidden_size
    for layer in head:
        if layer.in_features != width:
            raise ColbertStoreError(f"{folder}: a Dense layer expects {layer.in_features} inputs but gets {width}")
        width = layer.out_features


def _build_backbone(folder: Path, weights: dict[str, torch.Tensor]) -> PreTrainedModel:
    """Instantiate the transformers base model of ``folder``'s config from already-loaded weights."""
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ColbertStoreError(f"cannot read the model config in {folder}: {exc}") from exc
    model_class: Any = MODEL_MAPPING.get(type(config), None)
    if model_class is None:
        raise ColbertStoreError(f"{folder}: unsupported model type {config.model_type!r}")
    with quiet_transformers():
        model = model_class.from_pretrained(None, config=config, state_dict=weights, dtype=torch.float32)
    return model.eval()


def _load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ColbertStoreError(f"cannot load the tokenizer in {folder}: {exc}") from exc
    if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
        raise ColbertStoreError(f"the tokenizer in {folder} needs a mask and a pad token for ColBERT queries")
    return tokenizer


def _resolve_marker(tokenizer: PreTrainedTokenizerBase, marker: str | int | None, folder: Path) -> tuple[str | None, int | None]:
    """Map a marker given as a token string (``"[unused0]"``, ``"[Q] "``) or an id to (token, id).

    An empty or missing marker (a PyLate model trained without prefixes) means no marker: ``(None, None)``.
    """
    if marker is None or marker == "":
        return None, None
    if isinstance(marker, int):
        return str(tokenizer.convert_ids_to_tokens(marker)), marker
    for candidate in dict.fromkeys((marker, marker.strip())):
        token_id = tokenizer.convert_tokens_to_ids(candidate)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            return marker, token_id
    raise ColbertStoreError(f"{folder}: marker {marker!r} is not a token of the tokenizer")


def punctuation_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """ColBERT's ``mask_punctuation``: the first token id of every ASCII punctuation character."""
    ids: set[int] = set()
    for symbol in string.punctuation:
        encoded = tokenizer.encode(symbol, add_special_tokens=False)
        if encoded:
            ids.add(encoded[0])
    return sorted(ids - {tokenizer.unk_token_id})


def _skiplist_ids(tokenizer: PreTrainedTokenizerBase, words: list[str]) -> list[int]:
    """PyLate's skiplist: each word looked up as one token ([UNK] is never skipped)."""
    ids = {tokenizer.convert_tokens_to_ids(str(word)) for word in words}
    return sorted(i for i in ids if isinstance(i, int) and i != tokenizer.unk_token_id)


def _max_positions(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    limit = int(getattr(model.config, "max_position_embeddings", 0) or 0) or PLAIN_MAX_DOC_MAXLEN
    tokenizer_limit = int(tokenizer.model_max_length) if tokenizer.model_max_length < 1_000_000 else limit
    return min(limit, tokenizer_limit)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' weight-loading progress bar and load report for one call."""
    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar_was_enabled:
            hf_logging.enable_progress_bar()
