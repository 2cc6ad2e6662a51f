"""Stanford PLAID's own environment: create it, and run ``benchmarks/plaid_runner.py`` in it.

colbert-ai is a benchmark baseline, never a dependency of colbert-store, so it lives in a virtual
environment of its own (:data:`benchmarks.lib.paths.PLAID_VENV`), created on first use with pinned
versions; ``plaid_runner.py`` reads the vector cache there with numpy alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.lib.paths import PLAID_VENV, REPO_ROOT

PLAID_REQUIREMENTS = ("torch==2.13.0", "colbert-ai==0.2.22", "faiss-cpu==1.15.1", "ninja==1.13.2")
PLAID_RUNNER = REPO_ROOT / "benchmarks" / "plaid_runner.py"


def plaid_python(venv: Path = PLAID_VENV) -> Path:
    """The PLAID environment's interpreter, creating the environment first if it is missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PLAID_REQUIREMENTS], check=True)
    return python


def run_plaid(cache: Path, *, nbits: int, k: int, index_dir: Path | None = None) -> dict[str, Any]:
    """Build and search a PLAID index of the cached vectors; what ``plaid_runner.py`` reports (rankings,
    seconds, build seconds, index bytes, peak memory, search settings). The index is kept in ``index_dir``
    if given, else deleted."""
    with tempfile.TemporaryDirectory(prefix="plaid-") as folder:
        out = Path(folder) / "plaid.json"
        subprocess.run(
            [str(plaid_python()), str(PLAID_RUNNER), "--cache", str(cache),
             "--index-dir", str(index_dir or Path(folder) / "index"), "--out", str(out), "--nbits", str(nbits), "--k", str(k)],
            check=True,
        )
        return json.loads(out.read_text())


def serve_command(index_dir: Path, cache: Path, *, k: int, warmup: int, padded: bool = False) -> list[str]:
    """The command of a PLAID worker that opens ``index_dir`` and answers query blocks (``block_server``),
    of the queries padded with ``[MASK]`` if ``padded``."""
    return [
        str(plaid_python()), str(PLAID_RUNNER), "--serve", "--cache", str(cache), "--index-dir", str(index_dir),
        "--k", str(k), "--warmup", str(warmup), *(["--padded"] if padded else []),
    ]
