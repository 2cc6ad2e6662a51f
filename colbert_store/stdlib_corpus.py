"""A corpus every Python installation has: docstrings of the standard library, read with ``ast``.

Source files are parsed, never imported, so reading them has no side effects.
"""

from __future__ import annotations

import ast
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_SKIPPED_PARTS = {"test", "tests", "idlelib", "tkinter", "turtledemo", "site-packages", "lib2to3", "ensurepip"}


@dataclass(frozen=True)
class Docstring:
    """One documented object: ``id`` is its dotted path (``json.decoder.JSONDecoder.decode``)."""

    id: str
    text: str
    module: str
    kind: str  # "module" | "class" | "function"


def stdlib_docstrings(min_chars: int = 200, limit: int | None = None) -> list[Docstring]:
    """Docstrings of at least ``min_chars`` characters, in a stable order (sorted by file path)."""
    found: list[Docstring] = []
    seen: set[str] = set()
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if _SKIPPED_PARTS & set(relative.parts) or any(part.startswith("_") for part in relative.parts):
            continue
        module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
        for entry in _docstrings_of(path, module):
            if len(entry.text) >= min_chars and entry.id not in seen:
                seen.add(entry.id)
                found.append(entry)
                if limit is not None and len(found) >= limit:
                    return found
    return found


def _docstrings_of(path: Path, module: str) -> Iterator[Docstring]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return
    text = ast.get_docstring(tree)
    if text:
        yield Docstring(module, text, module, "module")
    yield from _walk(tree, module, module)


def _walk(node: ast.AST, prefix: str, module: str) -> Iterator[Docstring]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not child.name.startswith("_"):
            name = f"{prefix}.{child.name}"
            text = ast.get_docstring(child)
            if text:
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                yield Docstring(name, text, module, kind)
            if isinstance(child, ast.ClassDef):
                yield from _walk(child, name, module)
