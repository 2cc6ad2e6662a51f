"""Tests of ColBERTEncoder against tiny real checkpoints in each layout (no mocks)."""

from __future__ import annotations

import json
import string
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

sys.path.insert(0, str(Path(__file__).parent))

from tiny_checkpoints import (  # noqa: E402
    build_plain_checkpoint,
    build_pylate_checkpoint,
    build_stanford_checkpoint,
    minilm_dir,
    poison_bin_weights,
)

from colbert_store.encoder import ColBERTEncoder  # noqa: E402
from colbert_store.errors import ColbertStoreError, InvalidInputError  # noqa: E402

TEXTS = [
    "ColBERT scores documents by late interaction, token by token!",
    "short",
    "Punctuation: commas, colons; semicolons... and (parentheses) -- everywhere?!",
    "a much longer document " * 12,
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "stanford": build_stanford_checkpoint(root / "stanford"),
        "stanford_bin": build_stanford_checkpoint(root / "stanford_bin", weights_format="bin"),
        "stanford_attend": build_stanford_checkpoint(root / "stanford_attend", attend_to_mask_tokens=True),
        "pylate": build_pylate_checkpoint(root / "pylate"),
        "pylate_nested": build_pylate_checkpoint(
            root / "pylate_nested",
            transformer_path="0_Transformer",
            dense_dims=(24, 16),
            dense_bias=True,
            query_prefix="[unused0]",
            document_prefix="[unused1]",
            attend_to_expansion_tokens=True,
        ),
        "pylate_unexpanded": build_pylate_checkpoint(root / "pylate_unexpanded", do_query_expansion=False),
    }


@pytest.fixture(scope="module")
def encoders(checkpoints: dict[str, Path]) -> dict[str, ColBERTEncoder]:
    return {name: ColBERTEncoder.from_pretrained(path, device="cpu") for name, path in checkpoints.items()}


@pytest.fixture(scope="module")
def minilm() -> ColBERTEncoder:
    return ColBERTEncoder.from_pretrained(minilm_dir(), device="cpu")


def reference_vectors(folder: Path, text: str, *, is_query: bool) -> np.ndarray:
    """ColBERT vectors computed independently: hand-built token ids, transformers' own loading, manual head."""
    meta_path = folder / "artifact.metadata"
    if meta_path.exists():  # Stanford
        meta = json.loads(meta_path.read_text())
        transformer_dir, weights = folder, load_file(str(folder / "model.safetensors"))
        layers = [(weights["linear.weight"], None)]
        marker = meta["query_token_id"] if is_query else meta["doc_token_id"]
        maxlen = meta["query_maxlen"] if is_query else meta["doc_maxlen"]
        attend = meta["attend_to_mask_tokens"]
        expand = True
    else:  # PyLate
        settings = json.loads((folder / "config_sentence_transformers.json").read_text())
        modules = json.loads((folder / "modules.json").read_text())
        transformer_dir = folder / modules[0]["path"]
        layers = []
        for module in modules[1:]:
            dense = load_file(str(folder / module["path"] / "model.safetensors"))
            layers.append((dense["linear.weight"], dense.get("linear.bias")))
        marker = settings["query_prefix"] if is_query else settings["document_prefix"]
        maxlen = settings["query_length"] if is_query else settings["document_length"]
        attend = settings["attend_to_expansion_tokens"]
        expand = settings["do_query_expansion"]
    tokenizer = AutoTokenizer.from_pretrained(transformer_dir)
    model = AutoModel.from_pretrained(transformer_dir).eval()
    body = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))[: maxlen - 3]
    ids = [tokenizer.cls_token_id, tokenizer.convert_tokens_to_ids(marker), *body, tokenizer.sep_token_id]
    attention = [1] * len(ids)
    if is_query and expand:
        ids += [tokenizer.mask_token_id] * (maxlen - len(ids))
        attention += [int(attend)] * (maxlen - len(attention))
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([attention])).last_hidden_state[0]
    for weight, bias in layers:
        hidden = hidden @ weight.T + (0 if bias is None else bias)
    vectors = torch.nn.functional.normalize(hidden, dim=-1).numpy()
    if not is_query:
        punctuation = set(tokenizer.convert_tokens_to_ids(list(string.punctuation)))
        vectors = vectors[[token not in punctuation for token in ids]]
    return vectors


# ------------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("name", ["stanford", "stanford_bin"])
def test_stanford_layout_loads(encoders: dict[str, ColBERTEncoder], name: str) -> None:
    encoder = encoders[name]
    assert encoder.layout == "stanford"
    assert encoder.dim == 16
    assert encoder.identity["query_marker"] == "[unused0]"
    assert encoder.identity["doc_marker"] == "[unused1]"
    assert (encoder.query_maxlen, encoder.doc_maxlen) == (12, 48)


@pytest.mark.parametrize("name, dim, marker", [("pylate", 16, "[Q] "), ("pylate_nested", 16, "[unused0]")])
def test_pylate_layout_loads(encoders: dict[str, ColBERTEncoder], name: str, dim: int, marker: str) -> None:
    encoder = encoders[name]
    assert encoder.layout == "pylate"
    assert encoder.dim == dim
    assert encoder.identity["query_marker"] == marker


def test_stanford_weights_formats_agree(encoders: dict[str, ColBERTEncoder]) -> None:
    a = encoders["stanford"].encode_documents(TEXTS)
    b = encoders["stanford_bin"].encode_documents(TEXTS)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-6)


@pytest.mark.parametrize("name", ["stanford", "stanford_attend", "pylate", "pylate_nested", "pylate_unexpanded"])
@pytest.mark.parametrize("is_query", [True, False], ids=["query", "doc"])
def test_vectors_match_independent_reference(
    checkpoints: dict[str, Path], encoders: dict[str, ColBERTEncoder], name: str, is_query: bool
) -> None:
    encoder = encoders[name]
    encode = encoder.encode_queries if is_query else encoder.encode_documents
    for text, got in zip(TEXTS, encode(TEXTS), strict=True):
        expected = reference_vectors(checkpoints[name], text, is_query=is_query)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_query_expansion_follows_the_checkpoint_and_can_be_overridden(
    checkpoints: dict[str, Path], encoders: dict[str, ColBERTEncoder]
) -> None:
    assert [encoders[name].query_expansion for name in ("stanford", "pylate", "pylate_unexpanded")] == [True, True, False]
    tokenizer = AutoTokenizer.from_pretrained(checkpoints["stanford"])
    unpadded = len(tokenizer("late interaction")["input_ids"]) + 1  # + the [Q] marker
    assert encoders["pylate_unexpanded"].encode_queries(["late interaction"])[0].shape == (unpadded, 16)
    off = ColBERTEncoder.from_pretrained(checkpoints["stanford"], device="cpu", query_expansion=False)
    on = ColBERTEncoder.from_pretrained(checkpoints["pylate_unexpanded"], device="cpu", query_expansion=True)
    assert (off.query_expansion, off.identity["query_expansion"], on.identity["query_expansion"]) == (False, False, True)
    expanded = encoders["stanford"].encode_queries(["late interaction"])[0]
    alone = off.encode_queries(["late interaction"])[0]
    assert expanded.shape == (12, 16) and alone.shape == (unpadded, 16)
    # this checkpoint does not attend to the [MASK] slots: turning expansion off only drops their rows
    np.testing.assert_allclose(alone, expanded[:unpadded], atol=1e-5)
    assert on.encode_queries(["late interaction"])[0].shape == (12, 16)
    with pytest.raises(InvalidInputError, match="query_expansion"):
        ColBERTEncoder.from_pretrained(checkpoints["stanford"], device="cpu", query_expansion="no")


def test_attending_to_mask_tokens_changes_query_vectors(encoders: dict[str, ColBERTEncoder]) -> None:
    plain = encoders["stanford"].encode_queries(["late interaction"])[0]
    attended = encoders["stanford_attend"].encode_queries(["late interaction"])[0]
    assert not np.allclose(plain, attended, atol=1e-4)


def test_pylate_without_prefixes_has_no_markers(tmp_path: Path) -> None:
    folder = build_pylate_checkpoint(tmp_path / "no_prefix", query_prefix="", document_prefix="")
    encoder = ColBERTEncoder.from_pretrained(folder, device="cpu")
    assert encoder.identity["query_marker"] is None and encoder.identity["doc_marker"] is None
    assert encoder.encode_documents(["a b"])[0].shape == (4, 16)  # [CLS] a b [SEP]
    assert encoder.encode_queries(["a b"])[0].shape == (12, 16)


def test_modules_json_with_pooling_loads_as_plain(tmp_path: Path) -> None:
    folder = build_plain_checkpoint(tmp_path / "st")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    encoder = ColBERTEncoder.from_pretrained(folder, device="cpu")
    assert encoder.layout == "plain"
    assert encoder.dim == 32


# ------------------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("name", ["stanford", "pylate", "pylate_nested"])
def test_expanded_queries_are_query_maxlen_by_dim(encoders: dict[str, ColBERTEncoder], name: str) -> None:
    encoder = encoders[name]
    queries = ["q", "a question of medium length", "word " * 200]
    for vectors in encoder.encode_queries(queries):
        assert vectors.shape == (encoder.query_maxlen, encoder.dim)
        assert vectors.dtype == np.float32


def test_query_maxlen_override(checkpoints: dict[str, Path]) -> None:
    encoder = ColBERTEncoder.from_pretrained(checkpoints["stanford"], device="cpu", query_maxlen=20, doc_maxlen=10)
    assert encoder.encode_queries(["hello"])[0].shape == (20, 16)
    assert encoder.encode_documents(["word " * 50])[0].shape == (10, 16)
    assert encoder.identity["query_maxlen"] == 20


@pytest.mark.parametrize("name", ["stanford", "pylate"])
def test_documents_drop_padding_and_punctuation(encoders: dict[str, ColBERTEncoder], name: str) -> None:
    encoder = encoders[name]
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    punctuation = set(tokenizer.convert_tokens_to_ids(list(string.punctuation)))
    for text, vectors in zip(TEXTS, encoder.encode_documents(TEXTS), strict=True):
        ids = tokenizer(text, truncation=True, max_length=encoder.doc_maxlen - 1)["input_ids"]
        expected = len(ids) + 1 - sum(token in punctuation for token in ids)  # +1: the marker
        assert vectors.shape == (expected, encoder.dim)


def test_mask_punctuation_false_keeps_punctuation(tmp_path: Path) -> None:
    folder = build_stanford_checkpoint(tmp_path / "keep", mask_punctuation=False)
    encoder = ColBERTEncoder.from_pretrained(folder, device="cpu")
    assert encoder.encode_documents(["a, b."])[0].shape == (7, 16)  # [CLS] [unused1] a , b . [SEP]


def test_every_vector_has_unit_norm(encoders: dict[str, ColBERTEncoder]) -> None:
    for encoder in encoders.values():
        for vectors in encoder.encode_queries(TEXTS) + encoder.encode_documents(TEXTS):
            np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["stanford", "pylate_nested"])
def test_batched_equals_alone(checkpoints: dict[str, Path], name: str) -> None:
    encoder = ColBERTEncoder.from_pretrained(checkpoints[name], device="cpu", batch_size=3)
    texts = [*TEXTS, "one more text", "x " * 30, "final words here"]
    batched_docs = encoder.encode_documents(texts)
    batched_queries = encoder.encode_queries(texts)
    for position, text in enumerate(texts):
        np.testing.assert_allclose(batched_docs[position], encoder.encode_documents([text])[0], atol=1e-5)
        np.testing.assert_allclose(batched_queries[position], encoder.encode_queries([text])[0], atol=1e-5)


def test_empty_input_gives_empty_output(encoders: dict[str, ColBERTEncoder]) -> None:
    assert encoders["stanford"].encode_documents([]) == []
    assert encoders["stanford"].encode_queries(()) == []


# ------------------------------------------------------------------------------------------------ plain MiniLM


def test_minilm_loads_as_plain(minilm: ColBERTEncoder) -> None:
    assert minilm.layout == "plain"
    assert minilm.dim == 384
    assert (minilm.query_maxlen, minilm.doc_maxlen, minilm.query_expansion) == (32, 512, False)
    assert minilm.identity["query_marker"] is None and minilm.identity["projection_sha256"] is None
    query = minilm.encode_queries(["what do statins do?"])[0]
    assert query.shape == (8, 384)  # [CLS] what do stat ##ins do ? [SEP]: a plain model gets no [MASK] padding
    np.testing.assert_allclose(np.linalg.norm(query, axis=1), 1.0, atol=1e-5)
    doc = minilm.encode_documents(["The cat sat on the mat."])[0]
    assert doc.shape == (8, 384)  # [CLS] the cat sat on the mat [SEP]: no marker, '.' dropped
    np.testing.assert_allclose(np.linalg.norm(doc, axis=1), 1.0, atol=1e-5)


def test_minilm_with_projection(minilm: ColBERTEncoder) -> None:
    projection = np.random.default_rng(0).standard_normal((384, 24)).astype(np.float32)
    projected = ColBERTEncoder.from_pretrained(minilm_dir(), device="cpu", projection=projection)
    assert projected.dim == 24
    assert projected.identity["dim"] == 24 and projected.identity["projection_sha256"]
    text = ["Statins lower cholesterol in most adults."]
    got = projected.encode_documents(text)[0]
    # projecting the normalised 384-d vectors and renormalising is the same as projecting hidden states
    base = minilm.encode_documents(text)[0] @ projection
    np.testing.assert_allclose(got, base / np.linalg.norm(base, axis=1, keepdims=True), atol=1e-5)
    assert projected.encode_queries(text)[0].shape == (len(minilm.encode_queries(text)[0]), 24)


def test_identity_is_stable_and_json(checkpoints: dict[str, Path], encoders: dict[str, ColBERTEncoder]) -> None:
    again = ColBERTEncoder.from_pretrained(checkpoints["stanford"], device="cpu")
    assert again.identity == encoders["stanford"].identity
    assert json.loads(json.dumps(again.identity)) == again.identity
    assert encoders["stanford"].identity != encoders["stanford_attend"].identity
    p1 = np.eye(16, 8, dtype=np.float32)
    a = ColBERTEncoder.from_pretrained(checkpoints["stanford"], device="cpu", projection=p1)
    b = ColBERTEncoder.from_pretrained(checkpoints["stanford"], device="cpu", projection=p1.copy())
    c = ColBERTEncoder.from_pretrained(checkpoints["stanford"], device="cpu", projection=p1 * 2)
    assert a.identity == b.identity != c.identity


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "texts, message",
    [
        ("a single string", "single str"),
        (b"bytes", "single bytes"),
        (["fine", 3], r"texts\[1\] is int"),
        (["fine", None], r"texts\[1\] is NoneType"),
        (["fine", ""], r"texts\[1\] is empty"),
        (["  \n\t "], r"texts\[0\] is empty or whitespace-only"),
        ({"a set"}, "sequence"),
        ((t for t in ["generator"]), "sequence"),
    ],
)
def test_bad_texts_raise(encoders: dict[str, ColBERTEncoder], texts: object, message: str) -> None:
    encoder = encoders["stanford"]
    for encode in (encoder.encode_queries, encoder.encode_documents):
        with pytest.raises(InvalidInputError, match=message):
            encode(texts)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "projection, message",
    [
        (np.zeros((10, 4)), r"shape \(16, dim\)"),
        (np.zeros(16), r"shape \(16, dim\)"),
        (np.full((16, 4), np.nan), "NaN"),
        ([["a"]], "numeric"),
    ],
)
def test_bad_projection_raises(checkpoints: dict[str, Path], projection: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ColBERTEncoder.from_pretrained(checkpoints["stanford"], device="cpu", projection=projection)  # type: ignore


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"query_maxlen": 3}, "query_maxlen=3 is out of range"),
        ({"doc_maxlen": 10_000}, "doc_maxlen=10000 is out of range"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_settings_raise(checkpoints: dict[str, Path], kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ColBERTEncoder.from_pretrained(checkpoints["stanford"], device="cpu", **kwargs)  # type: ignore[arg-type]


def test_a_call_can_turn_the_progress_bar_on_or_off(checkpoints: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    shown = ColBERTEncoder.from_pretrained(checkpoints["stanford"], device="cpu", batch_size=1, show_progress=True)
    shown.encode_documents(TEXTS[:2], show_progress=False)
    assert "Encoding documents" not in capsys.readouterr().err
    shown.encode_documents(TEXTS[:2])
    assert "Encoding documents" in capsys.readouterr().err
    hidden = ColBERTEncoder.from_pretrained(checkpoints["stanford"], device="cpu", batch_size=1, show_progress=False)
    hidden.encode_queries(TEXTS[:2], show_progress=True)
    assert "Encoding queries" in capsys.readouterr().err


def test_missing_model_path_raises(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        ColBERTEncoder.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        ColBERTEncoder.from_pretrained(str(missing))


def test_folder_without_weights_raises(tmp_path: Path) -> None:
    folder = build_plain_checkpoint(tmp_path / "empty")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ColbertStoreError, match="no weights"):
        ColBERTEncoder.from_pretrained(folder)


def test_pickled_objects_in_weights_are_refused(tmp_path: Path) -> None:
    folder = build_stanford_checkpoint(tmp_path / "poisoned")
    sentinel = tmp_path / "unpickled"
    poison_bin_weights(folder, sentinel)
    with pytest.raises(ColbertStoreError, match="refusing"):
        ColBERTEncoder.from_pretrained(folder, device="cpu")
    assert not sentinel.exists(), "the weights file was unpickled"


def test_non_tensor_entries_in_weights_are_refused(tmp_path: Path) -> None:
    folder = build_stanford_checkpoint(tmp_path / "odd", weights_format="bin")
    weights = torch.load(folder / "pytorch_model.bin", weights_only=True)
    weights["step"] = 12
    torch.save(weights, folder / "pytorch_model.bin")
    with pytest.raises(ColbertStoreError, match="not tensors"):
        ColBERTEncoder.from_pretrained(folder, device="cpu")
