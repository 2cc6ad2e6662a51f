"""Where the benchmarks find their data, keep PLAID's environment and write their results."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
PLAID_VENV = REPO_ROOT / ".venv-plaid"
DEFAULT_CACHE_DIR = Path("~/.cache/colbert-store/scifact").expanduser()
"""The SciFact vector cache (``benchmarks.scifact_vectors``)."""
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "scifact"
"""``../shared/data/scifact`` relative to the repository root; override with ``$COLBERT_STORE_SCIFACT_DATA``."""


def default_data_dir() -> Path:
    """``$COLBERT_STORE_SCIFACT_DATA`` when set, else :data:`DEFAULT_DATA_DIR`."""
    return Path(os.environ.get("COLBERT_STORE_SCIFACT_DATA", DEFAULT_DATA_DIR))
