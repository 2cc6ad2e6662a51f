"""Metadata filters on Qdrant: the ``filter`` payload object documents carry, and the translation of
:mod:`colbert_store.filters` trees into Qdrant conditions over it.

Why a separate ``filter`` object instead of filtering on ``meta.<key>``: Qdrant matches any element
of an array (``[2020]`` would equal ``2020``), an integer match never matches a float payload (``3``
vs ``3.0``), there is no "is a string" condition (needed for ``$ne``/``$nin``, which are false on a
missing field or a value of another kind), and keys with ``.``, ``[``, ``"`` or ``\\`` cannot be
written as paths. In ``filter`` only top-level scalars are kept, numbers that are whole are stored
as integers, booleans as 0 or 1, each kind has its own sub-object (``b``, ``n``, ``s``) and field
names are hex-encoded
(``k<hex of utf-8>``), so every operator translates exactly (``matches`` semantics).

Numbers are ordered, and compared for equality when not whole, on an exact integer key rather than on
the stored float: ``f`` holds each number's float64 bit pattern, turned so that its unsigned order is
the numbers' order, as two 32-bit integers (``filter.f.k<hex>_0`` high, ``_1`` low). Integers are
exact in every engine's payload, where a float may come back a unit in the last place away (Qdrant
Edge parses floats that way), which would move a comparison at its boundary.

String ordering (``$gt``/``$gte``/``$lt``/``$lte`` on strings) has no native Qdrant condition; it is
answered from order keys (``o``): the UTF-8 bytes, each plus one, in base 257, six to a chunk
(``filter.o.k<hex>_<i>`` integers below 2**53, exact in float64 ranges). Lexicographic order of the
chunks is Python's string order, so a comparison becomes a disjunction of "equal chunks up to i,
then greater at i". Only the first 33 chunks are stored, so ordering is exact for filter values up
to 192 UTF-8 bytes; a longer one raises :class:`~colbert_store.errors.FilterError`. Orderings on
integers beyond +-2**53 compare as float64, as Qdrant ranges do.

The translation builds conditions through a :class:`ConditionBuilder`, so the same logic serves
qdrant-client (:class:`ClientConditions`) and any engine with Qdrant's filter model.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import numpy as np

from colbert_store.adapters.qdrant.client import models
from colbert_store.errors import FilterError
from colbert_store.filters import And, Comparison, Filter, Membership, Not, Or, ScalarKind, operand, scalar_kind

ORDER_CHUNK_BYTES = 6  # 257**6 < 2**53: a chunk is exact in a float64 range
ORDER_CHUNKS = 32  # filter values up to 192 bytes; one more chunk is stored to tell longer strings
_ORDER_WEIGHTS = 257 ** np.arange(ORDER_CHUNK_BYTES - 1, -1, -1, dtype=np.int64)
_INT64 = (-(2**63), 2**63)
_KIND_OBJECT: dict[ScalarKind, str] = {"bool": "b", "int": "n", "float": "n", "str": "s"}

Condition = Any  # an engine's condition object; kept loose so the module imports without qdrant-client
Translated = Any  # a Condition, or True / False for a clause that holds for every / no document


class ConditionBuilder(Protocol):
    """Builds one engine's condition objects for the translation."""

    def match_value(self, key: str, value: bool | int | str) -> Condition: ...

    def match_any(self, key: str, values: list[Any]) -> Condition: ...

    def range(self, key: str, **bounds: float) -> Condition: ...

    def is_empty(self, key: str) -> Condition: ...

    def filter(
        self, *, must: list[Condition] | None = None, should: list[Condition] | None = None,
        must_not: list[Condition] | None = None,
    ) -> Condition: ...


class ClientConditions:
    """:class:`ConditionBuilder` for qdrant-client (server, or local mode)."""

    def __init__(self) -> None:
        self._m = models()

    def match_value(self, key: str, value: bool | int | str) -> Condition:
        return self._m.FieldCondition(key=key, match=self._m.MatchValue(value=value))

    def match_any(self, key: str, values: list[Any]) -> Condition:
        return self._m.FieldCondition(key=key, match=self._m.MatchAny(any=values))

    def range(self, key: str, **bounds: float) -> Condition:
        return self._m.FieldCondition(key=key, range=self._m.Range(**bounds))

    def is_empty(self, key: str) -> Condition:
        return self._m.IsEmptyCondition(is_empty=self._m.PayloadField(key=key))

    def filter(
        self, *, must: list[Condition] | None = None, should: list[Condition] | None = None,
        must_not: list[Condition] | None = None,
    ) -> Condition:
        return self._m.Filter(must=must, should=should, must_not=must_not)


# -- the ``filter`` payload object ------------------------------------------------------------
def field_key(field: str) -> str:
    """A Qdrant-path-safe name for a metadata key: ``k`` + hex of its UTF-8 bytes."""
    return "k" + field.encode("utf-8", "surrogatepass").hex()


def as_int64(value: int | float) -> int | None:
    """``value`` as an int64 if it is a whole number in range, else ``None``."""
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    return value if _INT64[0] <= value < _INT64[1] else None


def number_key(value: int | float) -> tuple[int, int]:
    """The exact order key of a number, as two 32-bit integers (module docstring).

    >>> number_key(-1.5) < number_key(-0.0) == number_key(0) < number_key(2**-1074) < number_key(3)
    True
    """
    bits = int.from_bytes(struct.pack(">d", float(value) + 0.0), "big")  # + 0.0: -0.0 is 0.0
    key = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | 1 << 63
    return key >> 32, key & 0xFFFF_FFFF


def order_chunks(text: str) -> list[int]:
    """Order key of a string: UTF-8 bytes plus one, six per base-257 chunk, zero-padded.

    Lexicographic order of the chunk lists (a missing chunk counting as 0) is Python's str order.

    >>> order_chunks(""), order_chunks("a") < order_chunks("a\\x00") < order_chunks("b")
    ([], True)
    """
    symbols = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8).astype(np.int64) + 1
    n_chunks = -(-len(symbols) // ORDER_CHUNK_BYTES)
    padded = np.zeros(n_chunks * ORDER_CHUNK_BYTES, np.int64)
    padded[: len(symbols)] = symbols
    return (padded.reshape(n_chunks, ORDER_CHUNK_BYTES) @ _ORDER_WEIGHTS).tolist()


def filter_fields(metadata: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``filter`` payload object of a document: top-level scalars by kind, and string order keys."""
    fields: dict[str, dict[str, Any]] = {}
    for key, value in metadata.items():
        kind = scalar_kind(value)
        if kind is None:  # lists, dicts and None: no comparison matches them
            continue
        name = field_key(key)
        if kind in ("int", "float"):
            whole = as_int64(value)
            value = value if whole is None else whole
            high, low = number_key(value)
            fields.setdefault("f", {}).update({f"{name}_0": high, f"{name}_1": low})
        elif kind == "bool":
            value = int(value)  # 0/1: Qdrant Edge matches integers, not JSON booleans (its own sub-object keeps kinds apart)
        fields.setdefault(_KIND_OBJECT[kind], {})[name] = value
        if kind == "str":
            order = fields.setdefault("o", {})
            for i, chunk in enumerate(order_chunks(value)[: ORDER_CHUNKS + 1]):
                order[f"{name}_{i}"] = chunk
    return fields


# -- translation ------------------------------------------------------------------------------
def translate_filter(expr: Filter, build: ConditionBuilder | None = None) -> Translated:
    """A parsed filter as a Qdrant condition over the ``filter`` payload, with ``matches`` semantics.

    Returns ``True`` / ``False`` for a filter that holds for every / no document. ``build`` makes the
    engine's condition objects (default: qdrant-client's).
    """
    return _Translator(build or ClientConditions()).translate(expr)


def all_of(clauses: list[Translated], build: ConditionBuilder) -> Translated:
    """The conjunction of translated clauses, simplified where one is ``True`` or ``False``."""
    if any(clause is False for clause in clauses):
        return False
    kept = [clause for clause in clauses if clause is not True]
    if not kept:
        return True
    return kept[0] if len(kept) == 1 else build.filter(must=kept)


def any_of(clauses: list[Translated], build: ConditionBuilder) -> Translated:
    """The disjunction of translated clauses, simplified where one is ``True`` or ``False``."""
    if any(clause is True for clause in clauses):
        return True
    kept = [clause for clause in clauses if clause is not False]
    if not kept:
        return False
    return kept[0] if len(kept) == 1 else build.filter(should=kept)


class _Translator:
    def __init__(self, build: ConditionBuilder) -> None:
        self._build = build

    def translate(self, expr: Filter) -> Translated:
        if isinstance(expr, And):
            return self._all_of([self.translate(clause) for clause in expr.clauses])
        if isinstance(expr, Or):
            return self._any_of([self.translate(clause) for clause in expr.clauses])
        if isinstance(expr, Not):
            inner = self.translate(expr.clause)
            return (not inner) if isinstance(inner, bool) else self._build.filter(must_not=[inner])
        if isinstance(expr, Membership):
            kind, name = _KIND_OBJECT[_kind_of(expr)], field_key(expr.field)
            found = self._equal_any(kind, name, expr.values)
            return found if expr.op == "$in" else self._present_and_not(f"filter.{kind}.{name}", found)
        if isinstance(expr, Comparison):
            return self._comparison(expr)
        raise FilterError(f"not a parsed filter: {expr!r}")

    def _all_of(self, clauses: list[Translated]) -> Translated:
        return all_of(clauses, self._build)

    def _any_of(self, clauses: list[Translated]) -> Translated:
        return any_of(clauses, self._build)

    def _comparison(self, expr: Comparison) -> Translated:
        kind = _KIND_OBJECT[_kind_of(expr)]
        name = field_key(expr.field)
        path = f"filter.{kind}.{name}"
        if expr.op == "$eq":
            return self._equal_any(kind, name, (expr.value,))
        if expr.op == "$ne":
            return self._present_and_not(path, self._equal_any(kind, name, (expr.value,)))
        if isinstance(expr.value, str):
            return self._all_of([self._present(path), self._string_order(name, expr.op, expr.value)])
        if kind == "n":
            return self._number_order(name, path, expr.op, expr.value)
        raise FilterError(f"{expr.field} {expr.op}: ordering needs a number or a string, got {expr.value!r}")

    def _number_order(self, name: str, path: str, op: str, value: int | float) -> Translated:
        """``stored <op> value`` on numbers, compared as float64 on the exact keys: high part, then low
        part (ints beyond float range decided here)."""
        try:
            high, low = number_key(value)
        except OverflowError:  # |value| > every finite float: the answer does not depend on the stored number
            below = (op in ("$lt", "$lte")) == (value > 0)
            return self._present(path) if below else False
        first, second = f"filter.f.{name}_0", f"filter.f.{name}_1"
        strict = "gt" if op in ("$gt", "$gte") else "lt"
        last = op[1:]  # on the low part the bound is inclusive for $gte / $lte
        return self._any_of([
            self._build.range(first, **{strict: high}),
            self._all_of([self._build.match_value(first, high), self._build.range(second, **{last: low})]),
        ])

    def _equal_any(self, kind: str, name: str, values: Iterable[Any]) -> Translated:
        """The field ``name`` (of this kind) equals one of ``values``."""
        path = f"filter.{kind}.{name}"
        distinct = list(dict.fromkeys(values))
        if kind == "s":
            return self._build.match_any(path, distinct)
        if kind == "b":
            if len(set(distinct)) == 2:
                return self._present(path)
            return self._build.match_value(path, int(bool(distinct[0])))
        whole = list(dict.fromkeys(v for v in map(as_int64, distinct) if v is not None))
        clauses: list[Translated] = [self._build.match_any(path, whole)] if whole else []
        for value in distinct:
            if as_int64(value) is None:
                clauses.append(self._equal_fraction(name, value))
        return self._any_of(clauses)

    def _equal_fraction(self, name: str, value: int | float) -> Translated:
        """Equality with a number that is not a whole int64 (stored numbers like it stay floats), on the
        exact keys."""
        try:
            exact = float(value)
        except OverflowError:
            return False
        if exact != value:  # an int beyond int64 that no float equals
            return False
        high, low = number_key(exact)
        return self._all_of(
            [self._build.match_value(f"filter.f.{name}_0", high), self._build.match_value(f"filter.f.{name}_1", low)]
        )

    def _present(self, path: str) -> Condition:
        return self._build.filter(must_not=[self._build.is_empty(path)])

    def _present_and_not(self, path: str, condition: Translated) -> Translated:
        """The field exists (with this kind) and ``condition`` does not hold: ``$ne`` / ``$nin``."""
        if condition is False:
            return self._present(path)
        if condition is True:
            return False
        return self._build.filter(must_not=[self._build.is_empty(path), condition])

    def _string_order(self, name: str, op: str, value: str) -> Translated:
        """``stored <op> value`` on strings, from the order-key chunks (see the module docstring)."""
        chunks = order_chunks(value)
        if len(chunks) > ORDER_CHUNKS:
            raise FilterError(
                f"string ordering ({op}) on Qdrant supports values up to {ORDER_CHUNKS * ORDER_CHUNK_BYTES} "
                f"UTF-8 bytes; got {len(value.encode('utf-8', 'surrogatepass'))}"
            )

        def key(i: int) -> str:
            return f"filter.o.{name}_{i}"

        def equal_up_to(i: int) -> list[Translated]:
            return [self._build.match_value(key(j), chunks[j]) for j in range(i)]

        branches: list[Translated] = []
        for i, chunk in enumerate(chunks):
            if op in ("$gt", "$gte"):
                step: Translated = self._build.range(key(i), gt=chunk)
            else:  # a missing chunk is 0: the stored string ended, so it is smaller
                step = self._any_of([self._build.is_empty(key(i)), self._build.range(key(i), lt=chunk)])
            branches.append(self._all_of([*equal_up_to(i), step]))
        n = len(chunks)
        tail = {"$gt": self._present(key(n)), "$gte": True, "$lt": False, "$lte": self._build.is_empty(key(n))}[op]
        branches.append(self._all_of([*equal_up_to(n), tail]))
        return self._any_of(branches)


def _kind_of(expr: Comparison | Membership) -> ScalarKind:
    kind = scalar_kind(operand(expr))
    assert kind is not None  # parse_filter admits scalars only
    return kind
