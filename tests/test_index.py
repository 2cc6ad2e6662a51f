"""Conformance suite: one body per behaviour, run on every supported store."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import colbert_store as cs
from colbert_store import codec as codec_module
from colbert_store.adapters.qdrant import QdrantStore
from colbert_store.codec import query_second_moment
from colbert_store.filters import matches, parse_filter
from tests.conftest import DIM, Corpus, make_corpus
from tests.test_maxsim import brute_force_maxsim


def build(store, corpus: Corpus, name: str = "papers", **settings) -> cs.Index:
    index = cs.Index.create(store, name, dim=DIM, nbits=2, **settings)
    index.add(corpus.ids, corpus.embeddings, texts=corpus.texts, metadata=corpus.metadata)
    return index


def assert_top_by_maxsim_over_decoded(index: cs.Index, query: np.ndarray, n_docs: int, k: int = 5) -> None:
    """A search keeping every candidate returns the top ``k`` by brute-force MaxSim over the decoded
    documents, with those scores."""
    hits = index.search(query, k=k, ncandidates=n_docs)
    stored = {}
    for batch in index.documents():
        vectors = index.codec.decompress(batch.centroid_ids, batch.residuals)
        bounds = zip(batch.token_offsets[:-1], batch.token_offsets[1:])
        stored.update({doc_id: vectors[start:stop] for doc_id, (start, stop) in zip(batch.ids, bounds)})
    reference = dict(zip(stored, brute_force_maxsim(query, list(stored.values()))))
    np.testing.assert_allclose([h.score for h in hits], [reference[h.id] for h in hits], atol=1e-4)
    assert [h.id for h in hits] == sorted(reference, key=reference.get, reverse=True)[:k]


def ranked(hits: list[cs.Hit]) -> list[tuple[str, float]]:
    return [(hit.id, round(hit.score, 5)) for hit in hits]


def test_create_twice_raises_and_open_missing_raises(store):
    cs.Index.create(store, "papers", dim=DIM)
    with pytest.raises(cs.IndexExistsError, match="papers"):
        cs.Index.create(store, "papers", dim=DIM)
    with pytest.raises(cs.IndexNotFoundError, match="nothing"):
        cs.Index.open(store, "nothing")


@pytest.mark.parametrize("name", ["", "_lead", "-lead", "a b", "x/y", "é", "a.b", "a" * 65, None, 7])
def test_index_names_follow_one_rule_on_every_store(store, name):
    with pytest.raises(cs.InvalidInputError, match="index name"):
        cs.Index.create(store, name, dim=DIM)
    assert store.list_indexes() == []


def test_every_name_the_rule_allows_works_on_every_store(store, corpus):
    names = ["catalogue", "a", "A-b_c", "9" * 64, "docs"]
    for name in names:
        cs.Index.create(store, name, dim=DIM).add(corpus.ids[:3], corpus.embeddings[:3])
    assert store.list_indexes() == sorted(names)
    assert [len(cs.Index.open(store, name)) for name in names] == [3] * len(names)


def test_empty_index_returns_no_hits(store, corpus):
    index = cs.Index.create(store, "papers", dim=DIM)
    assert len(index) == 0
    assert index.search(corpus.query(0), k=5) == []


def test_search_finds_the_topic_and_scores_are_exact_maxsim(store, corpus):
    index = build(store, corpus)
    query = corpus.query(3)
    hits = index.search(query, k=10, ncandidates=len(corpus.ids))
    assert len(hits) == 10
    assert all(hit.metadata["topic"] == 3 for hit in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # Reference: brute-force MaxSim over every stored document, decompressed by the codec.
    stored = {doc_id: None for doc_id in corpus.ids}
    for batch in index.documents():
        vectors = index.codec.decompress(batch.centroid_ids, batch.residuals)
        for i, doc_id in enumerate(batch.ids):
            stored[doc_id] = vectors[batch.token_offsets[i] : batch.token_offsets[i + 1]]
    reference = brute_force_maxsim(query, list(stored.values()))
    order = np.argsort(-reference)[:10]
    assert [h.id for h in hits] == [list(stored)[i] for i in order]
    np.testing.assert_allclose([h.score for h in hits], reference[order], atol=1e-4)
    # Again from the warm cache, whose documents' renormalisation factors are now remembered.
    assert ranked(index.search(query, k=10, ncandidates=len(corpus.ids))) == ranked(hits)


def test_a_codec_trained_with_queries_scores_exactly_and_keeps_its_weighting_through_a_retrain(
    store, corpus, monkeypatch
):
    monkeypatch.setattr(codec_module, "_MIN_LEARNED_SAMPLE", 1024)  # the corpus is too small for learned codebooks
    index = cs.Index.create(store, "papers", dim=DIM, nbits=2)
    with pytest.raises(cs.InvalidInputError, match=r"queries\[1\] has no tokens"):
        index.train(corpus.embeddings, queries=[corpus.query(0), np.empty((0, DIM))])
    assert index.codec is None
    queries = [corpus.query(t, seed=t) for t in range(10)]
    index.train(corpus.embeddings, queries=queries)
    index.add(corpus.ids, corpus.embeddings, metadata=corpus.metadata)
    assert index.codec is not None and index.codec.residual_basis is not None
    np.testing.assert_allclose(index.codec.query_moment, query_second_moment(np.concatenate(queries)), atol=1e-6)
    assert_top_by_maxsim_over_decoded(index, corpus.query(4), len(corpus.ids))
    with pytest.raises(cs.InvalidInputError, match="retrain"):
        index.train(corpus.embeddings)
    moment = index.codec.query_moment
    index.retrain()
    assert index.codec.residual_basis is not None
    np.testing.assert_array_equal(index.codec.query_moment, moment)


def test_retrain_with_new_queries_replaces_the_weighting_and_checks_them_first(store, corpus, monkeypatch):
    monkeypatch.setattr(codec_module, "_MIN_LEARNED_SAMPLE", 1024)  # the corpus is too small for learned codebooks
    index = build(store, corpus)  # trained without queries: no weighting
    assert index.codec is not None and index.codec.query_moment is None
    before = index.codec.to_bytes()
    with pytest.raises(cs.InvalidInputError, match=r"queries\[1\] contains NaN"):
        index.retrain(queries=[corpus.query(0), np.full((3, DIM), np.nan, np.float32)])
    assert index.codec.to_bytes() == before
    asked = [corpus.query(t, seed=100 + t) * 3 for t in range(10)]  # normalised like any query
    index.retrain(queries=asked)
    unit = [q / np.linalg.norm(q, axis=1, keepdims=True) for q in asked]
    assert index.codec.residual_basis is not None
    np.testing.assert_allclose(index.codec.query_moment, query_second_moment(np.concatenate(unit)), atol=1e-6)
    assert len(index) == len(corpus.ids)
    assert_top_by_maxsim_over_decoded(index, corpus.query(4), len(corpus.ids))


def test_query_vectors_are_normalised_like_documents(store, corpus):
    index = build(store, corpus)
    query = corpus.query(4)
    assert ranked(index.search(query * 7.5, k=5)) == ranked(index.search(query, k=5))
    with pytest.raises(cs.InvalidInputError, match="all-zero token vector at row 1"):
        index.search(np.stack([query[0], np.zeros(DIM, np.float32)]))


def test_hits_carry_text_and_metadata(store, corpus):
    index = build(store, corpus)
    hit = index.search(corpus.embeddings[17], k=1)[0]
    assert hit.id == corpus.ids[17]
    assert hit.text == corpus.texts[17]
    assert hit.metadata == corpus.metadata[17]
    hit.metadata["topic"] = "changed by the caller"  # a hit's dict is the caller's own, not the cache's
    assert index.search(corpus.embeddings[17], k=1)[0].metadata == corpus.metadata[17]


def test_reopen_gives_identical_results(store_factory, corpus):
    first = build(store_factory(), corpus)
    queries = [corpus.query(t, seed=t) for t in range(5)]
    before = [ranked(first.search(q, k=10)) for q in queries]
    reopened = cs.Index.open(store_factory(), "papers")
    assert reopened.settings == first.settings
    assert [ranked(reopened.search(q, k=10)) for q in queries] == before
    assert len(reopened) == len(corpus.ids)


def test_warming_the_cache_keeps_results_and_later_writes_are_seen(store_factory, corpus):
    first = build(store_factory(), corpus)
    queries = [corpus.query(t, seed=t) for t in range(5)]
    before = [ranked(first.search(q, k=10)) for q in queries]
    warmed = cs.Index.open(store_factory(), "papers")
    assert warmed.warm() == len(corpus.ids)
    assert [ranked(warmed.search(q, k=10)) for q in queries] == before
    gone = before[0][0][0]
    first.delete([gone])
    first.add(["new"], [corpus.query(0, seed=0)])  # written by another object after the warm-up
    hits = warmed.search(queries[0], k=10)
    assert hits[0].id == "new" and gone not in {hit.id for hit in hits}


def test_deleted_ids_never_come_back(store, corpus):
    index = build(store, corpus)
    query = corpus.query(2)
    doomed = [hit.id for hit in index.search(query, k=5)]
    index.delete(doomed)
    assert len(index) == len(corpus.ids) - 5
    for _ in range(2):  # the second search is served from the warm cache
        returned = {hit.id for hit in index.search(query, k=50, ncandidates=1000)}
        assert returned.isdisjoint(doomed)
    index.delete(["not-there"])  # unknown ids are ignored
    assert len(index) == len(corpus.ids) - 5


def test_replacing_an_id_leaves_one_document(store, corpus):
    index = build(store, corpus)
    target = corpus.ids[0]
    index.search(corpus.embeddings[0], k=1)  # warm the cache with the old version
    new_vectors = corpus.query(7, n_tokens=12, seed=99)
    index.add([target], [new_vectors], texts=["replaced"], metadata=[{"year": 1999}])
    assert len(index) == len(corpus.ids)
    hits = index.search(new_vectors, k=len(corpus.ids), ncandidates=1000)
    assert [h.id for h in hits].count(target) == 1
    assert hits[0].id == target and hits[0].text == "replaced" and hits[0].metadata == {"year": 1999}


FILTERS = [
    {"lang": "en"},
    {"year": {"$gte": 2010, "$lt": 2020}},
    {"lang": {"$in": ["de", "fr"]}, "open": True},
    {"$or": [{"year": {"$lte": 2003}}, {"score": {"$gt": 20.5}}]},
    {"$not": {"lang": "en"}},
    {"lang": {"$ne": "de"}, "year": {"$nin": [2001, 2002]}},
    {"$and": [{"topic": {"$eq": 4}}, {"$not": {"open": False}}]},
    {"missing_field": "x"},
]


@pytest.mark.parametrize("where", FILTERS, ids=[str(f) for f in FILTERS])
def test_every_hit_satisfies_the_filter(store, corpus, where):
    index = build(store, corpus)
    expr = parse_filter(where)
    allowed = {doc_id for doc_id, meta in zip(corpus.ids, corpus.metadata) if matches(expr, meta)}
    for topic in range(4):
        hits = index.search(corpus.query(topic), k=20, filter=where, ncandidates=1000, nprobe=64)
        assert {hit.id for hit in hits} <= allowed
        assert len(hits) == min(20, len(allowed))


def test_filter_values_cannot_escape_the_filter_syntax(store, corpus):
    index = build(store, corpus)
    hostile = ["en' OR '1'='1", 'en" OR 1=1 --', "en\\", "') OR true --", "en%"]
    for value in hostile:
        assert index.search(corpus.query(0), k=10, filter={"lang": value}) == []
        assert len(index.search(corpus.query(0), k=10, filter={"lang": {"$in": [value, "de"]}})) == 10


def test_bad_filters_raise_clear_errors(store, corpus):
    index = build(store, corpus)
    with pytest.raises(cs.FilterError, match=r"\$regex"):
        index.search(corpus.query(0), filter={"lang": {"$regex": "e.*"}})
    with pytest.raises(cs.FilterError, match="list"):
        index.search(corpus.query(0), filter={"lang": {"$in": "en"}})
    with pytest.raises(cs.FilterError, match="dict"):
        index.search(corpus.query(0), filter={"$or": [["lang", "en"]]})
    with pytest.raises(cs.FilterError, match="NUL"):
        index.search(corpus.query(0), filter={"lang": {"$in": ["en", "e\x00n"]}})


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("nbits", True, "nbits must be 1, 2 or 4"),
        ("n_centroids", True, "n_centroids must be a positive integer"),
        ("n_centroids", 2**33, "n_centroids must be at most 2\\*\\*32"),
        ("sample_tokens", 0, "sample_tokens must be a positive integer"),
        ("kmeans_iterations", 0, "kmeans_iterations must be a positive integer"),
        ("kmeans_iterations", "6", "kmeans_iterations must be a positive integer"),
        ("seed", -1, "seed must be a non-negative integer"),
        ("seed", 1.0, "seed must be a non-negative integer"),
    ],
)
def test_bad_index_settings_raise_and_create_nothing(store, setting, value, message):
    with pytest.raises(cs.InvalidInputError, match=message):
        cs.Index.create(store, "papers", dim=DIM, **{setting: value})
    assert store.list_indexes() == []


def test_bad_input_raises_and_leaves_the_index_unchanged(store, corpus):
    index = build(store, corpus)
    query = corpus.query(1)
    before = ranked(index.search(query, k=10))
    good = corpus.embeddings[0]
    bad_calls = [
        ((["a", "b"], [good]), "2 ids but 1 embeddings"),
        ((["a"], [good[:, :5]]), r"shape \(n_tokens, 32\)"),
        ((["a"], [np.full_like(good, np.nan)]), "NaN"),
        ((["a"], [good.astype(np.int64)]), "floating-point"),
        ((["a", "a"], [good, good]), "repeats 'a'"),
        (([""], [good]), "empty string"),
        (([7], [good]), "must be a string"),
        ((["a"], [np.zeros((0, DIM), np.float32)]), "no tokens"),
        ((["a", "b"], [good, good], ["t"]), "2 ids but 1 texts"),
        ((["a"], [good], None, [{"k": object()}]), "JSON-like"),
        ((["a"], [good], None, [{"k": float("inf")}]), "finite"),
        ((["a", "bad-doc"], [good, good], None, [{"fine": 1}, {"big": 2**64}]), r"id 'bad-doc'.*'big'.*64 bits"),
        ((["a", "bad-doc"], [good, good], None, [{"fine": 1}, {1: "int key"}]), r"id 'bad-doc'.* key 1 "),
        ((["a", "bad-doc"], [good, good], None, [{}, {"s": "\ud800"}]), r"id 'bad-doc'.*'s'.*not valid unicode"),
        ((["a", "bad-doc"], [good, good], ["ok", "lone \ud800"]), r"texts\[1\] \(id 'bad-doc'\) is not valid unicode"),
        ((["x\ud800"], [good]), r"ids\[0\] is not valid unicode"),
    ]
    for args, message in bad_calls:
        with pytest.raises(cs.InvalidInputError, match=message):
            index.add(*args)
    with pytest.raises(cs.InvalidInputError, match="shape"):
        index.search(query[:, :4])
    with pytest.raises(cs.InvalidInputError, match="k must be"):
        index.search(query, k=0)
    with pytest.raises(cs.InvalidInputError, match="unknown search parameters"):
        index.search(query, nprobes=3)
    assert len(index) == len(corpus.ids)
    assert ranked(index.search(query, k=10)) == before


def test_per_call_knobs_do_not_change_the_index_settings(store, corpus):
    index = build(store, corpus)
    defaults = index.settings.search
    index.search(corpus.query(0), k=5, nprobe=1, ncandidates=3, centroid_threshold=None)
    assert index.settings.search == defaults


def test_search_defaults_stored_before_the_rerank_margin_keep_a_fixed_number_of_finalists(store, corpus):
    build(store, corpus, search=cs.SearchParams(nrerank=64))
    manifest = store.read_manifest("papers")
    older = {**manifest, "version": manifest["version"] + 1}
    older["settings"] = {**manifest["settings"], "search": {
        knob: value for knob, value in manifest["settings"]["search"].items() if knob != "rerank_margin"}}
    assert store.replace_manifest("papers", older, expected_version=manifest["version"])
    assert cs.Index.open(store, "papers").settings.search == cs.SearchParams(nrerank=64, rerank_margin=None)


def test_stored_search_defaults_can_be_changed_for_every_process(store_factory, corpus, monkeypatch):
    index = build(store_factory(), corpus, search=cs.SearchParams(nprobe=3, nrerank=20))
    other = cs.Index.open(store_factory(), "papers")  # another connection, as another process would hold
    query = corpus.query(2)
    other.search(query)
    changed = index.set_search_defaults(ncandidates=40, centroid_threshold=None)
    assert changed == cs.SearchParams(nprobe=3, ncandidates=40, nrerank=20, centroid_threshold=None)
    assert index.settings.search == changed
    assert cs.Index.open(store_factory(), "papers").settings.search == changed
    monkeypatch.setattr("colbert_store.index.MANIFEST_CHECK_SECONDS", 0.0)  # the next search reads the manifest
    other.search(query)
    assert other.settings.search == changed
    assert index.set_search_defaults(cs.SearchParams(), nrerank=96) == cs.SearchParams(nrerank=96)

    version = index.store.read_manifest("papers")["version"]
    for bad, message in [({"nprobe": 0}, "nprobe"), ({"nprobes": 2}, "unknown search parameters"),
                         ({"centroid_threshold": float("nan")}, "centroid_threshold")]:
        with pytest.raises(cs.InvalidInputError, match=message):
            index.set_search_defaults(**bad)
    with pytest.raises(cs.InvalidInputError, match="SearchParams"):
        index.set_search_defaults({"nprobe": 2})
    assert index.store.read_manifest("papers")["version"] == version
    assert cs.Index.open(store_factory(), "papers").settings.search == cs.SearchParams(nrerank=96)
    assert [hit.id for hit in index.search(query, k=5)] == [hit.id for hit in other.search(query, k=5)]


def test_odd_ids_round_trip(store, corpus):
    index = build(store, corpus)
    odd = ["it's", 'quote"d', "ünï©ødé ✓", "semi;colon -- comment", "x" * 4096, "back\\slash", "%_wild"]
    vectors = [corpus.query(i % 10, seed=i) for i in range(len(odd))]
    index.add(odd, vectors)
    for doc_id, query in zip(odd, vectors):
        assert index.search(query, k=1)[0].id == doc_id
    index.delete(odd)
    assert len(index) == len(corpus.ids)


def test_incremental_adds_are_searchable_without_rebuild(store):
    first, second = make_corpus(150, seed=1, prefix="a"), make_corpus(150, seed=1, prefix="b")
    index = build(store, first)
    index.add(second.ids, second.embeddings)
    assert len(index) == 300
    hit_ids = {h.id for h in index.search(second.embeddings[5], k=2)}
    assert {"a-5", "b-5"} == hit_ids  # same vectors under both prefixes


def test_readers_and_a_writer_concurrently(store, corpus):
    index = build(store, corpus)
    errors: list[BaseException] = []
    deleted: set[str] = set()
    stop = threading.Event()
    extra = make_corpus(40, seed=5, prefix="extra")

    def reader(topic: int) -> None:
        try:
            while not stop.is_set():
                snapshot = set(deleted)  # deletes that had returned before this search began
                hits = index.search(corpus.query(topic % 10), k=10)
                assert not {h.id for h in hits} & snapshot
        except BaseException as error:  # noqa: BLE001 - collected and re-raised below
            errors.append(error)

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 4
    i = 0
    while time.monotonic() < deadline and i < len(extra.ids):
        index.add([extra.ids[i]], [extra.embeddings[i]])
        index.delete([corpus.ids[i]])
        deleted.add(corpus.ids[i])
        i += 1
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert len(index) == len(corpus.ids)


def test_an_index_copied_to_another_store_searches_the_same(store, corpus, tmp_path):
    index = build(store, corpus)
    index.retrain()  # a manifest past its first version, two codecs named
    target = QdrantStore(":memory:")
    cs.copy_index(store, target, "papers", target_name="copied")
    copied = cs.Index.open(target, "copied")
    assert len(copied) == len(corpus.ids)
    for topic in range(3):
        query, where = corpus.query(topic), {"open": True}
        assert ranked(copied.search(query, k=10, filter=where)) == ranked(index.search(query, k=10, filter=where))
    with pytest.raises(cs.IndexExistsError):
        cs.copy_index(store, target, "papers", target_name="copied")
    target.close()


def test_a_warm_reader_sees_another_connections_writes_at_its_next_search(store_factory, corpus):
    """A warmed reader answers candidates from its cache while the store's documents are unchanged;
    a write through another connection changes them, and the reader's next search reflects it."""
    writer = build(store_factory(), corpus)
    reader = cs.Index.open(store_factory(), "papers")
    reader.warm()
    query = corpus.query(4)
    first = reader.search(query, k=3)[0].id
    writer.delete([first])
    assert first not in {hit.id for hit in reader.search(query, k=10)}
    position = corpus.ids.index(first)
    writer.add([first], [corpus.embeddings[position]], metadata=[{"version": 2}])
    hit = reader.search(query, k=1)[0]
    assert (hit.id, hit.metadata) == (first, {"version": 2})
    assert ranked(reader.search(query, k=5, filter={"version": 2})) == ranked(writer.search(query, k=5, filter={"version": 2}))
