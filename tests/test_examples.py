"""The scripts in ``examples/`` run offline and print what their docstrings promise."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_example(name: str, store: Path) -> list[str]:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), str(store)], capture_output=True, text=True,
                          env=OFFLINE, timeout=300, check=True)
    return done.stdout.splitlines()


def test_quickstart(tmp_path: Path) -> None:
    lines = run_example("quickstart.py", tmp_path / "db")
    assert lines[0].startswith("indexed 200 documents: 34 bytes per token")
    assert lines[1].startswith("top 3: [('doc-2', ")
    assert "('doc-22', 2022)" in lines[2]
    after = ast.literal_eval(lines[3].split(": ", 1)[1])
    assert len(after) == 3 and not {"doc-2", "doc-22"} & set(after)
    assert lines[4] == "199 documents"


def test_text_search(tmp_path: Path) -> None:
    lines = run_example("text_search.py", tmp_path / "db")
    assert lines[0] == "indexed 6 passages as 384-d token vectors"
    top_ids = [lines[i + 1].split()[1] for i, line in enumerate(lines) if line.endswith("?")]
    assert top_ids == ["everest", "photosynthesis", "penguins"]
    assert lines[-2] == "same question, only biology: ['photosynthesis']"
    assert lines[-1] == "reopened: beethoven"


def test_langchain_rag(tmp_path: Path) -> None:
    pytest.importorskip("langchain_core")
    lines = run_example("langchain_rag.py", tmp_path / "db")
    assert lines[0] == "indexed 8 passages"
    retrieved = [line[3:].split()[0] for line in lines if line.startswith("- [")]
    assert retrieved[0:6:2] == ["loans", "printing", "storytime"]  # the best passage for each question
    assert len(retrieved) == 7 and "Question: How many books can I take home at once?" in lines
    assert "async batch gives the same prompts: True" in lines
    assert lines[-2] == "one passage, services only:" and lines[-1].startswith("- [wifi ")
