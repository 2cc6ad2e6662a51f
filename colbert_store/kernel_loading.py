"""Loading the compiled search kernels (:mod:`colbert_store.kernels`) without making a search wait.

Compiling them takes about a second the first time (numba caches the machine code on disk) and loading
that cache about half a second in each process, so they load in a background thread once a process makes
its second search call (one that searches once, as a CLI command does, never pays for them), and searches
use the torch stages until they have loaded. The two give the same scores, up to the torch stages'
half-precision rounding.
"""

from __future__ import annotations

import logging
import os
import threading
from types import ModuleType

import numpy as np

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_kernels: ModuleType | None = None
_loader: threading.Thread | None = None
_searched = False


def loaded_kernels() -> ModuleType | None:
    """:mod:`colbert_store.kernels` if loaded (ready to call without compiling anything), else ``None``."""
    return _kernels


def load_kernels() -> ModuleType:
    """:mod:`colbert_store.kernels`, compiled or loaded from numba's disk cache for the argument types
    searches pass, first if need be (thread-safe)."""
    global _kernels
    with _lock:
        if _kernels is None:
            from colbert_store import kernels

            _warm_up(kernels)
            _kernels = kernels
        return _kernels


def note_search_call() -> None:
    """Count a search call of this process: the second starts :func:`load_kernels_in_background`."""
    global _searched
    with _lock:
        again, _searched = _searched, True
    if again:
        load_kernels_in_background()


def load_kernels_in_background() -> None:
    """Start loading the kernels in a thread of their own unless they are loaded or loading (or failed
    to load: logged once, and searches keep the torch stages)."""
    global _loader
    with _lock:
        if _kernels is not None or _loader is not None:
            return
        if hasattr(os, "register_at_fork"):  # POSIX
            # A child forked while the loader holds numba's compiler lock (or ours) could never take it.
            os.register_at_fork(before=wait_for_kernels)
        # Not a daemon: an exit waits for the compiler rather than tearing it down mid-compile.
        _loader = threading.Thread(target=_load_logging_failure, name="colbert-store-kernels")
        _loader.start()


def wait_for_kernels() -> None:
    """Return once the background loading has ended (at once if it never started)."""
    loader = _loader
    if loader is not None and loader is not threading.current_thread():
        loader.join()


def _load_logging_failure() -> None:
    try:
        load_kernels()
    except Exception:
        logger.warning("could not compile the search kernels; searches use the torch stages", exc_info=True)


def _warm_up(kernels: ModuleType) -> None:
    """Call every kernel once with each argument type that searches pass, so that none compiles mid-search."""
    from colbert_store.centroid_lists import CentroidLists
    from colbert_store.codec import centroid_id_dtype

    scores = np.zeros((4, 16), np.float32)
    kernels.centroid_maxima(scores)
    kernels.document_max_sums(scores, np.ones(4, np.float32), np.array([0, 2, 4], np.int64))
    slots = np.arange(2, dtype=np.int64)
    for n_centroids in (4, 1 << 17):  # both centroid id types
        ids = np.arange(4).astype(centroid_id_dtype(n_centroids))
        lists = CentroidLists.of(slots, np.array([0, 2, 4], np.int64), ids)
        kernels.scanned_max_sums(lists.offsets, lists.centroids, slots, np.ones(4, np.bool_), scores)
        for inverted in lists.inverted_lists:
            kernels.listed_pair_maxima(inverted.offsets, inverted.slots, slots, slots, scores, np.zeros((2, 16), np.float32))
