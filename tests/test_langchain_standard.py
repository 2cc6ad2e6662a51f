"""LangChain's own standard retriever tests (``langchain-tests``) against ColbertStoreRetriever, on every store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("langchain_tests")

from langchain_tests.integration_tests import RetrieversIntegrationTests  # noqa: E402

import colbert_store as cs  # noqa: E402
from colbert_store.adapters.lancedb import LanceDBStore  # noqa: E402
from colbert_store.adapters.langchain import ColbertStoreRetriever  # noqa: E402
from colbert_store.adapters.qdrant import QdrantStore  # noqa: E402
from colbert_store.encoder import ColBERTEncoder  # noqa: E402
from colbert_store.storage import Store  # noqa: E402

STORES: dict[str, Callable[[Path], Store]] = {
    "lancedb": lambda folder: LanceDBStore(folder / "lancedb"),
    "qdrant-path": lambda folder: QdrantStore(folder / "qdrant"),
    "qdrant-memory": lambda folder: QdrantStore(":memory:"),
}

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Tomatoes need plenty of sun and daily watering in the garden.",
    "The central bank raised interest rates to fight inflation.",
    "A binary search tree keeps its keys in sorted order.",
    "Mount Everest is the highest mountain above sea level.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
]


@pytest.fixture(scope="module")
def encoder(minilm_folder: str) -> ColBERTEncoder:
    return ColBERTEncoder.from_pretrained(minilm_folder, doc_maxlen=64, device="cpu")


@pytest.fixture(scope="module", params=sorted(STORES))
def indexed(
    request: pytest.FixtureRequest, encoder: ColBERTEncoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[cs.Retriever]:
    """The texts indexed once per store, shared by the standard tests."""
    store = STORES[request.param](tmp_path_factory.mktemp(request.param))
    yield cs.Retriever.from_texts(TEXTS, encoder=encoder, store=store, name="standard", n_centroids=16)
    store.close()


class TestColbertStoreRetrieverStandard(RetrieversIntegrationTests):
    @pytest.fixture(autouse=True)
    def _use_index(self, indexed: cs.Retriever) -> None:
        self._indexed = indexed

    @property
    def retriever_constructor(self) -> type[ColbertStoreRetriever]:
        return ColbertStoreRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"retriever": self._indexed}

    @property
    def retriever_query_example(self) -> str:
        return "Which mountain is the highest?"
