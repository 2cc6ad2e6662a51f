"""Bit-packing of small unsigned codes (1, 2 or 4 bits each) into bytes, with lookup-table unpacking."""

from __future__ import annotations

from functools import cache

import numpy as np

SUPPORTED_NBITS = (1, 2, 4)


def _check_nbits(nbits: int) -> None:
    if nbits not in SUPPORTED_NBITS:
        raise ValueError(f"nbits must be one of {SUPPORTED_NBITS}, got {nbits}")


def pack(codes: np.ndarray, nbits: int) -> np.ndarray:
    """Pack ``(n, dim)`` codes in ``[0, 2**nbits)`` into ``(n, dim * nbits // 8)`` uint8, first code in the high bits.

    >>> pack(np.array([[3, 0, 1, 2]], dtype=np.uint8), 2)
    array([[198]], dtype=uint8)
    """
    _check_nbits(nbits)
    n, dim = codes.shape
    per_byte = 8 // nbits
    if dim % per_byte:
        raise ValueError(f"dim={dim} is not a multiple of {per_byte} codes per byte")
    grouped = codes.astype(np.uint8, copy=False).reshape(n, dim // per_byte, per_byte)
    shifts = (nbits * np.arange(per_byte - 1, -1, -1)).astype(np.uint8)
    return np.bitwise_or.reduce(grouped << shifts, axis=2)


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
    """Inverse of :func:`pack`: ``(n, nbytes)`` uint8 -> ``(n, nbytes * 8 // nbits)`` uint8 codes.

    >>> unpack(np.array([[198]], dtype=np.uint8), 2)
    array([[3, 0, 1, 2]], dtype=uint8)
    """
    _check_nbits(nbits)
    n, nbytes = packed.shape
    return _unpack_table(nbits)[packed].reshape(n, nbytes * (8 // nbits))
