"""Exception hierarchy: every error raised on purpose by colbert-store derives from one base."""

from __future__ import annotations


class ColbertStoreError(Exception):
    """Base class of every error colbert-store raises on purpose."""


class InvalidInputError(ColbertStoreError, ValueError):
    """Arguments that cannot be indexed or searched: wrong shapes, types, lengths or values."""


class FilterError(InvalidInputError):
    """A metadata filter that is malformed, uses an unknown operator or a wrong value type."""


class IndexExistsError(ColbertStoreError):
    """``Index.create`` was asked for a name the store already holds."""

    def __init__(self, name: str) -> None:
        super().__init__(f"index {name!r} already exists; use Index.open to reuse it")
        self.name = name


class IndexNotFoundError(ColbertStoreError, KeyError):
    """``Index.open`` (or another call) named an index the store does not hold."""

    def __init__(self, name: str) -> None:
        super().__init__(f"index {name!r} does not exist; use Index.create to make it")
        self.name = name

    def __str__(self) -> str:
        return str(self.args[0])


class IncompatibleIndexError(ColbertStoreError):
    """The stored index was written by an incompatible format version or another encoder."""


class IndexChangedError(ColbertStoreError):
    """Another process changed the index in a way that stops this call (e.g. retrained it at the same
    time); the call did nothing."""


class StoreUnavailableError(ColbertStoreError, OSError):
    """The store's storage cannot be reached or refuses access (a missing bucket, refused credentials,
    a server that does not answer); a write that raises it was not applied."""


class WriteConflictError(ColbertStoreError):
    """The store kept refusing a write with a retryable conflict until the retry budget ran out; the
    write was not applied (documents already written by earlier batches of the same call are listed
    in ``written_ids``)."""

    def __init__(self, message: str, written_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.written_ids = written_ids


class NotTrainedError(ColbertStoreError):
    """An operation needs the codec, but the index has not been trained yet."""


class MissingDependencyError(ColbertStoreError, ImportError):
    """An optional integration was used without its extra installed."""


class LexicalSearchUnavailableError(ColbertStoreError):
    """A hybrid search asked for the lexical leg where the index cannot serve it: its documents were
    stored without text, or its store holds no full-text index for them. ``reason`` says which."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"index {name!r} cannot run a full-text search: {reason}")
        self.name = name
        self.reason = reason
