"""What the commands print for the user: hits as a table or JSON lines, and an index's statistics."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from colbert_store.cli.errors import PROG

if TYPE_CHECKING:
    from colbert_store.hits import Hit
    from colbert_store.maintenance import IndexHealth
    from colbert_store.search import SearchParams

SNIPPET_CHARS = 100
LABEL_WIDTH = 13


def snippet(text: str | None, width: int = SNIPPET_CHARS) -> str:
    """``text`` on one line, cut to ``width`` characters.

    >>> snippet("a  b\\n c", 10)
    'a b c'
    >>> snippet("abcdefghijkl", 6)
    'abcde…'
    """
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def print_hits(hits: Sequence[Hit], indent: str = "") -> None:
    """Print one line per hit: rank, score, id and a snippet of its text."""
    if not hits:
        print(f"{indent}(no results)")
    for rank, hit in enumerate(hits, start=1):
        print(f"{indent}{rank:>3}  {hit.score:8.3f}  {hit.id}  {snippet(hit.text)}")


def print_hits_json(hits: Sequence[Hit]) -> None:
    """Print one JSON object per hit: ``id``, ``score``, ``text`` and ``metadata``."""
    for hit in hits:
        print(json.dumps({"id": hit.id, "score": hit.score, "text": hit.text, "metadata": hit.metadata}))


def print_info(stats: Mapping[str, Any], location: str, backend: str) -> None:
    """Print an index's statistics (:meth:`~colbert_store.index.Index.stats`), one labelled row per line."""
    for label, value in [*_info_rows(stats, location, backend), *_health_rows(stats["health"])]:
        print(f"{label:<{LABEL_WIDTH}}{value}")


def _info_rows(stats: Mapping[str, Any], location: str, backend: str) -> list[tuple[str, str]]:
    """Rows for the index's size, codec settings and encoder."""
    bytes_per_token = stats.get("bytes_per_token")
    rows = [
        ("index", str(stats["name"])),
        ("store", f"{location} ({backend})"),
        ("documents", str(stats["documents"])),
        ("tokens", str(stats["tokens"])),
        ("dim", str(stats["dim"])),
        ("nbits", str(stats["nbits"])),
        ("pooling", _pooling(stats.get("pool_factor", 1))),
        ("centroids", "untrained" if stats.get("centroids") is None else str(stats["centroids"])),
    ]
    if bytes_per_token:
        ratio = 2 * stats["dim"] / bytes_per_token  # float16 takes 2 bytes per dimension
        rows.append(("bytes/token", f"{bytes_per_token} ({ratio:.1f}x smaller than float16)"))
    else:
        rows.append(("bytes/token", "-"))
    encoder = stats.get("encoder")
    rows.append(("encoder", ", ".join(f"{k}={v}" for k, v in encoder.items()) if encoder else "not recorded"))
    rows.append(("search", ", ".join(f"{knob}={value}" for knob, value in asdict(stats["search"]).items())))
    return rows


def print_search_params(params: SearchParams) -> None:
    """Print the search knobs, one labelled row per knob."""
    knobs = asdict(params)
    width = max(map(len, knobs)) + 2
    for knob, value in knobs.items():
        print(f"{knob:<{width}}{value}")


def _pooling(pool_factor: int) -> str:
    """The ``pool_factor`` setting in words."""
    if pool_factor == 1:
        return "none (one vector per token)"
    return f"factor {pool_factor} (about one stored vector per {pool_factor} document tokens)"


def _health_rows(health: IndexHealth | None) -> list[tuple[str, str]]:
    """Rows for how well the codec still fits the documents; none for an untrained index."""
    if health is None:
        return []
    return [
        ("fit", f"error x{health.error_ratio:.2f} of its training sample (generation {health.generation})"),
        ("skew", f"top 1% of centroids hold {health.top_centroid_share:.0%} of tokens "
                 f"({health.reference_top_centroid_share:.0%} in training), "
                 f"{health.empty_centroids:.0%} unused"),
        ("retrain", f"recommended ({PROG} retrain)" if health.needs_retrain else "not needed"),
    ]
