"""LanceDB-specific behaviour: typed metadata columns, the scalar index that serves candidates and the
files one add leaves."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import lancedb
import numpy as np
import pytest

import colbert_store as cs
from colbert_store import writing
from colbert_store.adapters.lancedb import LanceDBStore
from colbert_store.adapters.lancedb.creation import CREATOR_KEY, restore_rows_erased_by
from colbert_store.adapters.lancedb.retries import retrying
from tests.batches import by_id, make_batch, manifest
from tests.conftest import DIM, make_corpus
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


def test_one_add_compresses_in_parts_but_writes_one_fragment_and_one_copy_of_each_index(tmp_path, monkeypatch):
    """Each write is a fragment of its own, and the label-list index grows with the fragments it spans."""
    monkeypatch.setattr(writing, "TOKENS_PER_ENCODE", 100)  # the corpus compresses in dozens of parts
    corpus = make_corpus(n_docs=200)
    index = build(LanceDBStore(tmp_path), corpus)
    folder = _documents_folder(tmp_path)
    assert len(list((folder / "data").iterdir())) == 1
    assert len(list((folder / "_indices").iterdir())) == 4  # centroids, id, rev, text: each built once
    stored = {doc_id: n for batch in index.documents() for doc_id, n in zip(batch.ids, np.diff(batch.token_offsets))}
    assert stored == {doc_id: len(m) for doc_id, m in zip(corpus.ids, corpus.embeddings)}


def test_an_add_over_the_write_size_is_split_into_as_few_even_writes_as_fit(tmp_path, monkeypatch):
    corpus = make_corpus(n_docs=200)
    encoded = sum(len(m) for m in corpus.embeddings) * (DIM * 2 // 8 + 2)  # nbits=2 residuals and uint16 ids
    monkeypatch.setattr(writing, "BYTES_PER_WRITE", encoded // 3 + 1)
    build(LanceDBStore(tmp_path), corpus)
    sizes = sorted(f.stat().st_size for f in (_documents_folder(tmp_path) / "data").iterdir())
    assert len(sizes) == 3
    assert sizes[-1] < 1.2 * sizes[0]


def _documents_folder(folder: Path) -> Path:
    """The folder of index ``papers``'s documents table."""
    docs = lancedb.connect(folder).open_table("_colbert_store_indexes").search().where("name = 'papers'").to_arrow()["docs"][0]
    return folder / f"{docs.as_py()}.lance"


def test_a_fetch_by_the_row_ids_of_the_last_live_set_read_answers_what_a_lookup_by_revision_would(tmp_path):
    """Row ids noted by a live-set read go stale as documents are deleted, replaced, added and moved by
    compaction: a fetch still returns each stored document asked for, once, whole, and nothing else."""
    store = LanceDBStore(tmp_path)
    store.create_index("papers", manifest())
    first = make_batch([f"a{i}" for i in range(40)], seed=1, first_revision=1)
    store.upsert("papers", first)
    store.candidates("papers", None, None)  # the live set: notes the 40 rows' ids
    later = make_batch([f"b{i}" for i in range(10)], seed=2, first_revision=100)
    replacement = make_batch(["a2"], seed=3, first_revision=200)
    store.upsert("papers", later)
    store.upsert("papers", replacement)
    store.delete("papers", ["a0", "a1"])
    expected = {**by_id(first), **by_id(later), **by_id(replacement)}
    for gone in ("a0", "a1"):
        del expected[gone]
    asked = np.concatenate([first.revisions, later.revisions, replacement.revisions, [999]])
    for step in ("ids noted before the writes", "ids moved by compaction", "ids read again"):
        found = store.fetch("papers", np.random.default_rng(0).permutation(asked))
        assert sorted(found.ids) == sorted(expected), step
        assert by_id(found) == expected, step
        if step == "ids noted before the writes":
            store.optimize("papers", cleanup_older_than=timedelta(0))
        elif step == "ids moved by compaction":
            store.candidates("papers", None, None)


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


def test_a_writer_with_an_old_schema_names_its_new_metadata_column_after_another_writers(tmp_path):
    """Metadata columns are named by position, so two writers adding keys at once both reach for the
    same name; the one that reads the schema late (here: kept old by its consistency interval) must
    take the next name, not fail or retry against its old schema until it gives up."""
    corpus = make_corpus(n_docs=60)
    first = build(LanceDBStore(tmp_path), corpus)
    late = cs.Index.open(LanceDBStore(tmp_path, read_consistency_interval=timedelta(hours=1)), "papers")
    late.add(["late-0"], [corpus.embeddings[0]], metadata=[{"year": 1}])  # its table handle is now open
    first.add(["first-1"], [corpus.embeddings[1]], metadata=[{"lab": "x"}])
    late.add(["late-2"], [corpus.embeddings[2]], metadata=[{"venue": "y"}])
    assert [hit.id for hit in first.search(corpus.query(2), k=3, filter={"venue": "y"})] == ["late-2"]
    assert [hit.id for hit in first.search(corpus.query(1), k=3, filter={"lab": "x"})] == ["first-1"]
    assert len(first) == 63


def test_a_creation_of_the_catalogue_that_lands_on_a_written_one_puts_back_the_rows_it_overwrote(tmp_path):
    """Lance commits a creation that finds the table created meanwhile as an overwrite of it. That race
    cannot be provoked on demand, so the overwrite it commits (the late creator's schema, no rows) is
    committed here directly, after an index was created and before another one is."""
    store = LanceDBStore(tmp_path)
    store.create_index("papers", manifest())
    db = lancedb.connect(tmp_path)
    catalogue = "_colbert_store_indexes"
    late_schema = db.open_table(catalogue).schema.with_metadata({CREATOR_KEY: b"late"})
    db.create_table(catalogue, schema=late_schema, mode="overwrite")
    store.create_index("notes", manifest())
    assert store.list_indexes() == ["notes"]  # what the overwrite did
    assert restore_rows_erased_by(db.open_table(catalogue), "late", ["name"]) == 1
    assert store.list_indexes() == ["notes", "papers"]
    assert store.read_manifest("papers") == manifest()
    assert restore_rows_erased_by(db.open_table(catalogue), "late", ["name"]) == 0  # already back
    assert restore_rows_erased_by(db.open_table(catalogue), "never-created", ["name"]) == 0
    assert store.list_indexes() == ["notes", "papers"]


def test_a_commit_lance_gave_up_on_under_concurrent_writers_is_retried_and_other_errors_are_not() -> None:
    refusals = [
        RuntimeError("lance error: Retryable commit conflict for version 7: Please retry"),
        RuntimeError("lance error: Too many concurrent writers. Attempted 2 times, but failed on retry_timeout"),
    ]

    def commit() -> str:
        if refusals:
            raise refusals.pop(0)
        return "committed"

    assert retrying(commit, "a test commit") == "committed" and refusals == []

    def broken() -> None:
        refusals.append(RuntimeError("lance error: Invalid user input"))
        raise refusals[-1]

    with pytest.raises(RuntimeError, match="Invalid user input"):
        retrying(broken, "a test commit")
    assert len(refusals) == 1  # tried once
