"""The metadata filter language shared by every store, parsed into a small typed tree.

Filters are dicts in the style Chroma, Pinecone and LangChain users know::

    {"year": 2020}                                   # equality
    {"year": {"$gte": 2018, "$lt": 2021}}            # several operators on one field: all must hold
    {"$or": [{"lang": "en"}, {"lang": {"$in": ["de", "fr"]}}]}
    {"$not": {"source": "wiki"}}

A comparison on a field a document lacks is false (``$ne`` and ``$nin`` included); ``$not`` is the
exact complement of what it wraps. Each backend translates the tree into its native filter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from colbert_store.errors import FilterError

Scalar = str | int | float | bool
ScalarKind = Literal["bool", "int", "float", "str"]

COMPARISON_GROUPS: dict[ScalarKind, str] = {"bool": "bool", "int": "number", "float": "number", "str": "str"}
"""Kinds whose values compare with each other share a group: ints and floats are both numbers."""

COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
MEMBERSHIPS = ("$in", "$nin")
ORDERINGS = ("$gt", "$gte", "$lt", "$lte")


@dataclass(frozen=True)
class Comparison:
    """``field <op> value`` for op in ``$eq $ne $gt $gte $lt $lte``."""

    field: str
    op: str
    value: Scalar


@dataclass(frozen=True)
class Membership:
    """``field`` in (``$in``) or not in (``$nin``) ``values``."""

    field: str
    op: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class And:
    clauses: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    clauses: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    clause: Filter


Filter = Comparison | Membership | And | Or | Not


def parse_filter(spec: Mapping[str, Any] | None) -> Filter | None:
    """Validate a filter dict and return its tree (``None`` for no filter).

    >>> parse_filter({"year": {"$gte": 2018}, "lang": "en"})
    And(clauses=(Comparison(field='year', op='$gte', value=2018), Comparison(field='lang', op='$eq', value='en')))
    """
    if spec is None:
        return None
    return _parse_mapping(spec, path="filter")


def matches(expr: Filter | None, metadata: Mapping[str, Any]) -> bool:
    """Evaluate a parsed filter against one metadata dict (the reference semantics of the language)."""
    if expr is None:
        return True
    if isinstance(expr, And):
        return all(matches(clause, metadata) for clause in expr.clauses)
    if isinstance(expr, Or):
        return any(matches(clause, metadata) for clause in expr.clauses)
    if isinstance(expr, Not):
        return not matches(expr.clause, metadata)
    value = metadata.get(expr.field)
    if not comparable(scalar_kind(value), scalar_kind(operand(expr))):
        return False
    if isinstance(expr, Membership):
        return (value in expr.values) == (expr.op == "$in")
    return bool(_COMPARE[expr.op](value, expr.value))


_COMPARE = {
    "$eq": lambda a, b: a == b,
    "$ne": lambda a, b: a != b,
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def scalar_kind(value: Any) -> ScalarKind | None:
    """The kind of a metadata value a filter can compare, ``None`` for anything else (lists, dicts, None).

    >>> [scalar_kind(v) for v in (True, 3, 3.0, "a", [1], None)]
    ['bool', 'int', 'float', 'str', None, None]
    """
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return None


def comparable(kind: ScalarKind | None, other: ScalarKind | None) -> bool:
    """Whether values of these kinds compare: the same kind, or two numbers (int and float)."""
    return kind is not None and other is not None and COMPARISON_GROUPS[kind] == COMPARISON_GROUPS[other]


def operand(expr: Comparison | Membership) -> Scalar:
    """The value whose kind decides what a comparison or membership test can match."""
    return expr.value if isinstance(expr, Comparison) else expr.values[0]


def _parse_mapping(spec: Any, path: str) -> Filter:
    if not isinstance(spec, Mapping) or not spec:
        raise FilterError(f"{path} must be a non-empty dict, got {spec!r}")
    clauses = [_parse_entry(key, value, path) for key, value in spec.items()]
    return clauses[0] if len(clauses) == 1 else And(tuple(clauses))


def _parse_entry(key: Any, value: Any, path: str) -> Filter:
    if not isinstance(key, str) or not key or "\x00" in key:
        raise FilterError(f"{path}: keys must be non-empty strings without NUL characters, got {key!r}")
    if key in ("$and", "$or"):
        if not isinstance(value, (list, tuple)) or not value:
            raise FilterError(f"{path}.{key} needs a non-empty list of filters, got {value!r}")
        parsed = tuple(_parse_mapping(item, f"{path}.{key}[{i}]") for i, item in enumerate(value))
        return And(parsed) if key == "$and" else Or(parsed)
    if key == "$not":
        return Not(_parse_mapping(value, f"{path}.$not"))
    if key.startswith("$"):
        raise FilterError(f"{path}: unknown operator {key!r}; combinators are $and, $or, $not")
    if isinstance(value, Mapping):
        if not value:
            raise FilterError(f"{path}.{key}: empty operator dict")
        ops = [_parse_operator(key, op, operand, f"{path}.{key}") for op, operand in value.items()]
        return ops[0] if len(ops) == 1 else And(tuple(ops))
    return _parse_operator(key, "$eq", value, f"{path}.{key}")


def _parse_operator(field: str, op: Any, operand: Any, path: str) -> Filter:
    if op in MEMBERSHIPS:
        if not isinstance(operand, (list, tuple)) or not operand:
            raise FilterError(f"{path}.{op} needs a non-empty list of values, got {operand!r}")
        values = tuple(_check_scalar(item, f"{path}.{op}") for item in operand)
        if len({COMPARISON_GROUPS[kind] for kind in map(scalar_kind, values) if kind}) > 1:
            raise FilterError(f"{path}.{op} mixes value types: {list(values)!r}")
        return Membership(field, op, values)
    if op in COMPARISONS:
        value = _check_scalar(operand, f"{path}.{op}")
        if op in ORDERINGS and isinstance(value, bool):
            raise FilterError(f"{path}.{op} compares order; it needs a number or string, got {value!r}")
        return Comparison(field, op, value)
    known = ", ".join(COMPARISONS + MEMBERSHIPS)
    raise FilterError(f"{path}: unknown operator {op!r}; known: {known}")


def _check_scalar(value: Any, path: str) -> Scalar:
    if isinstance(value, float) and value != value:
        raise FilterError(f"{path}: NaN cannot be compared")
    if isinstance(value, str) and "\x00" in value:  # metadata refuses NUL too, and SQL stores cannot quote it
        raise FilterError(f"{path}: strings with NUL characters cannot be compared, got {value!r}")
    if isinstance(value, (str, int, float, bool)):
        return value
    raise FilterError(f"{path}: values must be str, int, float or bool, got {type(value).__name__} {value!r}")
