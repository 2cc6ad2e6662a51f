"""End-to-end tests of :class:`colbert_store.Retriever`: real encoders (MiniLM, tiny checkpoints) on real stores."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_checkpoints import build_stanford_checkpoint  # noqa: E402

import colbert_store as cs  # noqa: E402
from colbert_store import codec as codec_module  # noqa: E402
from colbert_store.adapters.lancedb import LanceDBStore  # noqa: E402
from colbert_store.codec import query_second_moment  # noqa: E402
from colbert_store.encoder import ColBERTEncoder  # noqa: E402
from colbert_store.pseudo_queries import sample_sentences  # noqa: E402
from colbert_store.storage import Store  # noqa: E402

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Tomatoes need plenty of sun and daily watering in the garden.",
    "The central bank raised interest rates to fight inflation.",
    "A binary search tree keeps its keys in sorted order.",
    "Mount Everest is the highest mountain above sea level.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "The violin concerto was first performed in Vienna in 1806.",
    "Regular expressions describe patterns of text to match.",
]
IDS = [f"doc-{i}" for i in range(len(TEXTS))]
METADATAS = [{"lang": "en" if i % 2 else "de", "n": i} for i in range(len(TEXTS))]
N_CENTROIDS = 16
"""The 8 texts make ~90 MiniLM tokens; the default rule would give every token its own centroid, leaving the
residual quantizer nothing to learn, so documents added later would be stored as their nearest centroids only."""


@pytest.fixture(scope="module")
def minilm(minilm_folder: str) -> ColBERTEncoder:
    return ColBERTEncoder.from_pretrained(minilm_folder, doc_maxlen=64, device="cpu")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {
        "a16": build_stanford_checkpoint(root / "a16", dim=16, seed=0),
        "b16": build_stanford_checkpoint(root / "b16", dim=16, seed=1),
        "a32": build_stanford_checkpoint(root / "a32", dim=32, seed=0),
    }


@pytest.fixture
def lance(tmp_path: Path) -> Iterator[LanceDBStore]:
    """One LanceDB store, for tests whose subject is the retriever rather than the backend."""
    opened = LanceDBStore(tmp_path / "db")
    yield opened
    opened.close()


@pytest.fixture
def retriever(minilm: ColBERTEncoder, store: Store) -> cs.Retriever:
    """The eight texts indexed in every backend."""
    return _build(minilm, store)


@pytest.fixture(scope="module")
def shared_retriever(minilm: ColBERTEncoder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[cs.Retriever]:
    """One LanceDB retriever for tests that must leave it unchanged."""
    store = LanceDBStore(tmp_path_factory.mktemp("shared") / "db")
    yield _build(minilm, store)
    store.close()


def _build(encoder: ColBERTEncoder, store: Store) -> cs.Retriever:
    return cs.Retriever.from_texts(
        TEXTS, encoder=encoder, store=store, name="docs", ids=IDS, metadatas=METADATAS, n_centroids=N_CENTROIDS
    )


def _snapshot(retriever: cs.Retriever) -> tuple[int, list[list[tuple[str, float, str | None]]]]:
    """Document count and top hits of a few queries: equal snapshots mean an unchanged index."""
    results = retriever.search_batch(TEXTS[:3], k=3)
    return len(retriever), [[(hit.id, round(hit.score, 4), hit.text) for hit in hits] for hits in results]


# ---------------------------------------------------------------------------------------------- every backend


def test_query_equal_to_a_document_finds_it_first(retriever: cs.Retriever) -> None:
    for doc_id, text, metadata in zip(IDS, TEXTS, METADATAS):
        top = retriever.search(text, k=3)[0]
        assert (top.id, top.text, top.metadata) == (doc_id, text, metadata)


def _assert_same_hits(batch: list[list[cs.Hit]], single: list[list[cs.Hit]]) -> None:
    """Same documents in the same order; scores equal up to float rounding (a query encoded in a padded
    batch differs from the same query encoded alone in the last bits)."""
    assert [[(hit.id, hit.text, hit.metadata) for hit in hits] for hits in batch] == [
        [(hit.id, hit.text, hit.metadata) for hit in hits] for hits in single
    ]
    for batch_hits, single_hits in zip(batch, single):
        assert [hit.score for hit in batch_hits] == pytest.approx([hit.score for hit in single_hits], rel=1e-5)


def test_search_batch_matches_search(retriever: cs.Retriever) -> None:
    batch = retriever.search_batch(TEXTS[:4], k=2)
    single = [retriever.search(text, k=2) for text in TEXTS[:4]]
    _assert_same_hits(batch, single)
    assert retriever.search_batch([], k=2) == []


def test_index_records_the_encoder_and_reopens(store_factory: Callable[[], Store], minilm: ColBERTEncoder) -> None:
    built = _build(minilm, store_factory())
    resolved = str(Path(minilm.identity["name_or_path"]).resolve())
    assert built.index.settings.encoder == {**minilm.identity, "name_or_path": resolved}
    reopened = cs.Retriever.open(store_factory(), "docs", minilm)
    assert reopened.index.settings == built.index.settings
    assert reopened.search(TEXTS[3], k=1)[0].id == IDS[3]
    with pytest.raises(cs.IndexExistsError):
        cs.Retriever.from_texts(TEXTS, encoder=minilm, store=store_factory(), name="docs")


def test_add_texts_generates_ids_and_replaces_existing(retriever: cs.Retriever) -> None:
    new_texts = ["Sourdough bread rises slowly overnight.", "Jupiter is a gas giant."]
    new_ids = retriever.add_texts(new_texts)
    assert len(set(new_ids)) == 2 and all(len(doc_id) == 32 and int(doc_id, 16) >= 0 for doc_id in new_ids)
    assert len(retriever) == len(TEXTS) + 2
    for doc_id, text in zip(new_ids, new_texts):
        assert retriever.search(text, k=1)[0].id == doc_id
    penguins = "Penguins live in the southern hemisphere."
    assert retriever.add_texts([penguins], ids=["doc-0"]) == ["doc-0"]
    assert len(retriever) == len(TEXTS) + 2
    top = retriever.search(penguins, k=1)[0]
    assert (top.id, top.text, top.metadata) == ("doc-0", penguins, {})
    assert TEXTS[0] not in [hit.text for hit in retriever.search(TEXTS[0], k=len(TEXTS) + 2)]


def test_delete(retriever: cs.Retriever) -> None:
    retriever.delete(["doc-1", "no-such-id"])
    assert len(retriever) == len(TEXTS) - 1
    assert "doc-1" not in [hit.id for hit in retriever.search(TEXTS[1], k=len(TEXTS))]


def test_filter_and_search_params_are_passed_through(retriever: cs.Retriever) -> None:
    hits = retriever.search(TEXTS[1], k=10, filter={"lang": "de"})
    assert sorted(hit.id for hit in hits) == ["doc-0", "doc-2", "doc-4", "doc-6"]
    batch = retriever.search_batch([TEXTS[0], TEXTS[1]], k=10, filter={"n": {"$gte": 6}})
    assert [sorted(hit.id for hit in hits) for hits in batch] == [["doc-6", "doc-7"]] * 2
    assert retriever.search(TEXTS[2], k=2, nprobe=1, ncandidates=1, centroid_threshold=None)[0].id == "doc-2"
    with pytest.raises(cs.InvalidInputError, match="unknown search parameters"):
        retriever.search(TEXTS[2], nprobes=8)


# ---------------------------------------------------------------------------------------------- codec training


def test_an_outer_progress_callback_hides_the_encoders_own_bars(
    minilm_folder: str, lance: LanceDBStore, capsys: pytest.CaptureFixture[str]
) -> None:
    chatty = ColBERTEncoder.from_pretrained(minilm_folder, device="cpu", show_progress=True)
    retriever = cs.Retriever.create(lance, "quiet", chatty)
    retriever.add_texts(TEXTS[:5], ids=IDS[:5], batch_size=2, progress=lambda n: None)  # trains: encodes queries too
    assert "Encoding" not in capsys.readouterr().err
    chatty.encode_documents(TEXTS[:1])  # the encoder's own setting is untouched
    assert "Encoding documents" in capsys.readouterr().err


@pytest.mark.parametrize("sample_tokens", [100_000, 30])
def test_codec_is_trained_on_the_held_back_batches(minilm: ColBERTEncoder, lance: LanceDBStore, sample_tokens: int) -> None:
    """Untrained, batches are held back until ``sample_tokens``: the codec equals one trained on exactly those."""
    retriever = cs.Retriever.create(lance, "batches", minilm, sample_tokens=sample_tokens)
    seen: list[int] = []
    retriever.add_texts(TEXTS[:5], ids=IDS[:5], batch_size=2, progress=seen.append)
    assert seen == [2, 2, 1]
    assert len(retriever) == 5
    vectors = [vector for start in range(0, 5, 2) for vector in minilm.encode_documents(TEXTS[start : min(start + 2, 5)])]
    held_back = _documents_until(vectors, batch_size=2, tokens=sample_tokens)
    reference = cs.Index.create(lance, "reference", dim=minilm.dim, sample_tokens=sample_tokens)
    reference.add(IDS[:held_back], vectors[:held_back])
    assert retriever.index.codec is not None and reference.codec is not None
    np.testing.assert_array_equal(retriever.index.codec.centroids, reference.codec.centroids)
    assert held_back == (5 if sample_tokens > 1000 else 4)


def test_the_first_add_weighs_codec_errors_by_sentences_encoded_as_queries(
    minilm: ColBERTEncoder, lance: LanceDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec_module, "_MIN_LEARNED_SAMPLE", 16)  # eight short texts: too few tokens otherwise
    retriever = cs.Retriever.from_texts(TEXTS, encoder=minilm, store=lance, name="weighted", ids=IDS, n_centroids=N_CENTROIDS)
    codec = retriever.index.codec
    assert codec is not None and codec.query_moment is not None
    expected = query_second_moment(np.concatenate(minilm.encode_queries(sample_sentences(TEXTS))))
    np.testing.assert_allclose(codec.query_moment, expected, atol=1e-5)
    assert retriever.search(TEXTS[3], k=1)[0].id == IDS[3]

    asked = ["which module parses dates", "how do I read a file line by line"]
    retriever.retrain(queries=asked)
    retrained = retriever.index.codec
    assert retrained is not None and retrained.query_moment is not None
    np.testing.assert_allclose(retrained.query_moment, query_second_moment(np.concatenate(minilm.encode_queries(asked))),
                               atol=1e-5)
    assert retriever.search(TEXTS[3], k=1)[0].id == IDS[3]


def _documents_until(vectors: list[np.ndarray], batch_size: int, tokens: int) -> int:
    """Documents in the first whole batches holding at least ``tokens`` token vectors (all when fewer)."""
    total = 0
    for start in range(0, len(vectors), batch_size):
        total += sum(len(v) for v in vectors[start : start + batch_size])
        if total >= tokens:
            return min(start + batch_size, len(vectors))
    return len(vectors)


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("texts", "kwargs", "message"),
    [
        (["fine", 3], {}, r"texts\[1\] is int"),
        (["fine", None], {}, r"texts\[1\] is NoneType"),
        (["fine", ""], {}, r"texts\[1\] is empty"),
        (["fine", "   \n"], {}, r"texts\[1\] is empty"),
        ("a single string", {}, "list of strings"),
        (["one", "two"], {"ids": ["a"]}, "2 texts but 1 ids"),
        (["one", "two"], {"ids": ["a", "b", "c"]}, "2 texts but 3 ids"),
        (["one", "two"], {"ids": ["a", "a"]}, "repeats 'a'"),
        (["one", "two"], {"ids": ["a", 7]}, r"ids\[1\] must be a string"),
        (["one", "two"], {"metadatas": [{}]}, "2 texts but 1 metadatas"),
        (["one", "two"], {"metadatas": [{}, {}, {}]}, "2 texts but 3 metadatas"),
        (["one", "two"], {"metadatas": [{}, {"x": object()}]}, "JSON-like"),
        (["one"], {"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_input_leaves_the_index_unchanged(shared_retriever: cs.Retriever, texts: object, kwargs: dict, message: str) -> None:
    before = _snapshot(shared_retriever)
    with pytest.raises(cs.InvalidInputError, match=message):
        shared_retriever.add_texts(texts, **kwargs)  # type: ignore[arg-type]
    assert _snapshot(shared_retriever) == before


def test_bad_queries_raise(shared_retriever: cs.Retriever) -> None:
    with pytest.raises(cs.InvalidInputError, match="query must be a string"):
        shared_retriever.search(["a list"])  # type: ignore[arg-type]
    with pytest.raises(cs.InvalidInputError, match="empty or whitespace-only"):
        shared_retriever.search("   ")
    with pytest.raises(cs.InvalidInputError, match="k must be"):
        shared_retriever.search("fox", k=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"texts": ["good", None]}, r"texts\[1\]"),
        ({"texts": ["good"], "metadatas": [{}, {}]}, "1 texts but 2 metadatas"),
        ({"texts": ["good"], "batch_size": -1}, "batch_size"),
        ({"texts": ["good"], "dim": 8}, "takes dim from the encoder"),
        ({"texts": ["good"], "nprobe": 8}, "unknown index settings"),
    ],
)
def test_from_texts_validates_before_creating_the_index(
    minilm: ColBERTEncoder, lance: LanceDBStore, kwargs: dict, message: str
) -> None:
    with pytest.raises(cs.InvalidInputError, match=message):
        cs.Retriever.from_texts(encoder=minilm, store=lance, name="never", **kwargs)
    assert lance.list_indexes() == []


def test_bad_input_before_the_first_add_leaves_the_index_untrained(minilm: ColBERTEncoder, lance: LanceDBStore) -> None:
    retriever = cs.Retriever.create(lance, "empty", minilm)
    with pytest.raises(cs.InvalidInputError, match=r"texts\[2\] is empty"):
        retriever.add_texts(["one", "two", ""])
    reopened = cs.Index.open(lance, "empty")
    assert (len(reopened), reopened.codec) == (0, None)


# ---------------------------------------------------------------------------------------------- encoder checks


def test_encoder_of_another_dimension_is_refused(tiny_dirs: dict[str, Path], lance: LanceDBStore) -> None:
    built = cs.Retriever.from_texts(TEXTS, encoder=ColBERTEncoder.from_pretrained(tiny_dirs["a16"], device="cpu"),
                                    store=lance, name="tiny")
    before = _snapshot(built)
    with pytest.raises(cs.IncompatibleIndexError) as caught:
        cs.Retriever.open(lance, "tiny", ColBERTEncoder.from_pretrained(tiny_dirs["a32"], device="cpu"))
    message = str(caught.value)
    assert "16-d" in message and "32-d" in message
    assert str(tiny_dirs["a16"]) in message and str(tiny_dirs["a32"]) in message
    assert _snapshot(cs.Retriever.open(lance, "tiny", built.encoder)) == before


def test_another_checkpoint_of_the_same_shape_is_refused(tiny_dirs: dict[str, Path], lance: LanceDBStore) -> None:
    cs.Retriever.from_texts(TEXTS, encoder=ColBERTEncoder.from_pretrained(tiny_dirs["a16"], device="cpu"),
                            store=lance, name="tiny")
    other = ColBERTEncoder.from_pretrained(tiny_dirs["b16"], device="cpu")
    with pytest.raises(cs.IncompatibleIndexError, match="differs in name_or_path") as caught:
        cs.Retriever.open(lance, "tiny", other)
    assert str(tiny_dirs["a16"]) in str(caught.value) and str(tiny_dirs["b16"]) in str(caught.value)


def test_document_length_mismatch_is_refused_query_length_is_not(tiny_dirs: dict[str, Path], lance: LanceDBStore) -> None:
    folder = tiny_dirs["a16"]
    cs.Retriever.from_texts(TEXTS, encoder=ColBERTEncoder.from_pretrained(folder, device="cpu"), store=lance, name="tiny",
                            ids=IDS)
    with pytest.raises(cs.IncompatibleIndexError, match="doc_maxlen"):
        cs.Retriever.open(lance, "tiny", ColBERTEncoder.from_pretrained(folder, device="cpu", doc_maxlen=20))
    longer_queries = ColBERTEncoder.from_pretrained(folder, device="cpu", query_maxlen=20)
    assert cs.Retriever.open(lance, "tiny", longer_queries).search(TEXTS[5], k=1)[0].id == IDS[5]


def test_query_expansion_must_match_and_indexes_recorded_without_it_had_it_on(
    tiny_dirs: dict[str, Path], lance: LanceDBStore
) -> None:
    folder = tiny_dirs["a16"]
    expanded = ColBERTEncoder.from_pretrained(folder, device="cpu")
    unexpanded = ColBERTEncoder.from_pretrained(folder, device="cpu", query_expansion=False)
    built = cs.Retriever.from_texts(TEXTS, encoder=expanded, store=lance, name="tiny", ids=IDS)
    assert built.index.settings.encoder["query_expansion"] is True
    with pytest.raises(cs.IncompatibleIndexError, match="differs in query_expansion"):
        cs.Retriever.open(lance, "tiny", unexpanded)
    recorded_before_the_switch = {k: v for k, v in built.index.settings.encoder.items() if k != "query_expansion"}
    legacy = cs.Index.create(lance, "legacy", dim=16, encoder=recorded_before_the_switch)
    assert cs.Retriever(legacy, expanded).index is legacy
    with pytest.raises(cs.IncompatibleIndexError, match="differs in query_expansion"):
        cs.Retriever(legacy, unexpanded)


def test_same_folder_through_another_path_is_accepted(
    tiny_dirs: dict[str, Path], lance: LanceDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tiny_dirs["a16"]
    monkeypatch.chdir(folder.parent)
    cs.Retriever.from_texts(TEXTS, encoder=ColBERTEncoder.from_pretrained(folder.name, device="cpu"), store=lance, name="tiny")
    assert cs.Index.open(lance, "tiny").settings.encoder["name_or_path"] == str(folder.resolve())
    detour = folder.parent / ".." / folder.parent.name / folder.name
    assert len(cs.Retriever.open(lance, "tiny", ColBERTEncoder.from_pretrained(detour, device="cpu"))) == len(TEXTS)


def test_index_without_recorded_encoder_checks_only_the_dimension(tiny_dirs: dict[str, Path], lance: LanceDBStore) -> None:
    index = cs.Index.create(lance, "raw", dim=16)
    rng = np.random.default_rng(0)
    index.add(["v0", "v1"], [rng.standard_normal((5, 16)).astype(np.float32) for _ in range(2)])
    retriever = cs.Retriever(index, ColBERTEncoder.from_pretrained(tiny_dirs["b16"], device="cpu"))
    assert sorted(hit.id for hit in retriever.search("anything", k=2)) == ["v0", "v1"]
    with pytest.raises(cs.IncompatibleIndexError, match="16-d"):
        cs.Retriever(index, ColBERTEncoder.from_pretrained(tiny_dirs["a32"], device="cpu"))


def test_missing_model_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        ColBERTEncoder.from_pretrained(tmp_path / "no-such-model")


# ---------------------------------------------------------------------------------------------- public surface


def test_import_works_without_transformers() -> None:
    """``import colbert_store`` and the retriever need no transformers; the encoder names the extra to install."""
    script = textwrap.dedent(
        """
        import sys

        class Blocked:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in ("transformers", "safetensors"):
                    raise ImportError(f"blocked {name}")

        sys.meta_path.insert(0, Blocked())
        import colbert_store as cs
        assert cs.Retriever.__name__ == "Retriever"
        try:
            cs.ColBERTEncoder
        except cs.MissingDependencyError as error:
            print(error)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert 'pip install "colbert-store[encoder]"' in done.stdout


def test_hybrid_search_passes_the_query_text_to_the_lexical_leg(retriever: cs.Retriever) -> None:
    query = "Vienna 1806 violin"
    hits = retriever.search(query, k=3, hybrid=True, fusion="rrf")
    index_hits = retriever.index.search(retriever.encoder.encode_queries([query])[0], k=3, text=query, fusion="rrf")
    assert hits == index_hits and hits[0].id == "doc-6"
    _assert_same_hits(retriever.search_batch([query, TEXTS[2]], k=2, hybrid=True), [
        retriever.search(query, k=2, hybrid=True), retriever.search(TEXTS[2], k=2, hybrid=True)
    ])
    only_de = retriever.search(query, k=8, filter={"lang": "de"}, hybrid=True)
    assert only_de and all(hit.metadata["lang"] == "de" for hit in only_de)
    with pytest.raises(cs.InvalidInputError):
        retriever.search(query, hybrid="yes")  # type: ignore[arg-type]
