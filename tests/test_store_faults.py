"""Storage faults get clear errors and leave the index as it was: a missing bucket, refused credentials,
an object store that goes away mid-search and comes back, a Qdrant Edge folder held by another process
or written by a newer Qdrant Edge."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

import colbert_store as cs
from colbert_store.adapters.lancedb import LanceDBStore
from colbert_store.adapters.qdrant_edge import QdrantEdgeStore
from tests import s3
from tests.conftest import DIM, make_corpus
from tests.proxy import Relay

QUICK_FAILURE = {"client_max_retries": "1", "client_retry_timeout": "2"}
"""Storage options that give up on an unanswered request within seconds (the defaults retry for minutes)."""


def test_a_missing_bucket_is_named() -> None:
    with pytest.raises(cs.StoreUnavailableError, match="bucket does not exist"):
        LanceDBStore("s3://no-such-bucket-here/index", storage_options=s3.storage_options(**QUICK_FAILURE))


def test_refused_credentials_are_named() -> None:
    process, endpoint = s3.start_server(refuse_credentials=True)
    try:
        with pytest.raises(cs.StoreUnavailableError, match="credentials were refused"):
            LanceDBStore("s3://any-bucket/index", storage_options=s3.storage_options(endpoint, **QUICK_FAILURE))
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_an_object_store_that_goes_away_mid_search_and_comes_back(tmp_path: Path) -> None:
    server = urlparse(s3.storage_options()["aws_endpoint"])
    relay = Relay((server.hostname or "127.0.0.1", server.port or 80))
    corpus = make_corpus(n_docs=60)
    uri = f"s3://{s3.bucket_for(tmp_path)}/index"
    store = LanceDBStore(uri, storage_options=s3.storage_options(relay.endpoint, **QUICK_FAILURE))
    index = cs.Index.create(store, "papers", dim=DIM)
    index.add(corpus.ids, corpus.embeddings, texts=corpus.texts, metadata=corpus.metadata)
    before = [(hit.id, hit.score) for hit in index.search(corpus.query(3), k=5)]
    outcomes: list[str] = []

    def search_through_the_outage() -> None:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                index.search(corpus.query(3), k=5)
                outcomes.append("answered")
            except cs.StoreUnavailableError:
                outcomes.append("unavailable")

    searcher = threading.Thread(target=search_through_the_outage)
    searcher.start()
    time.sleep(1)
    relay.cut()  # mid-search: the searcher is in a loop of searches
    with pytest.raises(cs.StoreUnavailableError, match="did not answer"):
        index.add(["new"], [corpus.embeddings[0]])
    time.sleep(3)
    relay.restore()
    searcher.join()
    assert "unavailable" in outcomes and outcomes[-1] == "answered"  # any other error would have ended the thread
    assert [(hit.id, hit.score) for hit in index.search(corpus.query(3), k=5)] == before
    assert len(index) == 60 and "new" not in {hit.id for hit in index.search(corpus.embeddings[0], k=3)}
    index.add(["new"], [corpus.embeddings[0]])
    assert index.search(corpus.embeddings[0], k=1)[0].id == "new"
    relay.close()


def test_a_qdrant_edge_folder_held_by_another_process_is_refused_clearly(tmp_path: Path) -> None:
    store = QdrantEdgeStore(tmp_path)
    cs.Index.create(store, "papers", dim=DIM).add(["a"], [np.ones((3, DIM), np.float32)])
    store.close()  # this process holds nothing now
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from colbert_store.adapters.qdrant_edge import QdrantEdgeStore; "
         "QdrantEdgeStore(sys.argv[1]); print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(cs.ColbertStoreError, match="open in another process"):
            QdrantEdgeStore(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert len(cs.Index.open(QdrantEdgeStore(tmp_path), "papers")) == 1


def test_qdrant_edge_keeps_no_write_ahead_log_and_each_returned_write_is_on_disk(tmp_path: Path) -> None:
    writer = (  # exits the moment its add returns: no close, no flush at exit
        "import os, sys, numpy as np, colbert_store as cs; from colbert_store.adapters.qdrant_edge import QdrantEdgeStore; "
        f"index = cs.Index.create(QdrantEdgeStore(sys.argv[1]), 'papers', dim={DIM}); "
        f"index.add(['a', 'b', 'c'], [np.ones((3, {DIM}), np.float32)] * 3); index.delete(['b']); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", writer, str(tmp_path)], check=True, timeout=120)
    shards = [config.parent for config in tmp_path.glob("*/edge_config.json")]
    assert len(shards) == 2  # the catalogue and the documents
    assert not [shard for shard in shards if (shard / "wal").exists()]
    index = cs.Index.open(QdrantEdgeStore(tmp_path), "papers")
    assert sorted(doc_id for batch in index.documents() for doc_id in batch.ids) == ["a", "c"]


def test_a_qdrant_edge_folder_written_by_a_newer_qdrant_edge_is_refused_clearly(tmp_path: Path) -> None:
    store = QdrantEdgeStore(tmp_path)
    cs.Index.create(store, "papers", dim=DIM)
    store.close()
    for version in tmp_path.glob("*/segments/*/version.info"):
        version.write_text("99.0.0")
    with pytest.raises(cs.ColbertStoreError, match="newer than"):
        QdrantEdgeStore(tmp_path)
