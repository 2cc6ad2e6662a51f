"""Retraining an index in place while writers and readers go on (the protocol is in
:mod:`colbert_store.versions`): fit a new codec on stored documents, commit it, re-encode every
stored document of an older codec by conditional writes, then retire the old codec."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from colbert_store.cache import subset_batch
from colbert_store.errors import IndexChangedError, NotTrainedError
from colbert_store.fitting import HOLDOUT_TOKENS, fit_codec
from colbert_store.maintenance import TextEncoder, reencode, sample_documents
from colbert_store.storage import GENERATIONS, Store, revision_generations
from colbert_store.versions import CodecRef, CodecState, LoadedState, commit
from colbert_store.writing import write_batch

logger = logging.getLogger(__name__)

SWEEP_BATCH_DOCS = 256


@dataclass(frozen=True)
class RetrainOptions:
    """What a retrain fits the new codec with (``None``: the index setting, or the old codec's weighting)."""

    encode_texts: TextEncoder | None = None
    sample_tokens: int | None = None
    n_centroids: int | None = None
    query_moment: np.ndarray | None = None
    encoder: Mapping[str, Any] | None = None
    """Identity of the encoder behind ``encode_texts``, recorded in the settings with the new codec."""


def retrain(store: Store, name: str, reload: Callable[[], LoadedState], options: RetrainOptions) -> LoadedState:
    """Fit a new codec and move every stored document to it; returns the final state.

    A transition left unfinished by a killed retrain is finished first. Raises
    :class:`IndexChangedError` (having changed nothing) when another process commits a codec change
    between this one's reading of the manifest and its commit.
    """
    state = reload()
    if state.current is None:
        raise NotTrainedError(f"index {name!r} has no codec yet: add documents first")
    if state.manifest.codecs.retiring is not None:
        state = finish_transition(store, name, reload, state, options.encode_texts)
    old = state.current
    old_codec = state.current_codec
    assert old is not None and old_codec is not None
    settings = state.manifest.settings
    sample, held, n_tokens = sample_documents(
        lambda: store.scan(name, SWEEP_BATCH_DOCS), old_codec, old.generation,
        (options.sample_tokens or settings.sample_tokens, HOLDOUT_TOKENS), settings.seed, options.encode_texts,
    )
    weighting = old_codec.query_moment if options.query_moment is None else options.query_moment
    codec = fit_codec(settings, sample, held, n_tokens, options.n_centroids, weighting)
    new = CodecRef(old.generation + 1, uuid.uuid4().hex)
    store.write_codec(name, new.codec_id, codec.to_bytes())
    codecs = state.manifest.codecs
    recorded = None if options.encoder is None else replace(settings, encoder=dict(options.encoder))
    if commit(store, name, state, CodecState(current=new, retiring=old, retired=codecs.retired), recorded) is None:
        store.delete_codecs(name, [new.codec_id])
        raise IndexChangedError(f"index {name!r} was retrained by another process meanwhile; this retrain did nothing")
    return finish_transition(store, name, reload, reload(), options.encode_texts)


def finish_transition(
    store: Store, name: str, reload: Callable[[], LoadedState], state: LoadedState, encode_texts: TextEncoder | None
) -> LoadedState:
    """Steps 2-4 of the protocol for the retiring codec of ``state``: re-encode, close, re-encode, retire.

    Another process may be finishing the same transition (a retrain resumed twice): each step is
    taken only if the manifest is still at the step before, and otherwise followed.
    """
    codecs = state.manifest.codecs
    retiring = codecs.retiring
    if retiring is None:
        return state
    targets = {ref.generation for ref in (retiring, *codecs.retired)}
    _sweep(store, name, state, targets, encode_texts)
    if not codecs.closing:
        state = _advance(store, name, reload, state, CodecState(codecs.current, retiring, True, codecs.retired))
    _sweep(store, name, state, targets, encode_texts)
    state = _advance(store, name, reload, state, CodecState(codecs.current, retired=(retiring,)))
    store.delete_codecs(name, [ref.codec_id for ref in codecs.retired if ref != retiring])
    return state


def _advance(store: Store, name: str, reload: Callable[[], LoadedState], state: LoadedState, target: CodecState) -> LoadedState:
    """Commit ``target`` over ``state``; if another process moved the manifest first, follow it when it
    is the same transition (at this step or past it), else raise :class:`IndexChangedError`."""
    if commit(store, name, state, target) is not None:
        return reload()
    now = reload()
    codecs = now.manifest.codecs
    if codecs.current == target.current and (codecs.retiring in (target.retiring, None)):
        return now
    raise IndexChangedError(f"index {name!r} was changed by another process during its retrain; run retrain() again")


def _sweep(store: Store, name: str, state: LoadedState, targets: set[int], encode_texts: TextEncoder | None) -> None:
    """Re-encode every stored document of a ``targets`` generation with the current codec, by writes
    conditional on its revision, until a scan finds none (a concurrent write may bring one back)."""
    current, codec = state.current, state.current_codec
    assert current is not None and codec is not None
    by_generation = state.by_generation()
    wanted = np.array(sorted(generation % GENERATIONS for generation in targets), dtype=np.int64)
    while True:
        found = 0
        for batch in store.scan(name, SWEEP_BATCH_DOCS):
            generations = revision_generations(batch.revisions)
            for generation in np.intersect1d(np.unique(generations), wanted):
                stale = subset_batch(batch, np.flatnonzero(generations == generation))
                found += len(stale)
                fresh = reencode(stale, by_generation[int(generation)], codec, current.generation, encode_texts)
                write_batch(store, name, fresh, replacing=stale.revisions)
        store.settle(name)
        if not found:
            return
        logger.info("re-encoded %d documents of index %r with codec generation %d", found, name, current.generation)
