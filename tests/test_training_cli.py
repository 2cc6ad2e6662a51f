"""``colbert-store train`` run for real in a subprocess, on a BEIR folder and a tiny checkpoint (offline)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_cli import assert_user_error, run  # noqa: E402
from tiny_checkpoints import build_plain_checkpoint, build_stanford_checkpoint  # noqa: E402

from colbert_store import Index  # noqa: E402
from colbert_store.adapters.lancedb import LanceDBStore  # noqa: E402
from colbert_store.encoder import ColBERTEncoder  # noqa: E402

DOCUMENTS = {
    "d0": "Mount Everest is the highest mountain above sea level.",
    "d1": "Tomatoes need plenty of sun and daily watering.",
    "d2": "The central bank raised interest rates to fight inflation.",
    "d3": "A binary search tree keeps its keys in sorted order.",
    "d4": "The violin concerto was first performed in Vienna.",
    "d5": "Penguins live in the southern hemisphere.",
    "d6": "Lava flows from an erupting volcano.",
    "d7": "Glaciers carve valleys as they move.",
}
QUERIES = {"q0": "highest mountain", "q1": "interest rates", "q2": "sorted keys", "q3": "never judged"}
QRELS = [("q0", "d0", 1), ("q1", "d2", 1), ("q2", "d3", 2), ("q2", "d6", 0)]
SMALL = ["--n-way", "3", "--negatives-depth", "4", "--steps", "3", "--batch-size", "2", "--learning-rate", "1e-3"]


def write_beir(folder: Path, qrels: list[tuple[str, str, int]]) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in DOCUMENTS.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in QUERIES.items()))
    lines = ["query-id\tcorpus-id\tscore", *(f"{q}\t{d}\t{s}" for q, d, s in qrels)]
    (folder / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(BEIR folder, store folder holding index ``docs`` of it, the tiny model that built it)."""
    root = tmp_path_factory.mktemp("train-cli")
    beir, model = write_beir(root / "beir", QRELS), build_stanford_checkpoint(root / "model")
    result = run("index", beir, "--store", root / "db", "--name", "docs", "--model", model)
    assert result.returncode == 0, result.stderr
    return beir, root / "db", model


def test_train_then_retrain_moves_the_index_to_the_trained_model(built: tuple[Path, Path, Path], tmp_path: Path) -> None:
    beir, store, _ = built
    out = tmp_path / "tuned"
    result = run("train", beir, "--store", store, "--name", "docs", "--out", out, *SMALL)
    assert result.returncode == 0, result.stderr
    assert f"colbert-store retrain --store {store} --name docs --model {out}" in result.stdout
    metadata = json.loads((out / "artifact.metadata").read_text())
    assert metadata["colbert_store_training"]["steps_done"] == 3
    assert metadata["colbert_store_training"]["examples"] == 3  # q0, q1, q2's one positive; q3 is not judged
    assert ColBERTEncoder.from_pretrained(out, "cpu").layout == "stanford"

    result = run("retrain", "--store", store, "--name", "docs", "--model", out)
    assert result.returncode == 0, result.stderr
    recorded = Index.open(LanceDBStore(store), "docs").settings.encoder
    assert recorded is not None and recorded["name_or_path"] == os.path.realpath(out)
    result = run("search", "highest mountain", "--store", store, "--name", "docs", "--json")  # the recorded model
    assert result.returncode == 0 and len(result.stdout.splitlines()) == len(DOCUMENTS), result.stderr


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("positive not in the index", "1 positive passages are not in index 'docs', e.g. ['d9']"),
        ("query without positive", "1 queries have no positive passage, e.g. ['q3']"),
        ("teacher not a cross-encoder", "is not a cross-encoder: its config names ['BertModel']"),
        ("JSONL queries without qrels", "a JSONL file of queries needs --qrels FILE"),
        ("bad setting", "n_way must be at least 2"),
    ],
)
def test_bad_input_is_one_line_before_training(built: tuple[Path, Path, Path], tmp_path: Path, case: str, fragment: str) -> None:
    beir, store, _ = built
    source, extra = beir, list(SMALL)
    if case == "positive not in the index":
        source = write_beir(tmp_path / "beir", [*QRELS, ("q1", "d9", 1)])
    elif case == "query without positive":
        source = write_beir(tmp_path / "beir", [*QRELS, ("q3", "d1", 0)])
    elif case == "teacher not a cross-encoder":
        extra += ["--teacher", str(build_plain_checkpoint(tmp_path / "plain"))]
    elif case == "JSONL queries without qrels":
        source = beir / "queries.jsonl"
    else:
        extra += ["--n-way", "1"]
    assert_user_error(run("train", source, "--store", store, "--name", "docs", "--out", tmp_path / "out", *extra), fragment)
    assert not (tmp_path / "out").exists()
