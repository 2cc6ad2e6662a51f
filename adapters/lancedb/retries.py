"""LanceDB's retryable commit conflicts, retried with backoff.

Each LanceDB write is a commit of a new table version; when two processes commit at once, Lance
applies one and refuses the other with "Retryable commit conflict ... Please retry" (its merge-insert
retries some of these itself, and gives up with "Too many concurrent writers" when its own retries
run out). Nothing of the refused commit is applied, so running the operation again is safe.

A table created by several callers at once (the catalogue tables, on a store's first writes) may get
a second creation committed as an overwrite of the still empty table; a write that read the first is
then refused as incompatible with that overwrite, and running it again against the latest version is
safe too.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from colbert_store.errors import WriteConflictError

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_SECONDS = 60.0
"""How long a write keeps retrying conflicts before it gives up with :class:`WriteConflictError`."""
_FIRST_DELAY = 0.02
_LONGEST_DELAY = 1.0


_CONFLICT_MESSAGES = (
    "Retryable commit conflict",
    "Too many concurrent writers",
    "incompatible with concurrent transaction Overwrite",
)


class RetryableConflict(Exception):
    """A write found another process's commit in its way and can simply run again."""


def is_retryable(error: BaseException) -> bool:
    """Whether LanceDB refused a commit because others preempted it.

    >>> is_retryable(RuntimeError("lance error: Too many concurrent writers. Attempted 2 times"))
    True
    >>> is_retryable(RuntimeError("lance error: Invalid user input"))
    False
    """
    return isinstance(error, RetryableConflict) or any(message in str(error) for message in _CONFLICT_MESSAGES)


def retrying(operation: Callable[[], T], what: str) -> T:
    """Run ``operation``, again after a growing random delay while Lance reports a retryable conflict.

    Raises:
        WriteConflictError: conflicts went on for :data:`RETRY_SECONDS` (the operation was not applied).
    """
    deadline = time.monotonic() + RETRY_SECONDS
    delay = _FIRST_DELAY
    while True:
        try:
            return operation()
        except Exception as error:
            if not is_retryable(error):
                raise
            if time.monotonic() > deadline:
                raise WriteConflictError(
                    f"{what}: LanceDB kept refusing the commit with retryable conflicts for {RETRY_SECONDS:.0f} s; "
                    "it was not applied"
                ) from error
            logger.debug("%s: retrying a commit conflict (%s)", what, error)
            time.sleep(delay * (1 + random.random()))
            delay = min(2 * delay, _LONGEST_DELAY)
