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
from typing import Any

from colbert_store.errors import FilterError

Scalar = str | int | float | bool

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


def fields_of(expr: Filter) -> set[str]:
    """Every metadata field a filter reads."""
    if isinstance(expr, (Comparison, Membership)):
        return {expr.field}
    if isinstance(expr, Not):
        return fields_of(expr.clause)
    return set().union(*(fields_of(clause) for clause in expr.clauses))


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
    if value is None or not _same_kind(value, expr):
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


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "str"


def _same_kind(value: Any, expr: Comparison | Membership) -> bool:
    probe = expr.value if isinstance(expr, Comparison) else expr.values[0]
    return isinstance(value, (str, int, float, bool)) and _kind(value) == _kind(probe)


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
        if len({_kind(item) for item in values}) > 1:
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
