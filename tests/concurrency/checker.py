"""Holds the store's final state and every search against what the workers were told.

- *lost*: an id whose stored state (absent, or a version) is not the result of any write that some
  order consistent with real time could make last: a write ``W`` can be last only if no acknowledged
  write on the id began after ``W`` ended (an unacknowledged write, killed or failed, ends for this
  purpose when its process was killed or its error logged; it may or may not have happened);
- *torn*: a stored document that is not exactly its version, token for token, under its codec;
- *duplicated*: an id stored more than once;
- *dead codec*: a stored document whose codec the index no longer holds;
- *stale*: a search hit showing a version that an acknowledged write (or delete) had superseded more
  than ``bound_ns`` before the search began;
- *not self-retrieved*: a stored document that a search with its own vectors does not rank first.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import colbert_store as cs
from colbert_store.storage import revision_generations
from tests.concurrency.workload import doc_ids, document, text_of

INITIAL = "init"


@dataclass(frozen=True)
class Write:
    """One writer call on one id: ``tag`` for an upsert (``None`` for a delete), when it began, when it
    ended (or, unacknowledged, the latest it could have taken effect) and whether it was acknowledged."""

    tag: str | None
    begin: int
    end: int
    acknowledged: bool


def read_events(paths: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(line) for path in paths if path.exists() for line in path.read_text().splitlines() if line]


def writes_by_id(events: list[dict[str, Any]], kill_times: dict[int, int], finished: int) -> dict[str, list[Write]]:
    """Every id's writes, from the writers' events (an initial version at time 0 for every id)."""
    begun: dict[tuple[int, int], dict[str, Any]] = {}
    closed: dict[tuple[int, int], dict[str, Any]] = {}
    for event in events:
        key = (event["writer"], event["seq"])
        (begun if event["event"] == "begin" else closed)[key] = event
    writes: dict[str, list[Write]] = {doc_id: [Write(INITIAL, 0, 0, True)] for doc_id in doc_ids()}
    for key, begin in begun.items():
        end = closed.get(key)
        acknowledged = end is not None and end["event"] == "end"
        latest = end["t"] if end is not None else kill_times.get(key[0], finished)
        tag = begin["tag"] if begin["op"] == "upsert" else None
        for doc_id in begin["ids"]:
            writes[doc_id].append(Write(tag, begin["t"], latest, acknowledged))
    return writes


def check(
    index: cs.Index,
    writer_logs: list[Path],
    searcher_logs: Sequence[Path] = (),
    kill_times: dict[int, int] | None = None,
    finished: int = 0,
    bound_ns: int = 0,
) -> dict[str, Any]:
    """Counts of operations and of every kind of failure (module docstring)."""
    events = read_events(writer_logs)
    writes = writes_by_id(events, kill_times or {}, finished)
    final, duplicated = _stored(index)
    lost = [doc_id for doc_id, history in writes.items() if final.get(doc_id, (None,))[0] not in _possible_last(history)]
    codecs = index._state.by_generation()
    torn, dead = [], []
    for doc_id, (tag, revision, centroid_ids, residuals, text) in final.items():
        codec = codecs.get(int(revision_generations(np.array([revision]))[0]))
        if codec is None:
            dead.append(doc_id)
            continue
        expected_ids, expected_residuals = codec.compress(document(doc_id, tag))
        if (
            text != text_of(doc_id, tag)
            or not np.array_equal(centroid_ids, expected_ids)
            or not np.array_equal(residuals, expected_residuals)
        ):
            torn.append(doc_id)
    unfound = [doc_id for doc_id, (tag, *_) in final.items() if index.search(document(doc_id, tag), k=1)[0].id != doc_id]
    searches = [event for event in read_events(list(searcher_logs)) if event["event"] == "search"]
    stale = [event for event in searches if _stale_hits(event, writes, bound_ns)]
    return {
        "calls": sum(event["event"] == "begin" for event in events),
        "acknowledged": sum(event["event"] == "end" for event in events),
        "errors": [event["error"] for event in read_events(writer_logs + list(searcher_logs)) if event["event"] == "error"],
        "documents": len(final),
        "lost": lost,
        "torn": torn,
        "duplicated": duplicated,
        "dead_codec": dead,
        "not_self_retrieved": unfound,
        "searches": len(searches),
        "stale_searches": len(stale),
    }


def _possible_last(history: list[Write]) -> set[str | None]:
    """The states one of these writes can have left last (``None``: absent)."""
    acknowledged_begins = [write.begin for write in history if write.acknowledged]
    return {write.tag for write in history if not any(begin > write.end for begin in acknowledged_begins)}


def _stale_hits(search: dict[str, Any], writes: dict[str, list[Write]], bound_ns: int) -> bool:
    for doc_id, tag in search["hits"]:
        written = next((write for write in writes.get(doc_id, []) if write.tag == tag), None)
        if written is None:
            return True  # a version no writer wrote
        for later in writes[doc_id]:
            if later.acknowledged and later.begin > written.end and later.end < search["start"] - bound_ns:
                return True
    return False


def _stored(index: cs.Index) -> tuple[dict[str, tuple[str, int, np.ndarray, np.ndarray, str | None]], list[str]]:
    """Each stored document's version tag, revision, codes, residuals and text, by id; and ids stored twice."""
    stored, duplicated = {}, []
    for batch in index.documents():
        for row, doc_id in enumerate(batch.ids):
            if doc_id in stored:
                duplicated.append(doc_id)
            tokens = slice(batch.token_offsets[row], batch.token_offsets[row + 1])
            stored[doc_id] = (batch.metadata[row]["tag"], int(batch.revisions[row]), batch.centroid_ids[tokens],
                              batch.residuals[tokens], batch.texts[row])
    return stored, duplicated


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The report with counts instead of lists, for tables."""
    return {key: len(value) if isinstance(value, list) else value for key, value in report.items()}

