"""The posting lists ``LanceDBStore.optimize`` writes: they name exactly the stored documents of the version
they were built at, a process that has read nothing yet answers its first searches from them as a warm
one answers, and any later write sets them aside until the next ``optimize``."""

from __future__ import annotations

import lancedb
import numpy as np
import pytest

import colbert_store as cs
from colbert_store.filters import parse_filter
from colbert_store.kernel_loading import load_kernels
from colbert_store.reading import DocumentSource
from colbert_store.storage import PostingHolders, new_revisions
from tests.batches import make_batch, manifest
from tests.conftest import STORE_FACTORIES, make_corpus
from tests.test_index import build, ranked


@pytest.fixture(params=["lancedb", "lancedb-s3"])
def lance_store(request, tmp_path):
    """A LanceDB store, in a folder and on the loopback S3 server, and how to open it again."""
    factory = STORE_FACTORIES[request.param]
    return factory(tmp_path), lambda: factory(tmp_path)


def fresh_source(store) -> DocumentSource:
    return cs.Index.open(store, "papers")._source


def test_each_posting_list_names_the_documents_holding_its_centroid_per_codec_generation(tmp_path):
    store = STORE_FACTORIES["lancedb"](tmp_path)
    store.create_index("papers", manifest())
    old, new = make_batch([f"a{i}" for i in range(40)], seed=1), make_batch([f"b{i}" for i in range(30)], seed=2)
    for batch, generation in ((old, 0), (new, 1)):  # a retrain under way: documents of two codecs
        batch.revisions[:] = new_revisions(len(batch), generation)
        store.upsert("papers", batch)
    assert store.posting_holders("papers") is None  # none before the first optimize
    store.optimize("papers")
    snapshot = store.posting_holders("papers")
    assert snapshot is not None and snapshot.version == store.data_version("papers")
    centroids = np.arange(64)
    lists = store.postings("papers", snapshot, {0: centroids, 1: centroids})
    for generation, batch in ((0, old), (1, new)):
        offsets, keys = lists[generation]
        assert np.diff(offsets).tolist() == snapshot.holders[generation][:64].tolist()
        for c in centroids:
            holders = store.fetch_posted("papers", keys[offsets[c] : offsets[c + 1]])
            ranges = zip(batch.token_offsets[:-1], batch.token_offsets[1:])
            expected = [doc_id for doc_id, (start, end) in zip(batch.ids, ranges) if c in batch.centroid_ids[start:end]]
            assert sorted(holders.ids) == sorted(expected)
    assert store.postings("papers", snapshot, {0: np.array([], np.int64)}) == {}


def test_a_fresh_process_answers_from_the_postings_what_a_warm_one_answers(lance_store):
    store, reopen = lance_store
    corpus = make_corpus(n_docs=300)
    build(store, corpus)
    store.optimize("papers")
    load_kernels()  # both sides score alike (the torch stages round to float16)
    queries = [corpus.query(t, seed=t) for t in range(10)]
    source = fresh_source(reopen())
    assert isinstance(source.candidates_or_postings(np.array([0, 1]), None), PostingHolders)
    filtered = source.candidates_or_postings(np.array([0, 1]), parse_filter({"lang": "de"}))
    assert not isinstance(filtered, PostingHolders)  # a filter is the store's to evaluate
    first = []
    for query in queries:
        index = cs.Index.open(reopen(), "papers")
        first.append(ranked(index.search(query, k=5)))
        # Read by row id: the survivors of the postings' stage alone (no fill step, which reads more).
        assert 5 <= index.cache_info().documents <= cs.SearchParams().ncandidates
    warm = cs.Index.open(reopen(), "papers")
    warm.warm()
    assert first == [ranked(warm.search(query, k=5)) for query in queries]


def test_after_a_write_the_postings_are_set_aside_and_searches_see_the_write(lance_store):
    store, reopen = lance_store
    corpus = make_corpus(n_docs=120)
    index = build(store, corpus)
    store.optimize("papers")
    snapshot = store.posting_holders("papers")
    query = corpus.query(3, seed=3)
    best = index.search(query, k=1)[0].id
    index.delete([best])
    index.add(["late"], [corpus.embeddings[int(best.split("-")[1])]])
    source = fresh_source(reopen())
    assert not isinstance(source.candidates_or_postings(np.array([0, 1]), None), PostingHolders)
    hits = cs.Index.open(reopen(), "papers").search(query, k=3)
    assert hits[0].id == "late" and best not in {hit.id for hit in hits}
    store.optimize("papers")  # a new snapshot: the old one's lists are no longer read
    assert store.postings("papers", snapshot, {g: np.arange(4) for g in snapshot.holders}) is None
    assert isinstance(fresh_source(reopen()).candidates_or_postings(np.array([0, 1]), None), PostingHolders)
    assert cs.Index.open(reopen(), "papers").search(query, k=1)[0].id == "late"


def test_positions_read_after_a_write_name_stored_documents_only(tmp_path):
    """A search reads the candidates' positions after checking the version; a write in between moves the
    documents: what it reads then is other stored documents, never a deleted or replaced one."""
    store = STORE_FACTORIES["lancedb"](tmp_path)
    corpus = make_corpus(n_docs=80)
    index = build(store, corpus)
    store.optimize("papers")
    snapshot = store.posting_holders("papers")
    everyone = np.arange(snapshot.documents)
    assert sorted(store.fetch_posted("papers", everyone).ids) == sorted(corpus.ids)
    index.delete(corpus.ids[:5])
    index.add([corpus.ids[5]], [corpus.embeddings[6]])  # replaced: a new revision
    stored = {doc_id: revision for batch in index.documents() for doc_id, revision in zip(batch.ids, batch.revisions.tolist())}
    found = store.fetch_posted("papers", everyone)
    assert 0 < len(found) <= len(stored)
    assert all(stored.get(doc_id) == revision for doc_id, revision in zip(found.ids, found.revisions.tolist()))


def test_dropping_an_index_drops_its_postings(tmp_path):
    store = STORE_FACTORIES["lancedb"](tmp_path)
    build(store, make_corpus(n_docs=40))
    store.optimize("papers")

    def postings_tables() -> list[str]:
        return [name for name in lancedb.connect(tmp_path / "lancedb").list_tables().tables if name.endswith("__postings")]

    assert len(postings_tables()) == 1
    store.optimize("papers")  # rewritten in place
    assert len(postings_tables()) == 1
    store.drop_index("papers")
    assert postings_tables() == []


def test_an_optimize_without_postings_drops_them_and_searches_read_the_store(tmp_path):
    store = STORE_FACTORIES["lancedb"](tmp_path)
    corpus = make_corpus(n_docs=60)
    build(store, corpus)
    store.optimize("papers")
    expected = ranked(cs.Index.open(store, "papers").search(corpus.query(1), k=5))
    store.optimize("papers", postings=False)
    assert store.posting_holders("papers") is None
    assert not isinstance(fresh_source(store).candidates_or_postings(np.array([0, 1]), None), PostingHolders)
    assert ranked(cs.Index.open(store, "papers").search(corpus.query(1), k=5)) == expected
