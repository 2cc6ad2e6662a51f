"""Hybrid search on every store: the fused ranking against a brute-force fusion of the two legs, filters
on both legs, deleted and replaced documents, indexes without text, and bad fusion parameters."""

from __future__ import annotations

import numpy as np
import pytest

import colbert_store as cs
from colbert_store.fusion import Fusion, fuse
from tests.conftest import DIM, Corpus, make_corpus
from tests.test_maxsim import brute_force_maxsim

WORDS = ["alpha", "beta", "gamma", "delta", "kinase", "protein", "receptor", "binding", "cell", "tumour",
         "signal", "pathway", "enzyme", "lipid", "membrane", "virus"]
N_DOCS = 60


def worded_corpus() -> Corpus:
    """A small corpus whose texts are random draws of :data:`WORDS`, so BM25 ranks them apart."""
    corpus = make_corpus(N_DOCS, seed=3)
    rng = np.random.default_rng(5)
    corpus.texts = [" ".join(rng.choice(WORDS, int(rng.integers(3, 12)))) for _ in corpus.ids]
    return corpus


def build(store, corpus: Corpus, name: str = "hybrid", texts: bool = True) -> cs.Index:
    index = cs.Index.create(store, name, dim=DIM, nbits=2, n_centroids=32)
    index.add(corpus.ids, corpus.embeddings, texts=corpus.texts if texts else None, metadata=corpus.metadata)
    return index


def decoded_maxsim(index: cs.Index, query: np.ndarray) -> dict[str, float]:
    """Brute-force MaxSim of the query against every stored document, decoded."""
    stored = {}
    for batch in index.documents():
        vectors = index.codec.decompress(batch.centroid_ids, batch.residuals)
        bounds = zip(batch.token_offsets[:-1], batch.token_offsets[1:])
        stored.update({doc_id: vectors[start:stop] for doc_id, (start, stop) in zip(batch.ids, bounds)})
    return dict(zip(stored, brute_force_maxsim(query, list(stored.values()))))


def reference_fusion(
    dense: dict[str, float], lexical: dict[str, float], fusion: Fusion, tie_order: dict[str, int]
) -> list[tuple[str, float]]:
    """The fused ranking, one document at a time, from the scores each leg gave (ties: higher MaxSim,
    then ``tie_order``)."""

    def rank(scores: dict[str, float], doc: str) -> int:  # equal scores share the best rank
        return 1 + sum(other > scores[doc] for other in scores.values())

    def normalised(scores: dict[str, float], doc: str) -> float:
        low, high = min(scores.values()), max(scores.values())
        return (scores[doc] - low) / (high - low)

    fused = {}
    for doc in set(dense) | set(lexical):
        score = 0.0
        for scores, weight in ((dense, fusion.weight), (lexical, 1 - fusion.weight)):
            if doc in scores:
                score += 1 / (fusion.rrf_k + rank(scores, doc)) if fusion.method == "rrf" else weight * normalised(scores, doc)
        fused[doc] = score
    return sorted(fused.items(), key=lambda item: (-item[1], -dense.get(item[0], -np.inf), tie_order[item[0]]))


def ids_by_revision(index: cs.Index) -> dict[int, str]:
    return {int(rev): doc_id for batch in index.documents() for rev, doc_id in zip(batch.revisions, batch.ids)}


@pytest.mark.parametrize(
    "fusion", [Fusion("rrf"), Fusion("weighted", weight=0.3), Fusion("rrf", rrf_k=60, depth=4), Fusion(depth=4)]
)
@pytest.mark.parametrize("where", [None, {"lang": {"$ne": "de"}}])
def test_fused_ranking_equals_a_brute_force_fusion_of_the_two_legs(store, fusion, where):
    corpus = worded_corpus()
    index = build(store, corpus)
    query, text, k = corpus.query(2), "kinase receptor binding signal", 6
    allowed = {doc_id for doc_id, meta in zip(corpus.ids, corpus.metadata) if where is None or meta["lang"] != "de"}
    hits = index.search(query, k=k, filter=where, text=text, fusion=fusion, nprobe=32, ncandidates=N_DOCS, nrerank=N_DOCS)

    depth = max(k, fusion.depth)  # each leg's share; every centroid probed, so the dense leg ranks every document
    exact = {doc: score for doc, score in decoded_maxsim(index, query).items() if doc in allowed}
    dense = dict(sorted(exact.items(), key=lambda item: -item[1])[:depth])
    revisions, scores = store.text_search("hybrid", text, depth, cs.filters.parse_filter(where))
    names = ids_by_revision(index)
    lexical = {names[int(rev)]: float(score) for rev, score in zip(revisions, scores)}
    assert lexical and set(lexical) <= allowed and (set(lexical) - set(dense) if depth < N_DOCS else len(lexical) < len(dense))
    reference = reference_fusion(dense, lexical, fusion, {doc: rev for rev, doc in names.items()})[:k]
    assert [hit.id for hit in hits] == [doc for doc, _ in reference]
    np.testing.assert_allclose([hit.score for hit in hits], [score for _, score in reference], rtol=1e-4, atol=1e-6)


def test_filters_hold_on_both_legs(store):
    corpus = worded_corpus()
    corpus.texts[0] = "zyzzyva zyzzyva zyzzyva"  # the one document the lexical leg matches, lang "en"
    index = build(store, corpus)
    where = {"lang": "de"}
    revisions, _ = store.text_search("hybrid", "zyzzyva", 10, cs.filters.parse_filter(where))
    assert len(revisions) == 0
    hits = index.search(corpus.embeddings[0][:6], k=20, filter=where, text="zyzzyva kinase")
    assert hits and all(hit.metadata["lang"] == "de" for hit in hits)
    assert corpus.ids[0] not in {hit.id for hit in hits}
    assert index.search(corpus.embeddings[0][:6], k=1, text="zyzzyva")[0].id == corpus.ids[0]


def test_new_replaced_and_deleted_documents_on_both_legs(store_factory):
    store = store_factory()
    corpus = worded_corpus()
    index = build(store, corpus)
    query = corpus.query(4)
    # one more document, below the share of new rows that rebuilds a store's index: found all the same
    index.add(["new"], [corpus.embeddings[0]], texts=["zyzzyva appears here"], metadata=[{"lang": "en"}])
    assert [hit.id for hit in index.search(query, k=1, text="zyzzyva", fusion=Fusion(weight=0.0))] == ["new"]

    index.add(["new"], [corpus.embeddings[1]], texts=["no rare word now"])
    for searcher in (index, cs.Index.open(store_factory(), "hybrid")):
        hits = searcher.search(query, k=N_DOCS + 1, text="zyzzyva rare", fusion="rrf")
        assert len(hits) == N_DOCS + 1 and len({hit.id for hit in hits}) == N_DOCS + 1
        assert [hit.text for hit in hits if hit.id == "new"] == ["no rare word now"]
    revisions, _ = store.text_search("hybrid", "zyzzyva", 10, None)
    assert len(revisions) == 0

    index.delete(["new", corpus.ids[3]])
    for searcher in (index, cs.Index.open(store_factory(), "hybrid")):
        hits = searcher.search(query, k=N_DOCS + 1, text="rare " + corpus.texts[3])
        assert {"new", corpus.ids[3]}.isdisjoint(hit.id for hit in hits) and len(hits) == N_DOCS - 1
    revisions, _ = store.text_search("hybrid", "rare " + corpus.texts[3], N_DOCS + 1, None)
    assert {"new", corpus.ids[3]}.isdisjoint(ids_by_revision(index)[int(rev)] for rev in revisions)


def test_hybrid_search_on_an_index_stored_without_text_raises(store):
    corpus = worded_corpus()
    index = build(store, corpus, texts=False)
    with pytest.raises(cs.LexicalSearchUnavailableError, match="without text") as raised:
        index.search(corpus.query(1), k=3, text="kinase")
    assert raised.value.name == "hybrid"
    assert len(index) == N_DOCS and len(index.search(corpus.query(1), k=3)) == 3


def test_bad_hybrid_arguments_raise_and_change_nothing(store):
    corpus = worded_corpus()
    index = build(store, corpus)
    query = corpus.query(0)
    bad = [
        dict(text="kinase", fusion="sum"),
        dict(text="kinase", fusion=3),
        dict(fusion="rrf"),
        dict(text=7),
    ]
    for arguments in bad:
        with pytest.raises(cs.InvalidInputError):
            index.search(query, **arguments)
    with pytest.raises(cs.InvalidInputError, match="2 queries but 1 texts"):
        index.search_batch([query, query], texts=["kinase"])
    assert len(index) == N_DOCS
    batch = index.search_batch([query, corpus.query(1)], k=4, texts=["kinase", "lipid membrane"], fusion="rrf")
    assert [[hit.id for hit in hits] for hits in batch] == [
        [hit.id for hit in index.search(q, k=4, text=t, fusion="rrf")]
        for q, t in ((query, "kinase"), (corpus.query(1), "lipid membrane"))
    ]


@pytest.mark.parametrize(
    "arguments",
    [dict(method="sum"), dict(weight=1.5), dict(weight=-0.1), dict(weight=float("nan")), dict(weight="0.5"),
     dict(rrf_k=-1), dict(rrf_k=float("inf")), dict(depth=0), dict(depth=2.5), dict(depth=True)],
)
def test_bad_fusion_parameters_raise(arguments):
    with pytest.raises(cs.InvalidInputError):
        Fusion(**arguments)


def test_fusion_of_overrides_and_refuses_unknown_names():
    assert Fusion.of("rrf", rrf_k=10) == Fusion(method="rrf", rrf_k=10)
    assert Fusion.of(None) == Fusion()
    with pytest.raises(cs.InvalidInputError, match="unknown fusion parameters"):
        Fusion.of(None, alpha=1)
    with pytest.raises(cs.InvalidInputError):
        Fusion.of(0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["rrf", "weighted"])
def test_fuse_matches_the_reference_on_random_scores(method):
    rng = np.random.default_rng(11)
    dense = np.where(rng.random(40) < 0.7, rng.standard_normal(40), np.nan)
    lexical = np.where(np.isnan(dense) | (rng.random(40) < 0.4), rng.random(40) * 9, np.nan)
    fusion = Fusion(method, weight=0.35)
    order, scores = fuse(dense, lexical, fusion)
    reference = reference_fusion(
        {str(i): float(d) for i, d in enumerate(dense) if not np.isnan(d)},
        {str(i): float(s) for i, s in enumerate(lexical) if not np.isnan(s)},
        fusion,
        {str(i): i for i in range(40)},
    )
    assert [str(i) for i in order] == [doc for doc, _ in reference]
    np.testing.assert_allclose(scores, [score for _, score in reference], rtol=1e-9)
