"""Training (colbert_store.training) end to end on tiny real checkpoints and a real LanceDB index: no mocks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).parent))

from tiny_checkpoints import (  # noqa: E402
    build_cross_encoder,
    build_plain_checkpoint,
    build_pylate_checkpoint,
    build_stanford_checkpoint,
)

from colbert_store import IncompatibleIndexError, Index, InvalidInputError, Retriever, maxsim  # noqa: E402
from colbert_store.adapters.lancedb import LanceDBStore  # noqa: E402
from colbert_store.encoder import ColBERTEncoder  # noqa: E402
from colbert_store.training import CrossEncoderTeacher, TrainingConfig, TrainingStep, save_checkpoint, train  # noqa: E402

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu", "nu", "xi",
         "omicron", "pi", "rho", "sigma", "tau", "upsilon"]
N_DOCS = 12


def _texts(n: int, length: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, length)) for _ in range(n)]


DOC_TEXTS = _texts(N_DOCS, 10, 0)
DOC_IDS = [f"d{i}" for i in range(N_DOCS)]
QUERIES = {f"q{i}": " ".join(DOC_TEXTS[i].split()[:3]) for i in range(4)}
POSITIVES = {f"q{i}": [f"d{i + 4}"] for i in range(4)}
"""Not the document each query's words come from (that one is a hard negative): only training ranks these first."""


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_stanford_checkpoint(tmp_path_factory.mktemp("base") / "colbert")


@pytest.fixture(scope="module")
def base(base_dir: Path) -> ColBERTEncoder:
    return ColBERTEncoder.from_pretrained(base_dir, "cpu")


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory, base: ColBERTEncoder) -> Path:
    """A LanceDB folder holding index ``docs`` of the toy corpus, built by ``base`` (tests copy it before writing)."""
    folder = tmp_path_factory.mktemp("store") / "db"
    store = LanceDBStore(folder)
    Retriever.from_texts(DOC_TEXTS, encoder=base, store=store, name="docs", ids=DOC_IDS, show_progress=False)
    store.close()
    return folder


def _index(store_dir: Path) -> Index:
    return Index.open(LanceDBStore(store_dir), "docs")


def _scores(encoder: ColBERTEncoder, query: str, texts: list[str]) -> np.ndarray:
    docs = encoder.encode_documents(texts)
    return maxsim(encoder.encode_queries([query])[0], np.concatenate(docs), np.cumsum([0] + [len(d) for d in docs]))


# ---------------------------------------------------------------------------------------------- the encoder


@pytest.mark.parametrize("layout", ["stanford", "plain"])
def test_token_vectors_are_the_encoded_vectors_with_gradients(tmp_path: Path, layout: str) -> None:
    folder = build_stanford_checkpoint(tmp_path) if layout == "stanford" else build_plain_checkpoint(tmp_path)
    encoder = ColBERTEncoder.from_pretrained(folder, "cpu")
    texts = ["late interaction, token by token!", "short"]
    for is_query, encoded in ((True, encoder.encode_queries(texts)), (False, encoder.encode_documents(texts))):
        vectors, mask = encoder.token_vectors(texts, is_query=is_query)
        assert vectors.requires_grad
        for row, expected in enumerate(encoded):
            np.testing.assert_allclose(vectors[row][mask[row]].detach().numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("layout", ["stanford", "pylate", "plain+projection"])
def test_saved_checkpoint_loads_and_encodes_identically(tmp_path: Path, layout: str) -> None:
    if layout == "stanford":
        encoder = ColBERTEncoder.from_pretrained(build_stanford_checkpoint(tmp_path / "in"), "cpu")
    elif layout == "pylate":
        encoder = ColBERTEncoder.from_pretrained(build_pylate_checkpoint(tmp_path / "in", dense_dims=(24, 16)), "cpu")
    else:
        projection = np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)
        encoder = ColBERTEncoder.from_pretrained(build_plain_checkpoint(tmp_path / "in"), "cpu", projection=projection)
    with torch.no_grad():  # as training would: every weight moves, the projection head's included
        for parameter in encoder.network.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    saved = ColBERTEncoder.from_pretrained(save_checkpoint(encoder, tmp_path / "out"), "cpu")
    texts = ["ColBERT scores: token by token!", "short", "a longer document " * 8]
    for ours, theirs in ((encoder.encode_queries(texts), saved.encode_queries(texts)),
                         (encoder.encode_documents(texts), saved.encode_documents(texts))):
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert saved.layout == "stanford"
    assert saved.query_expansion == encoder.query_expansion  # off for the plain model, on for the others
    assert saved.identity["name_or_path"] != encoder.identity["name_or_path"]
    assert {k: v for k, v in saved.identity.items() if k not in ("name_or_path", "layout", "projection_sha256")} == {
        k: v for k, v in encoder.identity.items() if k not in ("name_or_path", "layout", "projection_sha256")
    }


def test_a_projection_with_bias_cannot_be_saved_in_the_stanford_layout(tmp_path: Path) -> None:
    encoder = ColBERTEncoder.from_pretrained(build_pylate_checkpoint(tmp_path / "in", dense_bias=True), "cpu")
    with pytest.raises(InvalidInputError, match="bias"):
        save_checkpoint(encoder, tmp_path / "out")


# ---------------------------------------------------------------------------------------------- training


def test_training_without_teacher_moves_the_index_to_the_trained_encoder(
    tmp_path: Path, base: ColBERTEncoder, store_dir: Path
) -> None:
    import shutil

    shutil.copytree(store_dir, tmp_path / "db")
    store = LanceDBStore(tmp_path / "db")
    retriever = Retriever.open(store, "docs", base)
    steps: list[TrainingStep] = []
    config = TrainingConfig(n_way=4, negatives_depth=6, batch_size=4, steps=30, learning_rate=3e-3, in_batch_negatives=True)
    tuned = train(base, QUERIES, index=retriever.index, positives=POSITIVES, out=tmp_path / "tuned", config=config,
                  on_step=steps.append, show_progress=False)
    assert [s.step for s in steps] == list(range(1, 31))
    assert np.mean([s.loss for s in steps[-5:]]) < 0.7 * np.mean([s.loss for s in steps[:5]])
    for encoder, first in ((base, False), (tuned, True)):  # where each positive ranks among all documents
        ranks = [int(np.argmax(_scores(encoder, QUERIES[q], DOC_TEXTS))) == DOC_IDS.index(POSITIVES[q][0]) for q in QUERIES]
        assert all(ranks) if first else not any(ranks)

    retriever.retrain(encoder=tuned)
    recorded = Index.open(LanceDBStore(tmp_path / "db"), "docs").settings.encoder
    assert recorded is not None and recorded["name_or_path"] == str((tmp_path / "tuned").resolve())
    Retriever.open(LanceDBStore(tmp_path / "db"), "docs", tuned)  # the trained encoder now matches the index
    with pytest.raises(IncompatibleIndexError, match="name_or_path"):
        Retriever.open(LanceDBStore(tmp_path / "db"), "docs", base)
    assert [retriever.search(QUERIES[q], k=1)[0].id for q in QUERIES] == [POSITIVES[q][0] for q in QUERIES]
    assert json.loads((tmp_path / "tuned" / "artifact.metadata").read_text())["colbert_store_training"]["steps_done"] == 30


def test_the_teacher_ranking_is_distilled_into_the_student(tmp_path: Path, base: ColBERTEncoder) -> None:
    texts, ids = DOC_TEXTS[:6], DOC_IDS[:6]
    index = Retriever.from_texts(texts, encoder=base, store=LanceDBStore(tmp_path / "db"), name="six", ids=ids,
                                 show_progress=False).index
    teacher_dir = build_cross_encoder(tmp_path / "teacher")
    teacher = CrossEncoderTeacher.from_pretrained(teacher_dir)
    queries = {f"t{i}": " ".join(_texts(1, 3, 10 + i)) for i in range(3)}
    # ColBERTv2 pairs each query with a passage its teacher ranks high: here the teacher's best
    best = {q: ids[int(np.argmax(teacher.score(text, texts)))] for q, text in queries.items()}
    config = TrainingConfig(n_way=6, negatives_depth=5, batch_size=3, steps=60, learning_rate=3e-3)
    steps: list[TrainingStep] = []
    tuned = train(base, queries, index=index, positives={q: [d] for q, d in best.items()}, out=tmp_path / "tuned",
                  teacher=teacher_dir, config=config, on_step=steps.append, show_progress=False)
    assert np.mean([s.loss for s in steps[-5:]]) < 0.6 * steps[0].loss
    agreement = {  # Kendall's tau between the student's and the teacher's scores of each group (the whole corpus)
        name: [kendalltau(_scores(encoder, text, texts), teacher.score(text, texts)).statistic for text in queries.values()]
        for name, encoder in (("before", base), ("after", tuned))
    }
    assert np.mean(agreement["before"]) < 0.5 and np.allclose(agreement["after"], 1.0), agreement


KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from colbert_store import Index
from colbert_store.adapters.lancedb import LanceDBStore
from colbert_store.encoder import ColBERTEncoder
from colbert_store.training import TrainingConfig, train
from test_training import POSITIVES, QUERIES, RESUME_CONFIG

def die(step):
    if step.step == 3:  # after step 3, whose checkpoint is not due (every 2): the resume redoes it
        os.kill(os.getpid(), signal.SIGKILL)

train(ColBERTEncoder.from_pretrained({base!r}, "cpu"), QUERIES, index=Index.open(LanceDBStore({store!r}), "docs"),
      positives=POSITIVES, out={out!r}, config=RESUME_CONFIG, on_step=die, show_progress=False)
"""
RESUME_CONFIG = TrainingConfig(n_way=3, negatives_depth=5, batch_size=2, accumulation_steps=2, steps=5, learning_rate=1e-3,
                               warmup_steps=2, checkpoint_every=2, seed=7)


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(
    tmp_path: Path, base: ColBERTEncoder, base_dir: Path, store_dir: Path
) -> None:
    killed = tmp_path / "killed"
    script = KILLED_RUN.format(tests=str(Path(__file__).parent), base=str(base_dir), store=str(store_dir), out=str(killed))
    process = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=300)
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert sorted(p.name for p in (killed / "training").iterdir()) == ["examples.json", "run.json", "step-00000002"]
    assert not (killed / "model.safetensors").exists()

    index = _index(store_dir)
    resumed = train(base, QUERIES, index=index, positives=POSITIVES, out=killed, config=RESUME_CONFIG, show_progress=False)
    straight = train(base, QUERIES, index=index, positives=POSITIVES, out=tmp_path / "straight", config=RESUME_CONFIG,
                     show_progress=False)
    ours, theirs = load_file(str(killed / "model.safetensors")), load_file(str(tmp_path / "straight" / "model.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    assert not all(torch.equal(ours[key], weights) for key, weights in load_file(str(base_dir / "model.safetensors")).items())
    texts = ["alpha beta", "gamma delta epsilon"]
    for a, b in zip(resumed.encode_documents(texts), straight.encode_documents(texts), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InvalidInputError, match="other config"):
        train(base, QUERIES, index=index, positives=POSITIVES, out=killed, show_progress=False,
              config=TrainingConfig(n_way=3, negatives_depth=5, steps=6))


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("query without positive", r"1 queries have no positive passage, e\.g\. \['q3'\]"),
        ("positive not in the index", r"positive passages are not in index 'docs', e\.g\. \['nowhere'\]"),
        ("empty group", r"the training groups of 1 queries are empty .* e\.g\. \['q0'\]"),
        ("short group", r"1 queries have fewer negatives than a group of n_way=8 needs \(7\), e\.g\. 'q0' \(6\)"),
        ("plain model as teacher", r"is not a cross-encoder: its config names \['BertModel'\]"),
        ("ColBERT model as teacher", r"is not a cross-encoder: its config names \['HF_ColBERT'\]"),
        ("teacher folder missing", r"is not a folder holding a cross-encoder"),
    ],
)
def test_bad_input_is_refused_before_training(
    tmp_path: Path, base: ColBERTEncoder, base_dir: Path, store_dir: Path, case: str, message: str
) -> None:
    positives: dict[str, list[str]] = dict(POSITIVES)
    config, teacher = TrainingConfig(n_way=3, negatives_depth=5, steps=2), None
    if case == "query without positive":
        positives["q3"] = []
    elif case == "positive not in the index":
        positives["q1"] = ["d1", "nowhere"]
    elif case == "empty group":
        positives["q0"] = list(DOC_IDS)
    elif case == "short group":
        positives["q0"], config = DOC_IDS[:6], TrainingConfig(n_way=8, negatives_depth=8, steps=2)
    elif case == "plain model as teacher":
        teacher = build_plain_checkpoint(tmp_path / "plain")
    elif case == "ColBERT model as teacher":
        teacher = base_dir
    else:
        teacher = tmp_path / "absent"
    with pytest.raises(InvalidInputError, match=message):
        train(base, QUERIES, index=_index(store_dir), positives=positives, out=tmp_path / "out", teacher=teacher,
              config=config, show_progress=False)
    assert not (tmp_path / "out").exists()


def test_an_encoder_of_another_index_is_refused(tmp_path: Path, store_dir: Path) -> None:
    other = ColBERTEncoder.from_pretrained(build_stanford_checkpoint(tmp_path / "other", seed=3), "cpu")
    with pytest.raises(IncompatibleIndexError):
        train(other, QUERIES, index=_index(store_dir), positives=POSITIVES, out=tmp_path / "out",
              config=TrainingConfig(n_way=3, negatives_depth=5, steps=2), show_progress=False)


def test_retrain_refuses_an_encoder_of_another_dimension(tmp_path: Path, store_dir: Path, base: ColBERTEncoder) -> None:
    wider = ColBERTEncoder.from_pretrained(build_stanford_checkpoint(tmp_path / "wide", dim=24), "cpu")
    retriever = Retriever(_index(store_dir), base)
    with pytest.raises(IncompatibleIndexError, match="24-d"):
        retriever.retrain(encoder=wider)
    with pytest.raises(InvalidInputError, match="dimensions"):
        retriever.index.retrain(encode_texts=wider.encode_documents, encoder=wider.identity)
