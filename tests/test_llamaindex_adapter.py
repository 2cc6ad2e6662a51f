"""The LlamaIndex retriever end to end: real MiniLM encoder, real stores; nodes must equal the core retriever's hits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters  # noqa: E402

import colbert_store as cs  # noqa: E402
from colbert_store.adapters.lancedb import LanceDBStore  # noqa: E402
from colbert_store.adapters.llamaindex import ColbertStoreLlamaIndexRetriever, metadata_filters_to_dict  # noqa: E402
from colbert_store.encoder import ColBERTEncoder  # noqa: E402
from colbert_store.storage import Store  # noqa: E402

NOTES = {
    "kettle": ("Descale the kettle every month with vinegar or citric acid.", "kitchen", 2),
    "oven": ("Clean the oven with baking soda paste and leave it overnight.", "kitchen", 3),
    "gutter": ("Clear leaves from the gutters in autumn so rain can drain.", "outside", 5),
    "lawn": ("Mow the lawn weekly in summer and leave the clippings as mulch.", "outside", 1),
    "boiler": ("Have the gas boiler serviced once a year by a registered engineer.", "heating", 4),
    "radiator": ("Bleed the radiators when their tops stay cold while the bottoms are warm.", "heating", 2),
}
QUERIES = ["How do I remove limescale from the kettle?", "My radiator is cold at the top", "What to do with grass cuttings?"]


@pytest.fixture(scope="module")
def encoder(minilm_folder: str) -> ColBERTEncoder:
    return ColBERTEncoder.from_pretrained(minilm_folder, doc_maxlen=128, device="cpu")


def build(encoder: ColBERTEncoder, store: Store) -> ColbertStoreLlamaIndexRetriever:
    return ColbertStoreLlamaIndexRetriever.from_texts(
        [text for text, _, _ in NOTES.values()], encoder=encoder, store=store, name="notes", ids=list(NOTES),
        metadatas=[{"room": room, "effort": effort} for _, room, effort in NOTES.values()],
        index_settings={"n_centroids": 16}, similarity_top_k=3,
    )


@pytest.fixture
def retriever(encoder: ColBERTEncoder, store: Store) -> ColbertStoreLlamaIndexRetriever:
    """The notes indexed in every backend, top 3."""
    return build(encoder, store)


@pytest.fixture(scope="module")
def lance_retriever(
    encoder: ColBERTEncoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ColbertStoreLlamaIndexRetriever]:
    """The notes in one LanceDB store, for tests whose subject is the adapter rather than the backend."""
    store = LanceDBStore(tmp_path_factory.mktemp("llamaindex") / "db")
    yield build(encoder, store)
    store.close()


def test_retrieve_end_to_end(retriever: ColbertStoreLlamaIndexRetriever, store: Store, encoder: ColBERTEncoder) -> None:
    results = retriever.retrieve(QUERIES[0])
    hits = retriever.retriever.search(QUERIES[0], k=3)
    assert all(isinstance(result, NodeWithScore) and isinstance(result.node, TextNode) for result in results)
    assert [(r.node.id_, r.node.text, r.node.metadata, r.score) for r in results] == [
        (hit.id, hit.text, hit.metadata, hit.score) for hit in hits
    ]
    assert results[0].node.id_ == "kettle" and results[0].node.metadata == {"room": "kitchen", "effort": 2}
    assert [r.node.id_ for r in retriever.retrieve(QueryBundle(QUERIES[1]))][0] == "radiator"
    assert retriever.retrieve(QUERIES[2])[0].node.get_content() == NOTES["lawn"][0]

    reopened = ColbertStoreLlamaIndexRetriever.from_index(cs.Index.open(store, "notes"), encoder, similarity_top_k=1)
    assert [(r.node.id_, r.score) for r in reopened.retrieve(QUERIES[0])] == [(hits[0].id, hits[0].score)]


def test_aretrieve_matches_retrieve_under_concurrency(retriever: ColbertStoreLlamaIndexRetriever) -> None:
    sequential = {query: [(r.node.id_, r.score) for r in retriever.retrieve(query)] for query in QUERIES}
    calls = [QUERIES[i % len(QUERIES)] for i in range(32)]

    async def concurrently() -> list[list[NodeWithScore]]:
        return await asyncio.gather(*(retriever.aretrieve(query) for query in calls))

    for query, results in zip(calls, asyncio.run(concurrently()), strict=True):
        assert [r.node.id_ for r in results] == [node_id for node_id, _ in sequential[query]]
        assert [r.score for r in results] == pytest.approx([score for _, score in sequential[query]], rel=1e-5)
    with ThreadPoolExecutor(32) as pool:
        threaded = list(pool.map(retriever.retrieve, calls))
    assert [[r.node.id_ for r in results] for results in threaded] == [[i for i, _ in sequential[q]] for q in calls]


def test_filters_dict_and_metadata_filters(lance_retriever: ColbertStoreLlamaIndexRetriever) -> None:
    core = lance_retriever.retriever
    heating = ColbertStoreLlamaIndexRetriever(core, similarity_top_k=6, filters={"room": "heating"})
    assert {r.node.id_ for r in heating.retrieve("cleaning")} == {"boiler", "radiator"}

    either = MetadataFilters(filters=[MetadataFilter(key="room", value="outside"),
                                      MetadataFilter(key="effort", value=4, operator=">=")], condition="or")
    by_llama = ColbertStoreLlamaIndexRetriever(core, similarity_top_k=6, filters=either)
    assert {r.node.id_ for r in by_llama.retrieve("cleaning")} == {"gutter", "lawn", "boiler"}

    neither = MetadataFilters(filters=[MetadataFilter(key="room", value=["kitchen", "heating"], operator="in")], condition="not")
    assert {r.node.id_ for r in ColbertStoreLlamaIndexRetriever(core, similarity_top_k=6, filters=neither).retrieve("x y")} == {
        "gutter", "lawn"}

    nested = MetadataFilters(filters=[MetadataFilter(key="effort", value=3, operator="<"), either])
    assert metadata_filters_to_dict(nested) == {"$and": [{"effort": {"$lt": 3}}, {"$or": [
        {"room": {"$eq": "outside"}}, {"effort": {"$gte": 4}}]}]}
    with pytest.raises(cs.FilterError, match="'text_match' is not supported"):
        metadata_filters_to_dict(MetadataFilters(filters=[MetadataFilter(key="room", value="k", operator="text_match")]))
    with pytest.raises(cs.InvalidInputError, match="similarity_top_k"):
        ColbertStoreLlamaIndexRetriever(core, similarity_top_k=0)


def test_aretrieve_does_not_block_the_event_loop(lance_retriever: ColbertStoreLlamaIndexRetriever) -> None:
    async def run() -> tuple[list[NodeWithScore], int]:
        search = asyncio.ensure_future(lance_retriever.aretrieve(QUERIES[1]))
        turns = 0
        while not search.done():
            turns += 1
            await asyncio.sleep(0)
        return await search, turns

    results, turns = asyncio.run(run())
    assert results[0].node.id_ == "radiator"
    assert turns > 100, f"the event loop only turned {turns} times while the search ran"


def test_hybrid_passes_through(lance_retriever: ColbertStoreLlamaIndexRetriever) -> None:
    core = lance_retriever.retriever
    hybrid = ColbertStoreLlamaIndexRetriever(core, similarity_top_k=3, hybrid=True, search_params={"fusion": "rrf"})
    query = "which mountain is the highest?"
    nodes = hybrid.retrieve(query)
    assert [(node.node.id_, node.score) for node in nodes] == [
        (hit.id, hit.score) for hit in core.search(query, k=3, hybrid=True, fusion="rrf")
    ]
    with pytest.raises(cs.InvalidInputError):
        ColbertStoreLlamaIndexRetriever(core, hybrid=1)
