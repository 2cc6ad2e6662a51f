"""Unpacking bytes into the small unsigned codes (1, 2 or 4 bits each, first code in the high bits) they hold."""

from __future__ import annotations

from functools import cache

import numpy as np

SUPPORTED_NBITS = (1, 2, 4)


def _check_nbits(nbits: int) -> None:
    if nbits not in SUPPORTED_NBITS:
        raise ValueError(f"nbits must be one of {SUPPORTED_NBITS}, got {nbits}")


@cache
def _unpack_table(nbits: int) -> np.ndarray:
    """``table[byte]`` holds the ``8 // nbits`` codes stored in ``byte``."""
    per_byte = 8 // nbits
    shifts = nbits * np.arange(per_byte - 1, -1, -1)
    table = (np.arange(256)[:, None] >> shifts) & ((1 << nbits) - 1)
    table = table.astype(np.uint8)
    table.setflags(write=False)
    return table


def unpack(packed: np.ndarray, nbits: int) -> np.ndarray:
    """``(n, nbytes)`` uint8 -> ``(n, nbytes * 8 // nbits)`` uint8 codes, first code in the high bits.

    >>> unpack(np.array([[198]], dtype=np.uint8), 2)
    array([[3, 0, 1, 2]], dtype=uint8)
    """
    _check_nbits(nbits)
    n, nbytes = packed.shape
    return _unpack_table(nbits)[packed].reshape(n, nbytes * (8 // nbits))
