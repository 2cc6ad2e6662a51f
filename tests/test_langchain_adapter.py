"""The LangChain retriever: real MiniLM encoder, real stores; results must equal the core retriever's."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.runnables import ConfigurableField  # noqa: E402
from pydantic import ValidationError  # noqa: E402

import colbert_store as cs  # noqa: E402
from colbert_store.adapters.lancedb import LanceDBStore  # noqa: E402
from colbert_store.adapters.langchain import ColbertStoreRetriever  # noqa: E402
from colbert_store.encoder import ColBERTEncoder  # noqa: E402
from colbert_store.storage import Store  # noqa: E402

PASSAGES = {
    "everest": ("Mount Everest, on the border of Nepal and China, is the highest mountain above sea level.", "geography", 1953),
    "nile": ("The Nile flows north through eleven countries into the Mediterranean Sea.", "geography", 1971),
    "photosynthesis": ("Plants turn sunlight, water and carbon dioxide into sugar and oxygen.", "biology", 1905),
    "penguins": ("Penguins are flightless birds that live almost only in the southern hemisphere.", "biology", 2011),
    "inflation": ("The central bank raised interest rates to bring inflation back down.", "economics", 2022),
    "bst": ("A binary search tree keeps its keys in sorted order, so lookups take logarithmic time.", "computing", 1960),
    "regex": ("Regular expressions describe patterns of text to find and replace.", "computing", 1968),
    "beethoven": ("Beethoven's violin concerto was first performed in Vienna in 1806.", "music", 1806),
}
IDS = list(PASSAGES)
TEXTS = [text for text, _, _ in PASSAGES.values()]
METADATAS = [{"topic": topic, "year": year} for _, topic, year in PASSAGES.values()]
QUERIES = ["Which is the tallest mountain?", "How do plants make sugar?", "Where do penguins live?",
           "How are sorted keys looked up fast?", "Which river crosses many countries?", "Who wrote a violin concerto?"]
SETTINGS = [{}, {"k": 1}, {"k": 3, "filter": {"topic": "biology"}}, {"filter": {"year": {"$gte": 1960}}},
            {"k": 5, "nrerank": 8}, {"k": 2, "filter": {"$not": {"topic": {"$in": ["geography", "music"]}}}}]
"""Per-call arguments; the concurrency tests give every call its own, so a setting leaking between calls shows."""


@pytest.fixture(scope="module")
def encoder(minilm_folder: str) -> ColBERTEncoder:
    return ColBERTEncoder.from_pretrained(minilm_folder, doc_maxlen=128, device="cpu")


@pytest.fixture
def retriever(encoder: ColBERTEncoder, store: Store) -> ColbertStoreRetriever:
    """The passages indexed in every backend, k=4."""
    return ColbertStoreRetriever.from_texts(
        TEXTS, encoder=encoder, store=store, name="passages", ids=IDS, metadatas=METADATAS,
        index_settings={"n_centroids": 16},
    )


@pytest.fixture(scope="module")
def lance_retriever(encoder: ColBERTEncoder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ColbertStoreRetriever]:
    """One LanceDB-backed retriever for tests that leave it unchanged."""
    store = LanceDBStore(tmp_path_factory.mktemp("langchain") / "db")
    yield ColbertStoreRetriever.from_texts(
        TEXTS, encoder=encoder, store=store, name="passages", ids=IDS, metadatas=METADATAS,
        index_settings={"n_centroids": 16},
    )
    store.close()


def summary(docs: list[Document]) -> list[tuple[str, float]]:
    return [(doc.id, doc.metadata["score"]) for doc in docs]


def assert_same(got: list[list[Document]], expected: list[list[Document]]) -> None:
    assert [[doc_id for doc_id, _ in summary(docs)] for docs in got] == [[d for d, _ in summary(e)] for e in expected]
    for docs, reference in zip(got, expected, strict=True):
        assert [score for _, score in summary(docs)] == pytest.approx([score for _, score in summary(reference)], rel=1e-5)


def test_documents_match_the_core_search(retriever: ColbertStoreRetriever) -> None:
    docs = retriever.invoke("Which is the tallest mountain?")
    hits = retriever.retriever.search("Which is the tallest mountain?", k=4)
    assert len(docs) == 4 and docs[0].id == "everest"
    assert [(doc.id, doc.page_content) for doc in docs] == [(hit.id, hit.text) for hit in hits]
    assert [doc.metadata for doc in docs] == [{**hit.metadata, "id": hit.id, "score": hit.score} for hit in hits]
    assert docs[0].metadata == {"topic": "geography", "year": 1953, "id": "everest", "score": hits[0].score}


def test_per_call_k_and_filter(lance_retriever: ColbertStoreRetriever) -> None:
    retriever = lance_retriever  # shared and left unchanged: per-call settings must not stick
    assert len(retriever.invoke("birds", k=1)) == 1
    assert len(retriever.invoke("birds", k=6)) == 6
    biology = retriever.invoke("Where do penguins live?", filter={"topic": "biology"})
    assert [doc.id for doc in biology] == ["penguins", "photosynthesis"]
    recent = retriever.invoke("music and mountains", k=8, filter={"year": {"$gte": 1960}})
    assert {doc.id for doc in recent} == {"nile", "penguins", "inflation", "bst", "regex"}
    assert len(retriever.invoke("birds")) == 4, "a per-call k must not change the retriever's own"


def test_settings_are_layered(lance_retriever: ColbertStoreRetriever) -> None:
    """Fields, then search_kwargs, then the call's arguments; the call wins."""
    base = lance_retriever.retriever
    layered = ColbertStoreRetriever(retriever=base, k=3, filter={"topic": "computing"}, search_kwargs={"k": 1})
    assert [doc.id for doc in layered.invoke("sorted keys")] == ["bst"]
    assert [doc.id for doc in layered.invoke("sorted keys", k=2)] == ["bst", "regex"]
    assert [doc.id for doc in layered.invoke("sorted keys", filter=None, k=8)] == [h.id for h in base.search("sorted keys", k=8)]
    knobs = layered.invoke("sorted keys", k=8, filter=None, nprobe=1, nrerank=8)
    assert summary(knobs) == [(h.id, h.score) for h in base.search("sorted keys", k=8, nprobe=1, nrerank=8)]


@pytest.mark.parametrize("bad", [{"top_k": 2}, {"filters": {"topic": "x"}}])
def test_unknown_arguments_raise(lance_retriever: ColbertStoreRetriever, bad: dict[str, Any]) -> None:
    with pytest.raises(cs.InvalidInputError, match="unknown search arguments"):
        lance_retriever.invoke("birds", **bad)
    with pytest.raises(cs.InvalidInputError, match="unknown search arguments"):
        asyncio.run(lance_retriever.ainvoke("birds", **bad))
    with pytest.raises(ValidationError, match="unknown search_kwargs"):
        ColbertStoreRetriever(retriever=lance_retriever.retriever, search_kwargs=bad)
    with pytest.raises(ValidationError):
        ColbertStoreRetriever(retriever=lance_retriever.retriever, k=0)
    with pytest.raises(cs.FilterError):
        lance_retriever.invoke("birds", filter={"year": {"$near": 3}})


def test_configurable_search_kwargs_in_a_chain(lance_retriever: ColbertStoreRetriever) -> None:
    configurable = lance_retriever.configurable_fields(search_kwargs=ConfigurableField(id="search_kwargs"))
    chain = configurable | (lambda docs: [doc.id for doc in docs])
    assert len(chain.invoke("birds")) == 4
    config = {"configurable": {"search_kwargs": {"k": 1, "filter": {"topic": "music"}}}}
    assert chain.invoke("birds", config=config) == ["beethoven"]


def test_async_paths_match_sync(lance_retriever: ColbertStoreRetriever) -> None:
    async def run() -> tuple[list[Document], list[list[Document]], list[Document]]:
        return (
            await lance_retriever.ainvoke(QUERIES[0], k=2, filter={"topic": "geography"}),
            await lance_retriever.abatch(QUERIES),
            await lance_retriever.ainvoke(QUERIES[1]),
        )

    one, many, default = asyncio.run(run())
    assert_same([one], [lance_retriever.invoke(QUERIES[0], k=2, filter={"topic": "geography"})])
    assert [doc.id for doc in one] == ["everest", "nile"]
    assert_same(many, lance_retriever.batch(QUERIES))
    assert_same([default], [lance_retriever.invoke(QUERIES[1])])


def test_ainvoke_does_not_block_the_event_loop(lance_retriever: ColbertStoreRetriever) -> None:
    """The search runs in the loop's executor, and the loop keeps turning while it runs."""
    started: list[str] = []

    async def run() -> tuple[list[Document], int]:
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(1, initializer=lambda: started.append(threading.current_thread().name))
        loop.set_default_executor(executor)
        search = asyncio.ensure_future(lance_retriever.ainvoke(QUERIES[2]))
        turns = 0
        while not search.done():
            turns += 1
            await asyncio.sleep(0)
        return await search, turns

    docs, turns = asyncio.run(run())
    assert docs[0].id == "penguins"
    assert started and started[0] != threading.current_thread().name
    assert turns > 100, f"the event loop only turned {turns} times while the search ran"


def test_concurrent_abatch_and_threads_match_sequential(retriever: ColbertStoreRetriever) -> None:
    """32 concurrent abatch calls, then 32 threads, on one retriever, each call with its own arguments."""
    batches = [([QUERIES[i % 6], QUERIES[(i + 3) % 6]], i % len(SETTINGS)) for i in range(32)]
    singles = [(QUERIES[i % 6], i % len(SETTINGS)) for i in range(32)]
    sequential = {(query, s): retriever.invoke(query, **SETTINGS[s]) for queries, s in batches[:6] for query in queries}

    async def concurrently() -> list[list[list[Document]]]:
        return await asyncio.gather(*(retriever.abatch(queries, **SETTINGS[s]) for queries, s in batches))

    for got, (queries, s) in zip(asyncio.run(concurrently()), batches, strict=True):
        assert_same(got, [sequential[query, s] for query in queries])

    with ThreadPoolExecutor(32) as pool:
        threaded = list(pool.map(lambda call: retriever.invoke(call[0], **SETTINGS[call[1]]), singles))
    assert_same(threaded, [sequential[call] for call in singles])


def test_add_delete_and_constructors(encoder: ColBERTEncoder, tmp_path: Path) -> None:
    store = LanceDBStore(tmp_path / "db")
    retriever = ColbertStoreRetriever.from_texts(TEXTS, encoder=encoder, store=store, name="passages", ids=IDS,
                                                 index_settings={"n_centroids": 16})
    ids = retriever.add_documents([
        Document("Volcanoes erupt molten rock called lava.", id="volcano", metadata={"topic": "geography"}),
        Document("Glaciers are slow rivers of ice."),
    ])
    assert ids[0] == "volcano" and len(ids[1]) == 32
    assert retriever.add_texts(["Tides follow the moon."], ids=["tides"]) == ["tides"]
    assert retriever.invoke("What comes out of a volcano?", k=1)[0].id == "volcano"
    retriever.delete(["volcano", "tides"])
    assert "volcano" not in {doc.id for doc in retriever.invoke("What comes out of a volcano?", k=10)}

    expected = summary(retriever.invoke("lava and ice", k=3))
    reopened = ColbertStoreRetriever.open(store, "passages", encoder, k=3)
    from_index = ColbertStoreRetriever.from_index(cs.Index.open(store, "passages"), encoder, k=3)
    assert summary(reopened.invoke("lava and ice")) == expected
    assert summary(from_index.invoke("lava and ice")) == expected
    store.close()


def test_hybrid_field_and_fusion_pass_through(lance_retriever: ColbertStoreRetriever) -> None:
    query = "Vienna 1806 violin"
    hybrid = lance_retriever.model_copy(update={"hybrid": True})
    expected = lance_retriever.retriever.search(query, k=4, hybrid=True)
    assert summary(hybrid.invoke(query)) == [(hit.id, hit.score) for hit in expected]
    rrf = lance_retriever.retriever.search(query, k=2, hybrid=True, fusion="rrf")
    assert summary(lance_retriever.invoke(query, k=2, hybrid=True, fusion="rrf")) == [(hit.id, hit.score) for hit in rrf]
