"""The worker side of ``benchmarks.head_to_head``: answer blocks of queries over a pipe, timing each one.

Standard library only, so PLAID's own environment runs it too (``plaid_runner.py --serve``). The
protocol is JSON lines: the worker writes ``{"ready": true}`` once its index is warm; then for each
line ``{"queries": [i, j, ...], "warmup": [...]}`` (positions in the query list) it runs the
``warmup`` queries untimed, then writes ``{"rankings": [[id, ...], ...], "seconds": [...]}`` for
``queries``. A line ``{"batches": n, "queries": [...]}`` instead answers ``queries`` in batches of ``n``
with the worker's batch search, timed as a whole: ``{"seconds": total}``. End of input stops it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import TextIO


def claim_stdout() -> TextIO:
    """The process's stdout, kept for the protocol; from now on anything printed there goes to stderr.

    Call it before loading anything that may print: PLAID logs with ``print``.
    """
    sys.stdout.flush()
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return channel


def serve(
    search: Callable[[int], list[str]], channel: TextIO, search_batch: Callable[[list[int]], object] | None = None
) -> None:
    """Say ready on ``channel`` (from :func:`claim_stdout`), then answer query blocks from stdin until it
    closes; ``search`` ranks the query at a position, ``search_batch`` the queries at several (default:
    ``search`` on each in turn)."""
    _send(channel, {"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        if "batches" in request:
            positions, size = request["queries"], request["batches"]
            started = time.perf_counter()
            for start in range(0, len(positions), size):
                (search_batch or _each(search))(positions[start : start + size])
            _send(channel, {"seconds": time.perf_counter() - started})
            continue
        for position in request.get("warmup", []):
            search(position)
        rankings, seconds = [], []
        for position in request["queries"]:
            started = time.perf_counter()
            rankings.append(search(position))
            seconds.append(time.perf_counter() - started)
        _send(channel, {"rankings": rankings, "seconds": seconds})


def _each(search: Callable[[int], list[str]]) -> Callable[[list[int]], object]:
    return lambda positions: [search(position) for position in positions]


def _send(channel: TextIO, message: dict[str, object]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()
