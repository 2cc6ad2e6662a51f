"""Reading the SOURCE of ``colbert-store index`` (a folder of text files, a JSONL file or a BEIR corpus folder) and of
``colbert-store train`` (a BEIR folder's queries and qrels, or a JSONL file of queries and a qrels file)."""

from __future__ import annotations

import csv
import gzip
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from colbert_store.cli.errors import CliError

TEXT_SUFFIXES = (".txt", ".md")
BEIR_CORPUS_FILES = ("corpus.jsonl", "corpus.jsonl.gz")
BEIR_QUERY_FILES = ("queries.jsonl", "queries.jsonl.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".ndjson")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceDocument:
    """One document read from an ``index`` source."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def open_source(source: Path) -> tuple[Iterator[SourceDocument], int | None]:
    """Documents of an ``index`` SOURCE and their count (``None`` when unknown).

    Args:
        source: A folder of ``.txt``/``.md`` files, a BEIR folder holding ``corpus.jsonl[.gz]``, or a
            JSONL file (``.jsonl``, ``.jsonl.gz``, ``.json``, ``.ndjson``).

    Returns:
        The documents, read lazily, and how many records the source holds (empty ones included).

    Raises:
        CliError: The source does not exist or is not a supported kind.
    """
    if not source.exists():
        raise CliError(f"source {str(source)!r} does not exist")
    if source.is_dir():
        for name in BEIR_CORPUS_FILES:
            if (source / name).is_file():
                return _jsonl_source(source / name)
        files = _text_files(source)
        return _text_file_documents(source, files), len(files)
    if source.name.endswith(JSONL_SUFFIXES):
        return _jsonl_source(source)
    raise CliError(f"unsupported source {str(source)!r}: expected a folder, a .jsonl[.gz] file or a BEIR folder")


def _text_files(folder: Path) -> list[Path]:
    """``.txt``/``.md`` files under ``folder``, skipping hidden files and folders, sorted."""
    return sorted(
        path for path in folder.rglob("*")
        if path.suffix.lower() in TEXT_SUFFIXES and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def _text_file_documents(folder: Path, files: list[Path]) -> Iterator[SourceDocument]:
    """One document per non-empty file, its id the path relative to ``folder``."""
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        relative = path.relative_to(folder).as_posix()
        if not text.strip():
            logger.warning("skipping empty file %s", relative)
            continue
        yield SourceDocument(relative, text, {"path": relative, "extension": path.suffix.lower()})


def _open_text(path: Path) -> IO[str]:
    """``path`` opened as UTF-8 text, decompressed when its name ends in ``.gz``."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _jsonl_source(path: Path) -> tuple[Iterator[SourceDocument], int]:
    """The documents of a JSONL file and its count of non-blank lines."""
    with _open_text(path) as lines:
        total = sum(1 for line in lines if line.strip())
    return _jsonl_documents(path), total


def _jsonl_documents(path: Path) -> Iterator[SourceDocument]:
    """Documents of a JSONL file: ``id``/``_id``, ``text``, optional ``title`` and ``metadata``."""
    seen: set[str] = set()
    with _open_text(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            document = _jsonl_document(line, f"{path}:{number}")
            if document is None:
                continue
            if document.id in seen:
                raise CliError(f"{path}:{number}: id {document.id!r} appears twice")
            seen.add(document.id)
            yield document


def _jsonl_document(line: str, where: str) -> SourceDocument | None:
    """Parse one JSONL record; ``None`` (with a warning) for a record without text."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise CliError(f"{where}: not valid JSON ({error.msg})") from error
    if not isinstance(record, dict):
        raise CliError(f"{where}: expected a JSON object, got {type(record).__name__}")
    doc_id = record.get("id", record.get("_id"))
    if doc_id is None or doc_id == "":
        raise CliError(f"{where}: the record has no 'id' or '_id' field")
    title = record.get("title") or ""
    body = record.get("text") or ""
    if not isinstance(title, str) or not isinstance(body, str):
        raise CliError(f"{where}: 'title' and 'text' must be strings")
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise CliError(f"{where}: 'metadata' must be a JSON object")
    text = f"{title}\n\n{body}".strip() if title else body
    if not text.strip():
        logger.warning("%s: skipping document %r without text", where, doc_id)
        return None
    return SourceDocument(str(doc_id), text, {**({"title": title} if title else {}), **metadata})


def open_judged_queries(
    source: Path, qrels: Path | None = None, split: str = "train"
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The judged queries of a ``train`` SOURCE and each one's relevant document ids.

    Args:
        source: A BEIR folder (``queries.jsonl[.gz]``, ``qrels/<split>.tsv``) or a JSONL file of queries
            (``id``/``_id`` and ``text`` per line).
        qrels: The judgements (needed with a JSONL file; overrides the BEIR folder's): tab-separated
            ``query-id corpus-id score`` lines (TREC's four columns too), with or without a header.
        split: Which ``qrels/<split>.tsv`` of a BEIR folder.

    Returns:
        Query id -> text for every judged query, and query id -> ids judged with a positive score (empty for a
        query judged only irrelevant: the training refuses it, naming it).

    Raises:
        CliError: A missing or malformed file, or a judged query absent from the queries.
    """
    if not source.exists():
        raise CliError(f"source {str(source)!r} does not exist")
    if source.is_dir():
        found = [source / name for name in BEIR_QUERY_FILES if (source / name).is_file()]
        if not found:
            raise CliError(f"{str(source)!r} holds no queries.jsonl: expected a BEIR folder")
        queries_path, qrels = found[0], qrels or source / "qrels" / f"{split}.tsv"
    elif source.name.endswith(JSONL_SUFFIXES):
        if qrels is None:
            raise CliError("a JSONL file of queries needs --qrels FILE")
        queries_path = source
    else:
        raise CliError(f"unsupported source {str(source)!r}: expected a BEIR folder or a .jsonl[.gz] file of queries")
    judgements = read_qrels(qrels)
    texts = {document.id: document.text for document in _jsonl_documents(queries_path) if document.id in judgements}
    missing = sorted(set(judgements) - set(texts))
    if missing:
        raise CliError(f"{len(missing)} judged queries are not in {queries_path}, e.g. {missing[:5]}")
    return texts, {query: [doc for doc, score in docs.items() if score > 0] for query, docs in judgements.items()}


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Judgements ``query id -> {document id: score}`` from a tab-separated qrels file (BEIR's three columns with
    their header, or TREC's four).

    Raises:
        CliError: The file is missing or a line is malformed.
    """
    if not path.is_file():
        raise CliError(f"qrels file {str(path)!r} does not exist")
    judgements: dict[str, dict[str, int]] = {}
    with _open_text(path) as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or number == 1 and row[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(row) not in (3, 4):
                raise CliError(f"{path}:{number}: expected 3 tab-separated fields (query id, document id, score), got {row}")
            try:
                score = int(row[-1])
            except ValueError:
                raise CliError(f"{path}:{number}: the score {row[-1]!r} is not an integer") from None
            judgements.setdefault(row[0].strip(), {})[row[-2].strip()] = score
    if not judgements:
        raise CliError(f"{path} holds no judgements")
    return judgements
