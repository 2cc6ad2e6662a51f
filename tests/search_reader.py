"""Reader process for the multi-process test: searches one LanceDB index until told to stop.

    python -m tests.search_reader FOLDER SECONDS OUT

Prints ``ready`` once the index is open, then writes one JSON line per search to the file OUT:
the monotonic clock when the search started, and the hit ids. (A file rather than stdout: the
parent reads ``ready`` through a buffered pipe, and stdout is shared with native libraries.)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import colbert_store as cs
from tests.conftest import STORE_FACTORIES, make_corpus


def main(folder: str, seconds: str, out: str) -> None:
    index = cs.Index.open(STORE_FACTORIES["lancedb"](Path(folder)), "shared")
    queries = [make_corpus().query(topic) for topic in range(10)]
    print("ready", flush=True)
    deadline = time.monotonic() + float(seconds)
    turn = 0
    with open(out, "w", encoding="utf-8") as results:
        while time.monotonic() < deadline:
            started = time.monotonic()
            hits = index.search(queries[turn % len(queries)], k=20)
            results.write(json.dumps({"started": started, "ids": [hit.id for hit in hits]}) + "\n")
            turn += 1


if __name__ == "__main__":
    main(*sys.argv[1:])
