"""Writing an encoder in the Stanford ColBERT layout, so that :meth:`ColBERTEncoder.from_pretrained` loads a fine-tuned
model exactly as it loads a pretrained one (:mod:`colbert_store.checkpoints` reads what this writes)."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from colbert_store.checkpoints import DenseLayer, punctuation_ids
from colbert_store.errors import InvalidInputError

if TYPE_CHECKING:
    from colbert_store.encoder import ColBERTEncoder

METADATA_FILE = "artifact.metadata"
WEIGHTS_FILE = "model.safetensors"


def save_checkpoint(encoder: ColBERTEncoder, folder: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None) -> Path:
    """Save ``encoder`` as a Stanford ColBERT checkpoint: ``config.json``, tokenizer files, ``model.safetensors``
    (the transformer under its base-model prefix, next to ``linear.weight``) and ``artifact.metadata``.

    The metadata carries the markers (``null`` for none), ``query_maxlen``, ``doc_maxlen``, ``dim``,
    ``mask_punctuation``, ``attend_to_mask_tokens`` and ``query_expansion``, so the checkpoint loads back with the
    encoder's settings and encodes as it does.

    Args:
        encoder: The encoder to save.
        folder: Target folder (created if missing; files of the same names are replaced).
        extra: More JSON-serialisable entries for ``artifact.metadata`` (e.g. how the model was trained).

    Returns:
        The folder.

    Raises:
        InvalidInputError: The encoder's projection head is not linear without bias, or its skiplist is neither
            punctuation nor empty: neither fits the Stanford layout.
    """
    checkpoint = encoder.checkpoint
    model = checkpoint.model  # the module :attr:`ColBERTEncoder.network` trains
    linear = _linear_projection(encoder)
    skiplist = checkpoint.skiplist_ids
    if skiplist and sorted(skiplist) != punctuation_ids(checkpoint.tokenizer):
        raise InvalidInputError("the encoder's skiplist is not ASCII punctuation, which the Stanford layout cannot express")
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(model.config)
    config.architectures = ["HF_ColBERT"]
    config.save_pretrained(target)
    checkpoint.tokenizer.save_pretrained(target)
    prefix = model.base_model_prefix
    weights = {f"{prefix}.{name}": value.detach().cpu().clone() for name, value in model.state_dict().items()}
    weights["linear.weight"] = linear
    save_file(weights, str(target / WEIGHTS_FILE))
    metadata = {
        "query_token_id": checkpoint.query_marker,
        "doc_token_id": checkpoint.doc_marker,
        "query_maxlen": encoder.query_maxlen,
        "doc_maxlen": encoder.doc_maxlen,
        "dim": encoder.dim,
        "mask_punctuation": bool(skiplist),
        "attend_to_mask_tokens": checkpoint.attend_to_mask_tokens,
        "query_expansion": encoder.query_expansion,
        "similarity": "cosine",
        **(extra or {}),
    }
    (target / METADATA_FILE).write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    return target


def _linear_projection(encoder: ColBERTEncoder) -> torch.Tensor:
    """The head as one ``(dim, hidden)`` matrix: the product of its bias-free linear layers (identity if none)."""
    matrix = torch.eye(int(encoder.checkpoint.model.config.hidden_size))
    for layer in encoder.network["head"].children():
        if not (
            isinstance(layer, DenseLayer) and layer.linear.bias is None and isinstance(layer.activation, torch.nn.Identity)
            and layer.residual is None and not layer.residual_identity
        ):
            raise InvalidInputError(
                "the encoder's projection has a bias, an activation or a residual connection; only bias-free linear "
                "projections fit the Stanford layout"
            )
        matrix = layer.linear.weight.detach().cpu().float() @ matrix
    return matrix.contiguous()

