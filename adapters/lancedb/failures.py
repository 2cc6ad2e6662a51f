"""LanceDB's storage failures as colbert-store errors: an object store that is missing, refuses the
credentials or does not answer raises :class:`~colbert_store.errors.StoreUnavailableError` naming the
problem, instead of a long engine message."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from colbert_store.errors import StoreUnavailableError

F = TypeVar("F", bound=Callable[..., Any])

_REASONS = (
    (("NoSuchBucket",), "the bucket does not exist"),
    (("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "status: 403", "ExpiredToken"),
     "the credentials were refused (check the storage_options or the AWS_* variables)"),
    (("RetryError", "Connection refused", "error sending request", "dns error", "timed out", "Timeout"),
     "the object store did not answer"),
)
_DETAIL_CHARACTERS = 300


def unavailable(error: BaseException, uri: str) -> StoreUnavailableError | None:
    """The error to raise for an engine error caused by the storage, or ``None`` for any other error."""
    text = str(error)
    for markers, reason in _REASONS:
        if any(marker in text for marker in markers):
            return StoreUnavailableError(f"LanceDB at {uri!r}: {reason} ({text[:_DETAIL_CHARACTERS]})")
    return None


def translated(method: F) -> F:
    """Decorate a store method (or generator method) so storage failures raise :class:`StoreUnavailableError`."""

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = method(self, *args, **kwargs)
        except Exception as error:
            _raise_translated(error, self.uri)
        return _translated_items(result, self.uri) if isinstance(result, Iterator) else result

    return call  # type: ignore[return-value]


def _translated_items(items: Iterator[Any], uri: str) -> Iterator[Any]:
    try:
        yield from items
    except Exception as error:
        _raise_translated(error, uri)


def _raise_translated(error: Exception, uri: str) -> None:
    translation = unavailable(error, uri)
    if translation is None:
        raise error
    raise translation from error
