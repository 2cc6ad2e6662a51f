"""Several reader processes search one LanceDB index while this process adds and deletes: no
reader errors, and no document is returned by a search that started after its delete returned."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import colbert_store as cs
from tests.conftest import STORE_FACTORIES, make_corpus

ROOT = Path(__file__).resolve().parent.parent
READERS = 3
SECONDS = 8.0


def test_reader_processes_never_see_a_deleted_document(tmp_path: Path) -> None:
    corpus = make_corpus()
    index = cs.Index.create(STORE_FACTORIES["lancedb"](tmp_path), "shared", dim=corpus.embeddings[0].shape[1])
    index.add(corpus.ids, corpus.embeddings)
    outputs = [tmp_path / f"reader-{number}.jsonl" for number in range(READERS)]
    readers = [
        subprocess.Popen([sys.executable, "-m", "tests.search_reader", str(tmp_path), str(SECONDS), str(output)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for output in outputs
    ]
    for reader in readers:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"

    deleted_at: dict[str, float] = {}
    extra = make_corpus(n_docs=60, seed=5, prefix="extra")
    for step, doc_id in enumerate(corpus.ids[:120]):
        if step % 20 == 0:
            index.add(extra.ids[step // 2 : step // 2 + 10], extra.embeddings[step // 2 : step // 2 + 10])
        index.delete([doc_id])
        deleted_at[doc_id] = time.monotonic()
        time.sleep(SECONDS / 200)

    searches = 0
    for reader, output in zip(readers, outputs):
        _, errors = reader.communicate(timeout=120)
        assert reader.returncode == 0, errors
        for line in output.read_text(encoding="utf-8").splitlines():
            search = json.loads(line)
            started, hit_ids = search["started"], search["ids"]
            searches += 1
            stale = [hit for hit in hit_ids if deleted_at.get(hit, float("inf")) < started]
            assert not stale, f"a search started at {started} returned deleted documents {stale}"
    assert searches > READERS * 10
