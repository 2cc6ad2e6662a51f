"""BM25 document weights as sparse vectors, for stores that rank text by sparse dot products with an
IDF modifier (Qdrant and Qdrant Edge).

Qdrant's ``Modifier.IDF`` multiplies each query term by the term's inverse document frequency over the
collection at query time, so a document vector only needs BM25's term-frequency part::

    weight(t, d) = tf * (K1 + 1) / (tf + K1 * (1 - B + B * len(d) / AVG_LEN))

``AVG_LEN`` is fixed rather than the corpus average, so a document's vector never changes when other
documents are written. A query vector holds weight 1 for each distinct term; the dot product is then
the BM25 score. Terms are ids: the CRC-32 of the term's UTF-8 bytes (stable across processes and
versions, unlike Python's ``hash``); two terms sharing an id are counted as one.

Text is lowercased, accents are dropped, tokens are runs of letters and digits (at most 40 characters),
a short list of English stop words is dropped, and plural endings are removed (Harman's S-stemmer).
qdrant-client offers BM25 only through fastembed (model files downloaded at run time) or a server's
inference; doing it here keeps a Qdrant server, local mode and Qdrant Edge on the same vectors, so an
index moves between them (:func:`colbert_store.copy_index`) and ranks the same. Changing any of these
rules changes the vectors: an index written before must be copied to be re-weighted.
"""

from __future__ import annotations

import re
import unicodedata
import zlib

import numpy as np

K1 = 1.2
B = 0.75
AVG_LEN = 256.0
MAX_TOKEN_CHARS = 40

_TOKEN = re.compile(r"[^\W_]+")
_MARKS = re.compile(r"[\u0300-\u036f]")
STOP_WORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not",
    "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was",
    "will", "with",
})


def terms(text: str) -> list[str]:
    """The BM25 terms of ``text``, in order.

    >>> terms("The cells' Proteins are binding to receptors, naïvely.")
    ['cell', 'protein', 'binding', 'receptor', 'naively']
    """
    folded = _MARKS.sub("", unicodedata.normalize("NFKD", text.lower()))
    return [_stem(token) for token in _TOKEN.findall(folded) if len(token) <= MAX_TOKEN_CHARS and token not in STOP_WORDS]


def term_ids(words: list[str]) -> np.ndarray:
    """The uint32 id of each term (CRC-32 of its UTF-8 bytes)."""
    return np.fromiter((zlib.crc32(word.encode()) for word in words), np.uint32, len(words))


def document_vector(text: str) -> tuple[np.ndarray, np.ndarray]:
    """A document's BM25 term weights: ascending uint32 term ids and their float32 weights.

    >>> ids, weights = document_vector("cells cell protein")  # 3 terms: tf 2 and tf 1
    >>> sorted(weights.astype(float).round(3).tolist())
    [1.679, 1.904]
    """
    ids = term_ids(terms(text))
    unique, counts = np.unique(ids, return_counts=True)
    norm = K1 * (1 - B + B * len(ids) / AVG_LEN)
    return unique, (counts * (K1 + 1) / (counts + norm)).astype(np.float32)


def query_vector(text: str) -> tuple[np.ndarray, np.ndarray]:
    """A query's terms: ascending uint32 term ids, each with weight 1."""
    unique = np.unique(term_ids(terms(text)))
    return unique, np.ones(len(unique), np.float32)


def _stem(token: str) -> str:
    """Harman's S-stemmer: plural endings off (``-ies`` to ``-y``, ``-es`` to ``-e``, ``-s`` off)."""
    if len(token) > 3 and token.endswith("ies") and not token.endswith(("eies", "aies")):
        return token[:-3] + "y"
    if len(token) > 2 and token.endswith("es") and not token.endswith(("aes", "ees", "oes")):
        return token[:-1]
    if len(token) > 1 and token.endswith("s") and not token.endswith(("us", "ss")):
        return token[:-1]
    return token
