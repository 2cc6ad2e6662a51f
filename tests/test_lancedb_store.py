"""LanceDB-specific behaviour: typed metadata columns and the scalar index that serves candidates."""

from __future__ import annotations

import time
from datetime import timedelta

import lancedb
import pytest

import colbert_store as cs
from colbert_store.adapters.lancedb import LanceDBStore
from tests.conftest import make_corpus
from tests.test_index import build, ranked


def test_metadata_kind_conflict_raises_and_leaves_the_index_unchanged(tmp_path):
    corpus = make_corpus(n_docs=60)
    index = build(LanceDBStore(tmp_path), corpus)
    before = ranked(index.search(corpus.query(0), k=10))
    with pytest.raises(cs.InvalidInputError, match="holds int values"):
        index.add(["new"], [corpus.embeddings[0]], metadata=[{"year": "not a number"}])
    assert len(index) == 60
    assert ranked(index.search(corpus.query(0), k=10)) == before


def test_candidates_are_served_by_a_label_list_index(tmp_path):
    corpus = make_corpus(n_docs=60)
    build(LanceDBStore(tmp_path), corpus)
    db = lancedb.connect(tmp_path)
    docs = db.open_table("_colbert_store_indexes").search().where("name = 'papers'").to_arrow()["docs"][0].as_py()
    table = db.open_table(docs)
    index_types = {index.columns[0]: index.index_type for index in table.list_indices()}
    assert index_types.get("centroids") == "LabelList"


def test_a_connection_passed_in_and_a_closed_store_answer_like_an_opened_path(tmp_path):
    corpus = make_corpus(n_docs=60)
    opened = LanceDBStore(tmp_path)  # candidate queries through its own async connection
    build(opened, corpus)
    where = {"topic": {"$in": [1, 2]}}
    queries = [corpus.query(t, seed=t) for t in range(3)]

    def answers(store):
        index = cs.Index.open(store, "papers")
        return [ranked(index.search(q, k=5, filter=where)) for q in queries]

    expected = answers(opened)
    topic_of = {doc_id: m["topic"] for doc_id, m in zip(corpus.ids, corpus.metadata)}
    assert all(hits for hits in expected)
    assert {topic_of[doc_id] for hits in expected for doc_id, _ in hits} <= {1, 2}
    assert answers(LanceDBStore(lancedb.connect(tmp_path))) == expected  # the sync query builder
    opened.close()
    assert answers(opened) == expected


def test_a_warm_reader_with_a_consistency_interval_sees_another_connections_delete_after_it(tmp_path):
    """The cache answers a warm reader's candidates until the store's version moves; that version and the
    candidates come from the same connection, so the reader sees the delete once its interval has passed."""
    corpus = make_corpus(n_docs=60)
    writer = build(LanceDBStore(tmp_path), corpus)
    reader = cs.Index.open(LanceDBStore(tmp_path, read_consistency_interval=timedelta(seconds=1)), "papers")
    reader.warm()
    query = corpus.query(2)
    victim = reader.search(query, k=1)[0].id
    writer.delete([victim])
    deadline = time.monotonic() + 30
    while victim in {hit.id for hit in reader.search(query, k=10)}:
        assert time.monotonic() < deadline, "the reader never saw the delete"
        time.sleep(0.1)
