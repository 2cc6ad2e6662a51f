"""Sentences of the documents as stand-in queries, for a codec that weighs errors as queries see them."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_MIN_WORDS = 4


def sample_sentences(texts: Sequence[str], n: int = 512, seed: int = 0) -> list[str]:
    """Up to ``n`` sentences of at least four words, drawn at random from up to ``n`` of ``texts``
    (a text without such a sentence counts as one).

    >>> sample_sentences(["Short. A sentence of five words. Another one with words here!"], n=5)
    ['A sentence of five words.', 'Another one with words here!']
    """
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(texts), size=min(n, len(texts)), replace=False)
    sentences: list[str] = []
    for position in sorted(chosen.tolist()):
        text = texts[position].strip()
        found = [part for part in _SENTENCE_END.split(text) if len(part.split()) >= _MIN_WORDS]
        sentences += found or [text]
    if len(sentences) <= n:
        return sentences
    return [sentences[i] for i in sorted(rng.choice(len(sentences), size=n, replace=False))]
