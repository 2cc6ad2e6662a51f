"""Reader process for the multi-process test: searches one LanceDB index until told to stop.

    python -m tests.search_reader FOLDER SECONDS

Prints one line per search: the monotonic clock when the search started, and the hit ids.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import colbert_store as cs
from tests.conftest import STORE_FACTORIES, make_corpus


def main(folder: str, seconds: str) -> None:
    index = cs.Index.open(STORE_FACTORIES["lancedb"](Path(folder)), "shared")
    queries = [make_corpus().query(topic) for topic in range(10)]
    print("ready", flush=True)
    deadline = time.monotonic() + float(seconds)
    turn = 0
    while time.monotonic() < deadline:
        started = time.monotonic()
        hits = index.search(queries[turn % len(queries)], k=20)
        print(started, " ".join(hit.id for hit in hits), flush=True)
        turn += 1


if __name__ == "__main__":
    main(*sys.argv[1:])
