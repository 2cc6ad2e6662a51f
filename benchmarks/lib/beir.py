"""Read a BEIR-format dataset folder (corpus, queries, qrels) into memory.

Layout: ``corpus.jsonl`` or ``corpus.jsonl.gz`` (one ``{"_id", "title", "text"}`` object per line),
``queries.jsonl`` (``{"_id", "text"}``) and ``qrels/<split>.tsv`` (tab-separated with a
``query-id corpus-id score`` header).
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR dataset restricted to the queries judged in one qrels split.

    Attributes:
        doc_ids: Corpus ids, in file order.
        doc_texts: ``"title. text"`` per document (just ``text`` when the title is empty), aligned with ``doc_ids``.
        query_ids: Ids of the queries with at least one judgement in the split, in ``queries.jsonl`` order.
        query_texts: Their texts, aligned with ``query_ids``.
        qrels: ``query_id -> {doc_id: score}`` for the split.
    """

    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]


def load_beir(folder: str | os.PathLike[str], split: str = "test") -> BeirDataset:
    """Load ``folder``'s corpus, the queries judged in ``qrels/<split>.tsv``, and those judgements.

    Raises:
        FileNotFoundError: A required file is missing (the message names it).
        ValueError: A malformed line (the message names the file and line).
    """
    root = Path(folder).expanduser()
    qrels = read_qrels(root / "qrels" / f"{split}.tsv")
    doc_ids: list[str] = []
    doc_texts: list[str] = []
    for record in _read_jsonl(_corpus_path(root)):
        doc_ids.append(str(record["_id"]))
        doc_texts.append(join_title(str(record.get("title") or ""), str(record.get("text") or "")))
    query_ids: list[str] = []
    query_texts: list[str] = []
    for record in _read_jsonl(root / "queries.jsonl"):
        query_id = str(record["_id"])
        if query_id in qrels:
            query_ids.append(query_id)
            query_texts.append(str(record["text"]))
    missing = set(qrels) - set(query_ids)
    if missing:
        raise ValueError(f"{len(missing)} judged queries are absent from queries.jsonl, e.g. {sorted(missing)[:3]}")
    return BeirDataset(doc_ids, doc_texts, query_ids, query_texts, qrels)


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Read a qrels TSV (``query-id corpus-id score`` with a header) into ``query_id -> {doc_id: score}``."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise ValueError(f"{path}: expected a 'query-id corpus-id score' header, got {header}")
        for line_number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{line_number}: expected 3 tab-separated fields, got {row}")
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def join_title(title: str, text: str) -> str:
    """Join a title and a body as ``"title. text"`` (no extra period when the title already ends a sentence)."""
    title, text = title.strip(), text.strip()
    if not title:
        return text
    if not text:
        return title
    separator = " " if title[-1] in ".?!" else ". "
    return f"{title}{separator}{text}"


def _corpus_path(root: Path) -> Path:
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"no corpus.jsonl or corpus.jsonl.gz in {root}")


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    handle: IO[str]
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{line_number}: invalid JSON: {exc}") from exc
