"""The framework adapters are optional: without their packages, colbert_store imports and they name their extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_missing_extras_give_an_install_hint() -> None:
    """With neither framework importable, colbert_store imports and each adapter names its extra."""
    code = """
import sys
sys.modules["langchain_core"] = None
sys.modules["llama_index"] = None
import colbert_store
for adapter in ("langchain", "llamaindex"):
    try:
        __import__(f"colbert_store.adapters.{adapter}")
    except colbert_store.MissingDependencyError as error:
        print(error)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                          cwd=Path(__file__).parent)
    assert done.stdout.splitlines() == [
        'langchain_core is needed for this feature: pip install "colbert-store[langchain]"',
        'llama_index.core is needed for this feature: pip install "colbert-store[llamaindex]"',
    ]
