"""ColBERT late-interaction encoder: texts in, one L2-normalised vector per token out.

Queries become ``[CLS] marker text [SEP]``, truncated to ``query_maxlen``; with query expansion (ColBERT
query augmentation, on for models trained with it) they are padded with ``[MASK]`` to exactly ``query_maxlen``
tokens and keep those vectors (the ``[MASK]`` tokens are attended to only when the checkpoint says so).
Documents become ``[CLS] marker text [SEP]``, truncated to ``doc_maxlen``, and lose their padding and
skiplist (punctuation) tokens. Vectors are ``last hidden state -> projection(s) -> L2 norm``.

Example::

    encoder = ColBERTEncoder.from_pretrained("colbert-ir/colbertv2.0")
    query = encoder.encode_queries(["what is late interaction?"])[0]  # (32, 128) float32: expanded
    documents = encoder.encode_documents(["ColBERT scores every query token against every document token."])
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoints import DenseLayer, LoadedCheckpoint, load_checkpoint
from .errors import InvalidInputError
from .validation import check_count

logger = logging.getLogger(__name__)

AUTO_PROGRESS_MIN_BATCHES = 4
"""With ``show_progress=None`` a progress bar is shown when a call needs more than this many batches."""
_SORT_WINDOW_BATCHES = 64
"""Texts are tokenised and length-sorted in windows of this many batches, bounding memory on big inputs."""


class ColBERTEncoder:
    """Encode queries and documents into per-token ColBERT vectors.

    Build it with :meth:`from_pretrained`; the constructor takes an already loaded checkpoint.

    Args:
        checkpoint: A loaded checkpoint (see :func:`colbert_store.checkpoints.load_checkpoint`).
        name_or_path: The name or path the checkpoint was loaded from, kept in :attr:`identity`.
        device: Torch device to run on.
        projection: Optional ``(dim_in, dim_out)`` matrix applied after the checkpoint's own projection.
        batch_size: Texts per forward pass.
        show_progress: ``True``/``False`` forces the progress bar; ``None`` shows it for big calls.
    """

    def __init__(
        self,
        checkpoint: LoadedCheckpoint,
        *,
        name_or_path: str,
        device: str | torch.device,
        projection: np.ndarray | None = None,
        batch_size: int = 32,
        show_progress: bool | None = None,
    ) -> None:
        check_count(batch_size, "batch_size")
        self._checkpoint = checkpoint
        self._device = torch.device(device)
        self._batch_size = batch_size
        self._show_progress = show_progress
        head = list(checkpoint.head)
        width = head[-1].out_features if head else int(checkpoint.model.config.hidden_size)
        self._projection_sha256: str | None = None
        if projection is not None:
            matrix = _check_projection(projection, width)
            self._projection_sha256 = hashlib.sha256(matrix.tobytes()).hexdigest()
            head.append(DenseLayer(torch.from_numpy(matrix.T.copy())))
            width = matrix.shape[1]
        self._dim = width
        self._head = torch.nn.Sequential(*head).to(self._device).eval()
        model: torch.nn.Module = checkpoint.model
        self._model = model.to(self._device).eval()
        self._network = torch.nn.ModuleDict({"model": self._model, "head": self._head})
        tokenizer = checkpoint.tokenizer
        self._pad_id = int(tokenizer.pad_token_id)
        self._mask_id = int(tokenizer.mask_token_id)
        self._skip_ids = torch.tensor(checkpoint.skiplist_ids, dtype=torch.long, device=self._device)
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        self._marker_position = 1 if probe and probe[0] in tokenizer.all_special_ids else 0
        self._name_or_path = name_or_path
        logger.info("loaded %s ColBERT encoder %s (dim %d) on %s", checkpoint.layout, name_or_path, width, self._device)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        device: str | None = None,
        *,
        projection: np.ndarray | None = None,
        query_maxlen: int | None = None,
        doc_maxlen: int | None = None,
        query_expansion: bool | None = None,
        batch_size: int = 32,
        show_progress: bool | None = None,
    ) -> ColBERTEncoder:
        """Load an encoder from a checkpoint folder or a Hugging Face Hub id.

        The layout (Stanford ColBERT, PyLate, plain transformers) is detected from the files; see
        :mod:`colbert_store.checkpoints` for the layouts and their defaults.

        Args:
            name_or_path: Checkpoint folder or Hub model id.
            device: Torch device; ``None`` picks ``"cuda"`` when available, else ``"cpu"``.
            projection: Optional ``(dim_in, dim_out)`` matrix applied to the token vectors after the
                checkpoint's own projection (for a plain model, to its hidden states), before L2 normalisation.
            query_maxlen: Query length in tokens; overrides the checkpoint's (plain default: 32).
            doc_maxlen: Maximum document length in tokens; overrides the checkpoint's
                (plain default: ``min(512, model positions)``).
            query_expansion: Pad queries with ``[MASK]`` to ``query_maxlen`` and keep those vectors; ``None``
                follows the checkpoint (on for Stanford ColBERT and, unless its config says otherwise, PyLate
                models; off for plain encoders, which never learned to use those slots).
            batch_size: Texts per forward pass.
            show_progress: Force the tqdm progress bar on or off; ``None`` shows it when a call needs more
                than :data:`AUTO_PROGRESS_MIN_BATCHES` batches.

        Returns:
            The encoder, in inference mode on ``device``.

        Raises:
            FileNotFoundError: A local path that does not exist.
            ColbertStoreError: A malformed or unsafe checkpoint, or a Hub id that cannot be fetched.
            InvalidInputError: A bad projection, length or batch size.
        """
        checkpoint = load_checkpoint(name_or_path)
        n_special = _count_specials(checkpoint)
        if query_maxlen is not None:
            checkpoint.query_maxlen = _check_length("query_maxlen", query_maxlen, n_special, checkpoint.max_positions)
        if doc_maxlen is not None:
            checkpoint.doc_maxlen = _check_length("doc_maxlen", doc_maxlen, n_special, checkpoint.max_positions)
        for name in ("query_maxlen", "doc_maxlen"):
            _check_length(name, getattr(checkpoint, name), n_special, checkpoint.max_positions)
        if query_expansion is not None:
            if not isinstance(query_expansion, bool):
                raise InvalidInputError(f"query_expansion must be True, False or None, got {query_expansion!r}")
            checkpoint.query_expansion = query_expansion
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return cls(
            checkpoint,
            name_or_path=os.fspath(name_or_path),
            device=device,
            projection=projection,
            batch_size=batch_size,
            show_progress=show_progress,
        )

    # ------------------------------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        """Width of every output vector."""
        return self._dim

    @property
    def layout(self) -> str:
        """Detected checkpoint layout: ``"stanford"``, ``"pylate"`` or ``"plain"``."""
        return self._checkpoint.layout

    @property
    def query_maxlen(self) -> int:
        """Query length in tokens: what every query is padded to with expansion, truncated to without."""
        return self._checkpoint.query_maxlen

    @property
    def query_expansion(self) -> bool:
        """Whether queries are padded with ``[MASK]`` to :attr:`query_maxlen` and keep those vectors."""
        return self._checkpoint.query_expansion

    @property
    def doc_maxlen(self) -> int:
        """Maximum number of tokens a document is truncated to (before skiplist removal)."""
        return self._checkpoint.doc_maxlen

    @property
    def device(self) -> torch.device:
        """Torch device the model runs on."""
        return self._device

    @property
    def checkpoint(self) -> LoadedCheckpoint:
        """The loaded checkpoint: tokenizer, markers, lengths and skiplist (its modules are :attr:`network`'s)."""
        return self._checkpoint

    @property
    def network(self) -> torch.nn.ModuleDict:
        """The modules that make the vectors: the transformer (``"model"``) and the projection head (``"head"``,
        the checkpoint's layers then the ``projection`` if one was given). Training updates them in place."""
        return self._network

    @property
    def identity(self) -> dict[str, Any]:
        """JSON-serialisable description of what determines the vectors; equal across loads of one model.

        Keys: ``name_or_path`` (as given), ``layout``, ``dim``, ``query_marker``, ``doc_marker``,
        ``query_maxlen``, ``doc_maxlen``, ``query_expansion``, ``attend_to_mask_tokens`` and
        ``projection_sha256`` (SHA-256 of the float32 user projection, or ``None``).
        """
        checkpoint = self._checkpoint
        return {
            "name_or_path": self._name_or_path,
            "layout": checkpoint.layout,
            "dim": self._dim,
            "query_marker": checkpoint.query_marker,
            "doc_marker": checkpoint.doc_marker,
            "query_maxlen": checkpoint.query_maxlen,
            "doc_maxlen": checkpoint.doc_maxlen,
            "query_expansion": checkpoint.query_expansion,
            "attend_to_mask_tokens": checkpoint.attend_to_mask_tokens,
            "projection_sha256": self._projection_sha256,
        }

    def __repr__(self) -> str:
        return (
            f"ColBERTEncoder({self._name_or_path!r}, layout={self.layout!r}, dim={self.dim}, "
            f"query_maxlen={self.query_maxlen}, query_expansion={self.query_expansion}, doc_maxlen={self.doc_maxlen}, "
            f"device={str(self._device)!r})"
        )

    # ------------------------------------------------------------------------------------------ encoding

    def encode_queries(self, texts: Sequence[str], *, show_progress: bool | None = None) -> list[np.ndarray]:
        """Encode queries.

        Args:
            texts: Query strings (a list or other sequence, not a single ``str``).
            show_progress: This call's progress bar on or off; ``None`` follows the encoder's setting.

        Returns:
            One float32 array per query, in input order: ``(query_maxlen, dim)`` with query expansion,
            else one row per query token (markers and special tokens included, at most ``query_maxlen``).

        Raises:
            InvalidInputError: ``texts`` is not a sequence of non-blank strings.
        """
        return self._encode(_check_texts(texts), is_query=True, show_progress=show_progress)

    def encode_documents(self, texts: Sequence[str], *, show_progress: bool | None = None) -> list[np.ndarray]:
        """Encode documents.

        Args:
            texts: Document strings (a list or other sequence, not a single ``str``).
            show_progress: This call's progress bar on or off; ``None`` follows the encoder's setting.

        Returns:
            One float32 ``(n_tokens_i, dim)`` array per document, in input order, without padding and
            skiplist (punctuation) tokens.

        Raises:
            InvalidInputError: ``texts`` is not a sequence of non-blank strings.
        """
        return self._encode(_check_texts(texts), is_query=False, show_progress=show_progress)

    def token_vectors(self, texts: Sequence[str], *, is_query: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch through the encoder's own tokenisation and forward pass, differentiable, for training.

        Runs under the caller's grad mode and :attr:`network`'s train/eval mode.

        Args:
            texts: Queries or documents, one batch.
            is_query: Encode them as queries (marker, expansion) rather than documents.

        Returns:
            ``(n, length, dim)`` L2-normalised token vectors and the ``(n, length)`` bool mask of the tokens
            :meth:`encode_queries` / :meth:`encode_documents` keep (no padding, no skiplist tokens in documents).

        Raises:
            InvalidInputError: ``texts`` is not a sequence of non-blank strings.
        """
        token_ids = self._tokenize(_check_texts(texts), is_query=is_query)
        input_ids, attention = self._collate(token_ids, is_query=is_query)
        return self._vectors(input_ids, attention), self._kept(input_ids, attention, is_query=is_query)

    def _encode(self, texts: list[str], *, is_query: bool, show_progress: bool | None) -> list[np.ndarray]:
        """Tokenise in windows, run length-sorted batches, and return outputs in input order."""
        outputs: list[np.ndarray] = [np.empty((0, self._dim), np.float32)] * len(texts)
        n_batches = -(-len(texts) // self._batch_size)
        if show_progress is None:
            show_progress = self._show_progress
        show = show_progress if show_progress is not None else n_batches > AUTO_PROGRESS_MIN_BATCHES
        window = self._batch_size * _SORT_WINDOW_BATCHES
        kind = "queries" if is_query else "documents"
        with (
            tqdm(total=len(texts), desc=f"Encoding {kind}", unit="text", disable=not show) as bar,
            torch.inference_mode(),
        ):
            for start in range(0, len(texts), window):
                token_ids = self._tokenize(texts[start : start + window], is_query=is_query)
                order = np.argsort([-len(ids) for ids in token_ids], kind="stable")
                for first in range(0, len(order), self._batch_size):
                    rows = order[first : first + self._batch_size]
                    vectors = self._encode_batch([token_ids[i] for i in rows], is_query=is_query)
                    for row, array in zip(rows, vectors, strict=True):
                        outputs[start + int(row)] = array
                    bar.update(len(rows))
        return outputs

    def _tokenize(self, texts: list[str], *, is_query: bool) -> list[list[int]]:
        """Token ids with the tokenizer's special tokens, leaving room for the marker."""
        checkpoint = self._checkpoint
        marker = checkpoint.query_marker_id if is_query else checkpoint.doc_marker_id
        maxlen = checkpoint.query_maxlen if is_query else checkpoint.doc_maxlen
        encoded = checkpoint.tokenizer(
            texts,
            add_special_tokens=True,
            truncation=True,
            max_length=maxlen - (marker is not None),
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return encoded["input_ids"]

    def _encode_batch(self, token_ids: list[list[int]], *, is_query: bool) -> list[np.ndarray]:
        """Run one padded batch through the model and head; split the kept rows per text."""
        input_ids, attention = self._collate(token_ids, is_query=is_query)
        vectors = self._vectors(input_ids, attention)
        if is_query and self._checkpoint.query_expansion:
            return list(vectors.cpu().numpy())
        keep = self._kept(input_ids, attention, is_query=is_query)
        flat = vectors[keep].cpu().numpy()
        return np.split(flat, np.cumsum(keep.sum(dim=1).cpu().numpy())[:-1])

    def _vectors(self, input_ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """``last hidden state -> head -> L2 norm`` for a collated batch: ``(n, length, dim)``."""
        hidden = self._model(input_ids=input_ids, attention_mask=attention).last_hidden_state
        return F.normalize(self._head(hidden.float()), p=2, dim=-1)

    def _kept(self, input_ids: torch.Tensor, attention: torch.Tensor, *, is_query: bool) -> torch.Tensor:
        """Which positions of a collated batch have an output vector: every one of an expanded query, else the
        attended ones, minus a document's skiplist tokens."""
        if is_query and self._checkpoint.query_expansion:
            return torch.ones_like(attention, dtype=torch.bool)
        return attention.bool() if is_query else attention.bool() & ~torch.isin(input_ids, self._skip_ids)

    def _collate(self, token_ids: list[list[int]], *, is_query: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad (expanded queries: with ``[MASK]`` to ``query_maxlen``), insert the marker, build the attention mask."""
        checkpoint = self._checkpoint
        marker = checkpoint.query_marker_id if is_query else checkpoint.doc_marker_id
        expand = is_query and checkpoint.query_expansion
        width = checkpoint.query_maxlen - (marker is not None) if expand else max(len(ids) for ids in token_ids)
        ids = np.full((len(token_ids), width), self._mask_id if expand else self._pad_id, dtype=np.int64)
        attention = np.zeros_like(ids)
        for row, row_ids in enumerate(token_ids):
            ids[row, : len(row_ids)] = row_ids
            attention[row, : len(row_ids)] = 1
        if marker is not None:
            ids = np.insert(ids, self._marker_position, marker, axis=1)
            attention = np.insert(attention, self._marker_position, 1, axis=1)
        if expand and checkpoint.attend_to_mask_tokens:
            attention[:] = 1
        return torch.from_numpy(ids).to(self._device), torch.from_numpy(attention).to(self._device)


# ---------------------------------------------------------------------------------------------- validation


def _check_texts(texts: Sequence[str]) -> list[str]:
    """Return ``texts`` as a list, or raise InvalidInputError naming the first bad element."""
    if isinstance(texts, (str, bytes)):
        raise InvalidInputError(
            f"texts must be a sequence of strings, not a single {type(texts).__name__}; wrap it in a list: [text]"
        )
    if not isinstance(texts, Sequence):
        raise InvalidInputError(
            f"texts must be a list or other sequence of strings, got {type(texts).__name__}; pass list(texts)"
        )
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"texts[{position}] is {type(text).__name__}, expected str")
        if not text.strip():
            raise InvalidInputError(f"texts[{position}] is empty or whitespace-only")
    return list(texts)


def _check_projection(projection: np.ndarray, width: int) -> np.ndarray:
    """Validate a ``(width, dim)`` projection and return it as contiguous float32."""
    try:
        matrix = np.ascontiguousarray(projection, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"projection must be a numeric (hidden, dim) array: {exc}") from exc
    if matrix.ndim != 2 or matrix.shape[0] != width or matrix.shape[1] < 1:
        raise InvalidInputError(
            f"projection must have shape ({width}, dim) to match the encoder's {width}-d output, got {matrix.shape}"
        )
    if not np.isfinite(matrix).all():
        raise InvalidInputError("projection contains NaN or infinite values")
    return matrix


def _count_specials(checkpoint: LoadedCheckpoint) -> int:
    """Tokens a one-token text gets around it (special tokens and marker)."""
    probe = checkpoint.tokenizer("a", add_special_tokens=True)["input_ids"]
    return len(probe) - 1 + (checkpoint.query_marker_id is not None or checkpoint.doc_marker_id is not None)


def _check_length(name: str, value: int, n_special: int, max_positions: int) -> int:
    """Validate a ``query_maxlen``/``doc_maxlen``: room for one text token, within the model's positions."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(f"{name} must be an int, got {type(value).__name__}")
    if not n_special < value <= max_positions:
        raise InvalidInputError(
            f"{name}={value} is out of range: it must exceed the {n_special} special/marker tokens and be at "
            f"most the model's {max_positions} positions"
        )
    return int(value)
