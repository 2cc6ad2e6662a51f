"""The ``index``, ``search``, ``info``, ``search-defaults`` and ``retrain`` commands: each takes the parsed arguments
and returns the exit status."""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from colbert_store.cli.errors import CliError
from colbert_store.cli.output import print_hits, print_hits_json, print_info, print_search_params
from colbert_store.cli.resources import (
    check_compact_backend,
    load_encoder,
    open_index,
    open_writable_retriever,
    opened_store,
)
from colbert_store.cli.sources import SourceDocument, open_source

if TYPE_CHECKING:
    from colbert_store.retriever import Retriever

CHUNK_DOCS = 10_000
"""Documents read from the source per ``add_texts`` call (the first chunk also trains the codec)."""


def cmd_index(args: argparse.Namespace) -> int:
    """``colbert-store index``: add the documents of SOURCE to an index."""
    check_compact_backend(args.backend, args.compact)  # before the source is read and the model loaded
    if args.pool_factor is not None:
        from colbert_store.settings import check_pool_factor

        check_pool_factor(args.pool_factor)  # before the source is read and the model loaded
    documents, total = open_source(Path(args.source))
    chunks = _chunks(documents, max(CHUNK_DOCS, args.batch_size))
    first = next(chunks, None)
    if not first:
        raise CliError(f"no documents found in {args.source}")
    started = time.perf_counter()
    with opened_store(args.store, args.backend, must_exist=False, compact=args.compact) as store:
        retriever = open_writable_retriever(
            store, args.name, model=args.model, doc_maxlen=args.doc_maxlen, nbits=args.nbits, pool_factor=args.pool_factor
        )
        added = _add_chunks(retriever, itertools.chain([first], chunks), total, args.batch_size)
        print(f"indexed {added} documents into {args.name!r} ({len(retriever)} in total) "
              f"in {time.perf_counter() - started:.1f} s")
    return 0


def _chunks(documents: Iterable[SourceDocument], size: int) -> Iterator[list[SourceDocument]]:
    """``documents`` in lists of ``size`` (the last one shorter)."""
    iterator = iter(documents)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


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
    where = parse_filter(args.filter)
    knobs: dict[str, Any] = dict(parse_knob(assignment) for assignment in args.set or ())
    with opened_store(args.store, args.backend, must_exist=True) as store:
        index = open_index(store, args.name, args.store)
        from colbert_store.retriever import Retriever

        retriever = Retriever(index, load_encoder(args.model, index.settings.encoder, None))
        hits = retriever.search(args.query, k=args.k, filter=where, hybrid=args.hybrid, **knobs)
    if args.json:
        print_hits_json(hits)
    else:
        print_hits(hits)
    return 0


def parse_filter(text: str | None) -> dict[str, Any] | None:
    """The ``--filter`` JSON (``search``, ``train``), checked before the model is loaded so that a typo fails fast."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(f"--filter is not valid JSON: {error.msg} at position {error.pos}") from error
    if not isinstance(value, dict):
        raise CliError(f"--filter must be a JSON object, got {type(value).__name__}")
    from colbert_store.filters import parse_filter as check_filter

    check_filter(value)
    return value


def cmd_info(args: argparse.Namespace) -> int:
    """``colbert-store info``: print an index's statistics."""
    with opened_store(args.store, args.backend, must_exist=True) as store:
        stats = open_index(store, args.name, args.store).stats()
    print_info(stats, args.store, args.backend)
    return 0


def cmd_search_defaults(args: argparse.Namespace) -> int:
    """``colbert-store search-defaults``: print the search knobs stored with an index, after changing them
    where ``--set`` or ``--reset`` asks to."""
    knobs = dict(parse_knob(assignment) for assignment in args.set or ())
    with opened_store(args.store, args.backend, must_exist=True) as store:
        index = open_index(store, args.name, args.store)
        if knobs or args.reset:
            from colbert_store.search import SearchParams

            params = index.set_search_defaults(SearchParams() if args.reset else None, **knobs)
        else:
            params = index.settings.search
    print_search_params(params)
    return 0


def parse_knob(assignment: str) -> tuple[str, int | float | None]:
    """``KNOB=VALUE`` as a knob name and its value: an integer, a number, or ``none``.

    >>> parse_knob("nprobe=2"), parse_knob("centroid_threshold=0.45"), parse_knob("centroid_threshold=none")
    (('nprobe', 2), ('centroid_threshold', 0.45), ('centroid_threshold', None))
    """
    knob, separator, text = (part.strip() for part in assignment.partition("="))
    if not separator or not knob:
        raise CliError(f"--set takes KNOB=VALUE (e.g. nprobe=2), got {assignment!r}")
    knob = knob.replace("-", "_")
    if text.lower() == "none":
        return knob, None
    for kind in (int, float):
        try:
            return knob, kind(text)
        except ValueError:
            continue
    raise CliError(f"--set {knob}: {text!r} is not a number or none")


def cmd_retrain(args: argparse.Namespace) -> int:
    """``colbert-store retrain``: refit the codec and re-encode the stored documents."""
    with opened_store(args.store, args.backend, must_exist=True) as store:
        index = open_index(store, args.name, args.store)
        if index.codec is None:
            raise CliError(f"index {args.name!r} has no documents to retrain on")
        asked = _read_queries(args.queries) if args.queries else None
        encoder = None
        if not args.from_vectors or asked:
            encoder = load_encoder(args.model, index.settings.encoder, None)
        before = index.health()
        started = time.perf_counter()
        from colbert_store.retriever import recorded_identity

        reencode = encoder is not None and not args.from_vectors
        index.retrain(
            encode_texts=encoder.encode_documents if encoder and reencode else None,
            queries=encoder.encode_queries(asked) if encoder and asked else None,
            encoder=recorded_identity(encoder) if encoder and reencode else None,
        )
        after = index.health()
    print(f"retrained {after.documents} documents in {time.perf_counter() - started:.1f} s: "
          f"generation {after.generation}, error x{before.error_ratio:.2f} -> x{after.error_ratio:.2f} of training")
    return 0


def _read_queries(path: Path) -> list[str]:
    """The non-blank lines of a ``--queries`` file."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise CliError(f"cannot read queries from {path}: {error}") from None
    queries = [line for line in lines if line]
    if not queries:
        raise CliError(f"{path} holds no queries")
    return queries
