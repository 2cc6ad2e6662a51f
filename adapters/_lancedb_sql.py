"""Rendering of parsed metadata filters as LanceDB (DataFusion SQL) predicates, values escaped."""

from __future__ import annotations

import math
from dataclasses import dataclass

from colbert_store.errors import FilterError
from colbert_store.filters import And, Comparison, Filter, Membership, Not, Or, Scalar

_SQL_OPERATORS = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


@dataclass(frozen=True)
class MetadataColumn:
    """The generated column holding one metadata field, and the kind of its values."""

    name: str
    kind: str  # "str" | "int" | "float" | "bool"


def sql_string(value: str) -> str:
    """A SQL string literal: quotes doubled, NUL refused.

    >>> sql_string("it's")
    "'it''s'"
    """
    if "\x00" in value:
        raise FilterError(f"strings with NUL characters cannot be used in a LanceDB filter: {value!r}")
    return "'" + value.replace("'", "''") + "'"


def render_filter(expr: Filter, columns: dict[str, MetadataColumn]) -> str:
    """SQL for ``expr``; comparisons on unknown fields or of another kind render as ``false``.

    Every comparison is wrapped in ``IS TRUE`` so a NULL (missing field) is false, and ``NOT``
    is then the exact complement, as :func:`colbert_store.filters.matches` defines.
    """
    if isinstance(expr, And):
        return "(" + " AND ".join(render_filter(clause, columns) for clause in expr.clauses) + ")"
    if isinstance(expr, Or):
        return "(" + " OR ".join(render_filter(clause, columns) for clause in expr.clauses) + ")"
    if isinstance(expr, Not):
        return f"(NOT {render_filter(expr.clause, columns)})"
    column = columns.get(expr.field)
    probe = expr.value if isinstance(expr, Comparison) else expr.values[0]
    if column is None or not _kind_matches(probe, column.kind):
        return "false"
    if isinstance(expr, Membership):
        listed = ", ".join(_literal(value) for value in expr.values)
        negation = "NOT " if expr.op == "$nin" else ""
        return f"(({column.name} {negation}IN ({listed})) IS TRUE)"
    return f"(({column.name} {_SQL_OPERATORS[expr.op]} {_literal(expr.value)}) IS TRUE)"


def _kind_matches(value: Scalar, column_kind: str) -> bool:
    if isinstance(value, bool):
        return column_kind == "bool"
    if isinstance(value, (int, float)):
        return column_kind in ("int", "float")
    return column_kind == "str"


def _literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise FilterError(f"integer {value} does not fit in 64 bits")
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FilterError(f"non-finite number {value!r} cannot be used in a filter")
        return repr(value)
    return sql_string(value)
