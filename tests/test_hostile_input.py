"""Hostile input, fuzzed with hypothesis on every store: odd ids, metadata and filter values either
raise InvalidInputError (FilterError) or behave exactly right — never corruption or injection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import colbert_store as cs
from colbert_store.filters import matches, parse_filter
from tests.conftest import STORE_FACTORIES, make_corpus

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
METACHARACTERS = st.sampled_from(["'", '"', "\\", ";", "--", "/*", "*/", "%", "_", "`", "$", "{", "}", "[", "]",
                                  ".", ":", "\x00", "\n", " OR 1=1", "') OR ('1'='1", "NULL", "true"])
HOSTILE_TEXT = st.lists(st.one_of(st.text(max_size=8), METACHARACTERS), max_size=6).map("".join)
SCALARS = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False),
                    HOSTILE_TEXT)
FIELDS = st.sampled_from(["year", "lang", "score", "open", "topic", "missing", "it's", 'a"b', "x.y", "$eq"])


@pytest.fixture(params=sorted(STORE_FACTORIES), scope="module")
def fuzz_index(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[cs.Index]:
    """One index per store, shared by the examples of this module (every test leaves it as it found it)."""
    store = STORE_FACTORIES[request.param](Path(tmp_path_factory.mktemp(request.param)))
    corpus = make_corpus(n_docs=80)
    index = cs.Index.create(store, "fuzz", dim=corpus.embeddings[0].shape[1])
    metadata = [{**entry, "lang": entry["lang"] + ("'" if i % 5 == 0 else "")} for i, entry in enumerate(corpus.metadata)]
    index.add(corpus.ids, corpus.embeddings, texts=corpus.texts, metadata=metadata)
    index.fuzz_metadata = dict(zip(corpus.ids, metadata))  # type: ignore[attr-defined]
    index.fuzz_query = corpus.query(0)  # type: ignore[attr-defined]
    yield index
    store.close()


@FUZZ
@given(doc_id=HOSTILE_TEXT)
def test_any_id_round_trips_or_is_refused(fuzz_index: cs.Index, doc_id: str) -> None:
    vectors = np.random.default_rng(len(doc_id)).standard_normal((6, fuzz_index.settings.dim)).astype(np.float32)
    before = len(fuzz_index)
    try:
        fuzz_index.add([doc_id], [vectors], texts=[doc_id], metadata=[{"lang": doc_id}])
    except cs.InvalidInputError:
        assert len(fuzz_index) == before
        return
    try:
        hits = fuzz_index.search(vectors, k=1, filter={"lang": doc_id})
        assert [(hit.id, hit.text, hit.metadata) for hit in hits] == [(doc_id, doc_id, {"lang": doc_id})]
    finally:
        fuzz_index.delete([doc_id])
    assert len(fuzz_index) == before
    assert all(hit.id != doc_id for hit in fuzz_index.search(vectors, k=5))


@FUZZ
@given(field=FIELDS, op=st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]), value=SCALARS)
def test_comparison_filters_match_the_reference(fuzz_index: cs.Index, field: str, op: str, value: object) -> None:
    check_filter(fuzz_index, {field: {op: value}})


@FUZZ
@given(field=FIELDS, op=st.sampled_from(["$in", "$nin"]), values=st.lists(SCALARS, max_size=4), negate=st.booleans())
def test_membership_filters_match_the_reference(
    fuzz_index: cs.Index, field: str, op: str, values: list[object], negate: bool
) -> None:
    spec: dict[str, object] = {field: {op: values}}
    check_filter(fuzz_index, {"$not": spec} if negate else spec)


@FUZZ
@given(spec=st.recursive(st.dictionaries(FIELDS, SCALARS, min_size=1, max_size=2),
                         lambda inner: st.one_of(st.builds(lambda a, b: {"$or": [a, b]}, inner, inner),
                                                 st.builds(lambda a: {"$not": a}, inner)),
                         max_leaves=4))
def test_nested_filters_match_the_reference(fuzz_index: cs.Index, spec: dict[str, object]) -> None:
    check_filter(fuzz_index, spec)


@FUZZ
@given(value=st.recursive(SCALARS | st.none(), lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(HOSTILE_TEXT, inner, max_size=3), max_leaves=6))
def test_odd_metadata_round_trips_or_is_refused(fuzz_index: cs.Index, value: object) -> None:
    vectors = np.random.default_rng(0).standard_normal((5, fuzz_index.settings.dim)).astype(np.float32)
    before = len(fuzz_index)
    try:
        fuzz_index.add(["odd-metadata"], [vectors], metadata=[{"nested": value}])
    except cs.InvalidInputError:
        assert len(fuzz_index) == before
        return
    try:
        hit = fuzz_index.search(vectors, k=1)[0]
        assert (hit.id, hit.metadata) == ("odd-metadata", {"nested": value})
    finally:
        fuzz_index.delete(["odd-metadata"])
    assert len(fuzz_index) == before


def check_filter(index: cs.Index, spec: dict[str, object]) -> None:
    """Filtered search returns exactly the documents the reference semantics accept (or FilterError)."""
    try:
        expr = parse_filter(spec)
    except cs.FilterError:
        with pytest.raises(cs.FilterError):
            index.search(index.fuzz_query, k=5, filter=spec)  # type: ignore[attr-defined]
        return
    expected = {doc_id for doc_id, entry in index.fuzz_metadata.items() if matches(expr, entry)}  # type: ignore[attr-defined]
    hits = index.search(index.fuzz_query, k=len(index.fuzz_metadata), filter=spec, ncandidates=1000,  # type: ignore[attr-defined]
                        nrerank=1000, centroid_threshold=None)
    assert {hit.id for hit in hits} == expected, spec


FLOAT_DTYPES = st.sampled_from([np.float16, np.float32, np.float64])
ANY_DTYPES = FLOAT_DTYPES | st.sampled_from([np.int8, np.int64, np.uint8, np.bool_, np.complex64, np.object_])


@st.composite
def token_arrays(draw: st.DrawFn) -> np.ndarray:
    """Arrays of every dtype and rank, mostly near the right shape, with extreme values mixed in."""
    dtype = draw(ANY_DTYPES)
    shape = draw(st.one_of(st.tuples(st.integers(0, 5), st.sampled_from([32, 31, 64, 0])),
                           st.tuples(st.integers(0, 40)), st.just(()),
                           st.tuples(st.integers(1, 3), st.integers(1, 3), st.just(32))))
    values = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape)
    if dtype is np.object_:
        return values.astype(object)
    if np.issubdtype(dtype, np.floating) and values.size and draw(st.booleans()):
        extreme = draw(st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1e-30, 1e30, 1e300, 6e4, 1e-8]))
        values.flat[draw(st.integers(0, values.size - 1))] = extreme
        if extreme == 0.0 and draw(st.booleans()):
            values[...] = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(dtype)


@FUZZ
@given(matrix=token_arrays())
def test_any_array_is_indexed_exactly_or_refused(fuzz_index: cs.Index, matrix: np.ndarray) -> None:
    before = len(fuzz_index)
    try:
        fuzz_index.add(["odd-array"], [matrix])
    except cs.InvalidInputError:
        assert len(fuzz_index) == before
        return
    try:
        wide = matrix.astype(np.float64)
        assert wide.ndim == 2 and wide.shape[1] == fuzz_index.settings.dim and np.isfinite(wide).all()
        unit = wide / np.linalg.norm(wide, axis=1, keepdims=True)
        assert fuzz_index.search(unit.astype(np.float32), k=1)[0].id == "odd-array"
        stored = next(batch for batch in fuzz_index.documents() if "odd-array" in batch.ids)
        row = stored.ids.index("odd-array")
        tokens = slice(stored.token_offsets[row], stored.token_offsets[row + 1])
        assert fuzz_index.codec is not None
        decoded = fuzz_index.codec.decompress(stored.centroid_ids[tokens], stored.residuals[tokens])
        assert np.isfinite(decoded).all() and len(decoded) == len(unit)
    finally:
        fuzz_index.delete(["odd-array"])
    assert len(fuzz_index) == before


def test_a_huge_document_round_trips(fuzz_index: cs.Index) -> None:
    vectors = np.random.default_rng(5).standard_normal((60_000, fuzz_index.settings.dim)).astype(np.float32)
    try:
        fuzz_index.add(["huge"], [vectors], texts=["x" * 1_000_000])
        hit = fuzz_index.search(vectors[:8], k=1)[0]
        assert (hit.id, len(hit.text or "")) == ("huge", 1_000_000)
    finally:
        fuzz_index.delete(["huge"])


@pytest.mark.parametrize(("dtype", "value"), [(np.float64, 1e300), (np.float32, 1e30), (np.float16, 6e4),
                                              (np.float32, 1e-30), (np.float64, 1e-310)])
def test_extreme_finite_values_are_normalised_not_overflowed(fuzz_index: cs.Index, dtype: type, value: float) -> None:
    matrix = np.random.default_rng(3).standard_normal((4, fuzz_index.settings.dim)).astype(dtype)
    matrix[0] = 0
    matrix[0, 5] = value  # row 0 points along axis 5, whatever its size
    try:
        fuzz_index.add(["extreme"], [matrix])
        stored = next(batch for batch in fuzz_index.documents() if "extreme" in batch.ids)
        row = stored.ids.index("extreme")
        first = stored.token_offsets[row]
        assert fuzz_index.codec is not None
        decoded = fuzz_index.codec.decompress(stored.centroid_ids[first : first + 1], stored.residuals[first : first + 1])
        assert np.isfinite(decoded).all() and np.argmax(decoded[0]) == 5
    finally:
        fuzz_index.delete(["extreme"])
