"""Every benchmark script imports against the current library (they run outside the test suite, so a
renamed or moved name would otherwise break them unnoticed)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
OWN_ENVIRONMENT = {"plaid_runner"}  # runs inside PLAID's virtual environment, importing its sibling as a script


@pytest.mark.parametrize("module", sorted(
    path.stem for path in BENCHMARKS.glob("*.py") if path.stem not in OWN_ENVIRONMENT | {"__init__"}))
def test_benchmark_imports(module: str) -> None:
    loaded = importlib.import_module(f"benchmarks.{module}")
    assert loaded.__doc__, f"benchmarks/{module}.py has no docstring saying how to run it"
