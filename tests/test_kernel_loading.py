"""The compiled kernels load in the background of a fresh process at its second search call, without a
search ever waiting for them, and a fork while they load leaves the child able to load them too.

Each test runs a fresh interpreter: this process loaded them at the start of the session."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_fresh(script: str, timeout: float = 120) -> str:
    """Run ``script`` in a fresh interpreter at the repository root; its stdout (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_fresh_process_searches_with_the_torch_stages_until_the_kernels_load_at_its_second_search_call():
    out = run_fresh(
        """
        import threading
        from qdrant_client import QdrantClient
        import colbert_store as cs
        from colbert_store.adapters.qdrant import QdrantStore
        from colbert_store.kernel_loading import loaded_kernels
        from tests.conftest import make_corpus
        from tests.test_index import build

        def loaders():
            return [t for t in threading.enumerate() if t.name == "colbert-store-kernels"]

        corpus = make_corpus(n_docs=80)
        index = build(QdrantStore(QdrantClient(":memory:")), corpus)
        query = corpus.query(3, seed=1)
        assert loaded_kernels() is None and not loaders(), "loading started before any search"
        first = [(hit.id, round(hit.score, 5)) for hit in index.search(query, k=5)]
        assert loaded_kernels() is None and not loaders(), "one search started loading"
        assert [(hit.id, round(hit.score, 5)) for hit in index.search(query, k=5)] == first
        [loader] = loaders()
        loader.join()
        assert loaded_kernels() is not None
        again = [(hit.id, round(hit.score, 5)) for hit in index.search(query, k=5)]
        assert again == first, (first, again)
        print("ok", first[0][0])
        """
    )
    assert out.startswith("ok doc")


def test_a_child_forked_while_the_kernels_load_can_load_them():
    out = run_fresh(
        """
        import os
        from colbert_store.kernel_loading import load_kernels, load_kernels_in_background, loaded_kernels

        load_kernels_in_background()
        pid = os.fork()  # the loader holds its lock and numba's compiler now
        if pid == 0:
            load_kernels()
            os._exit(0 if loaded_kernels() is not None else 1)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        """,
        timeout=60,
    )
    assert out.strip() == "child 0"
