"""Checks on user input, run before anything is written, with messages that quote the bad value."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from colbert_store.errors import InvalidInputError

MAX_ID_LENGTH = 4096
_INDEX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_index_name(name: Any) -> str:
    """An index name: 1-64 letters, digits, ``_`` or ``-``, starting with a letter or digit (on every store).

    >>> check_index_name("papers-2024")
    'papers-2024'
    """
    if not isinstance(name, str) or not _INDEX_NAME.fullmatch(name):
        raise InvalidInputError(
            f"index name must be 1-64 letters, digits, '_' or '-', starting with a letter or digit; got {name!r}"
        )
    return name


@dataclass(frozen=True)
class DocumentsInput:
    """Validated documents: unit-norm float32 token matrices and aligned ids, texts and metadata."""

    ids: list[str]
    embeddings: list[np.ndarray]
    texts: list[str | None]
    metadata: list[dict[str, Any]]


def check_ids(ids: Any, what: str = "ids") -> list[str]:
    """A list of distinct, non-empty string ids of sensible length."""
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise InvalidInputError(f"{what} must be a list of strings, got {type(ids).__name__}")
    seen: dict[str, int] = {}
    for position, doc_id in enumerate(ids):
        if not isinstance(doc_id, str):
            raise InvalidInputError(f"{what}[{position}] must be a string, got {type(doc_id).__name__} {doc_id!r}")
        if not doc_id:
            raise InvalidInputError(f"{what}[{position}] is an empty string")
        if len(doc_id) > MAX_ID_LENGTH:
            raise InvalidInputError(f"{what}[{position}] is {len(doc_id)} characters long; the limit is {MAX_ID_LENGTH}")
        if "\x00" in doc_id:
            raise InvalidInputError(f"{what}[{position}] contains a NUL character: {doc_id!r}")
        _check_unicode(doc_id, f"{what}[{position}]")
        if doc_id in seen:
            raise InvalidInputError(f"{what} repeats {doc_id!r} at positions {seen[doc_id]} and {position}")
        seen[doc_id] = position
    return list(ids)


def check_matrix(matrix: Any, dim: int, what: str) -> np.ndarray:
    """A finite ``(n >= 1, dim)`` floating-point matrix (any float dtype; see :func:`normalise_rows`)."""
    array = np.asarray(matrix)
    if array.dtype == object or not np.issubdtype(array.dtype, np.floating):
        raise InvalidInputError(f"{what} must hold floating-point numbers, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[1] != dim:
        raise InvalidInputError(f"{what} must have shape (n_tokens, {dim}), got {array.shape}")
    if array.shape[0] == 0:
        raise InvalidInputError(f"{what} has no tokens")
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{what} contains NaN or infinite values")
    return array


def normalise_rows(matrix: np.ndarray, what: str) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32; a zero row is an error.

    Each row is first divided by its largest magnitude, in float64, so finite values of any size
    (1e300 in float64, 1e30 in float32) neither overflow nor underflow on the way.
    """
    wide = matrix.astype(np.float64)
    largest = np.abs(wide).max(axis=1, keepdims=True)
    if (largest == 0).any():
        raise InvalidInputError(f"{what} has an all-zero token vector at row {int(np.argmin(largest[:, 0]))}")
    wide /= largest
    wide /= np.linalg.norm(wide, axis=1, keepdims=True)
    return wide.astype(np.float32)


def check_documents(
    ids: Any, embeddings: Any, texts: Any, metadata: Any, dim: int
) -> DocumentsInput:
    """Validate an ``Index.add`` call; nothing is written unless every document passes."""
    ids = check_ids(ids)
    n = len(ids)
    if isinstance(embeddings, np.ndarray) and embeddings.ndim == 2:
        raise InvalidInputError("embeddings must be a list with one (n_tokens, dim) array per document, got one 2-D array")
    if not isinstance(embeddings, Sequence) and not isinstance(embeddings, np.ndarray):
        raise InvalidInputError(f"embeddings must be a list of arrays, got {type(embeddings).__name__}")
    if len(embeddings) != n:
        raise InvalidInputError(f"got {n} ids but {len(embeddings)} embeddings")
    matrices = [
        normalise_rows(check_matrix(matrix, dim, f"embeddings[{i}] (id {ids[i]!r})"), f"embeddings[{i}]")
        for i, matrix in enumerate(embeddings)
    ]
    return DocumentsInput(ids, matrices, check_texts(texts, ids), check_metadata(metadata, ids))


def check_texts(texts: Any, ids: Sequence[str]) -> list[str | None]:
    """One string (or ``None``) per id, each valid unicode."""
    n = len(ids)
    if texts is None:
        return [None] * n
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidInputError(f"texts must be a list of strings or None, got {type(texts).__name__}")
    if len(texts) != n:
        raise InvalidInputError(f"got {n} ids but {len(texts)} texts")
    for position, text in enumerate(texts):
        if text is not None and not isinstance(text, str):
            raise InvalidInputError(f"texts[{position}] must be a string or None, got {type(text).__name__}")
        if text is not None:
            _check_unicode(text, f"texts[{position}] (id {ids[position]!r})")
    return list(texts)


def check_query_texts(texts: Sequence[str], n_queries: int) -> list[str]:
    """The query texts of a hybrid search: one string per query."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidInputError(f"texts must be a list of strings, one per query, got {type(texts).__name__}")
    if len(texts) != n_queries:
        raise InvalidInputError(f"got {n_queries} queries but {len(texts)} texts")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"text[{position}] must be a string, got {type(text).__name__}")
    return list(texts)


def check_count(value: Any, what: str, allow_zero: bool = False) -> int:
    """``value`` if it is a positive integer (not a bool; or 0 with ``allow_zero``), else
    :class:`InvalidInputError` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        kind = "a non-negative integer" if allow_zero else "a positive integer"
        raise InvalidInputError(f"{what} must be {kind}, got {value!r}")
    return value


def check_metadata(metadata: Any, ids: Sequence[str]) -> list[dict[str, Any]]:
    """One JSON-like dict per id (``None`` counts as empty), returned as JSON would give it back
    (tuples become lists), so every store stores and returns the same values."""
    n = len(ids)
    if metadata is None:
        return [{} for _ in range(n)]
    if isinstance(metadata, Mapping) or not isinstance(metadata, Sequence):
        raise InvalidInputError(f"metadata must be a list of dicts (one per document), got {type(metadata).__name__}")
    if len(metadata) != n:
        raise InvalidInputError(f"got {n} ids but {len(metadata)} metadata entries")
    checked = []
    for position, entry in enumerate(metadata):
        where = f"metadata[{position}] (id {ids[position]!r})"
        if entry is None:
            entry = {}
        if not isinstance(entry, Mapping):
            raise InvalidInputError(f"{where} must be a dict, got {type(entry).__name__}")
        for key, value in entry.items():
            if not isinstance(key, str) or not key or key.startswith("$"):
                raise InvalidInputError(f"{where} key {key!r} must be a non-empty string not starting with '$'")
            _check_unicode(key, f"{where} key {key!r}")
            _check_json_value(value, f"{where}[{key!r}]")
        checked.append(json.loads(json.dumps(entry)))
    return checked


def _check_unicode(text: str, where: str) -> None:
    """Refuse strings that UTF-8 cannot encode (lone surrogates): no store can keep them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidInputError(f"{where} is not valid unicode ({error})") from None


def _check_json_value(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(f"{where} is {value!r}; only finite numbers can be stored")
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise InvalidInputError(f"{where} = {value} does not fit in 64 bits")
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInputError(f"{where} contains a NUL character")
        _check_unicode(value, where)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(f"{where} has a non-string key {key!r}")
            _check_unicode(key, f"{where} key {key!r}")
            _check_json_value(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json_value(item, f"{where}[{i}]")
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise InvalidInputError(f"{where} has type {type(value).__name__}; metadata values must be JSON-like")
