"""Results out: the one markdown-table helper every benchmark prints with, and the JSON file it saves."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table of already formatted cells (anything else goes through ``str``).

    >>> print(markdown_table(["system", "p50 ms"], [["exact", "12.3"]]))
    | system | p50 ms |
    |---|---|
    | exact | 12.3 |
    """
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"a row has {len(row)} cells for {len(columns)} columns: {row}")
        lines.append("| " + " | ".join(map(str, row)) + " |")
    return "\n".join(lines)


def save_results(path: str | Path, results: dict[str, Any], table: str) -> None:
    """Write ``results`` as JSON to ``path`` (creating its folder) and print the markdown ``table``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2) + "\n")
    print(table)
