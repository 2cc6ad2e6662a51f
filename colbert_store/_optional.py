"""Lazy imports of optional dependencies, with an install hint naming the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from colbert_store.errors import MissingDependencyError


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` telling which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"{module} is needed for this feature: pip install \"colbert-store[{extra}]\""
        ) from error
