"""Exact late-interaction scoring: S(q, d) = sum_i max_j q_i . d_j."""

from __future__ import annotations

import numpy as np
import torch


def maxsim(query: np.ndarray, doc_vectors: np.ndarray, doc_offsets: np.ndarray) -> np.ndarray:
    """MaxSim of one query against documents stored back to back.

    Args:
        query: ``(n_query_tokens, dim)`` float array.
        doc_vectors: ``(n_tokens, dim)`` float array; document ``d`` owns rows
            ``doc_offsets[d]:doc_offsets[d + 1]``.
        doc_offsets: ``(n_docs + 1,)`` increasing integers starting at 0.

    Returns:
        ``(n_docs,)`` float32 scores. A document with no tokens scores 0.

    >>> q = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> d = np.array([[0.6, 0.8], [1.0, 0.0], [0.0, -1.0]])
    >>> [round(s, 4) for s in maxsim(q, d, np.array([0, 2, 3])).tolist()]  # 1.0 + 0.8; 0.0 - 1.0
    [1.8, -1.0]
    """
    query_t = torch.as_tensor(np.asarray(query, dtype=np.float32))
    docs_t = torch.as_tensor(np.asarray(doc_vectors, dtype=np.float32))
    offsets = np.asarray(doc_offsets, dtype=np.int64)
    return segment_max_sum(docs_t @ query_t.T, offsets).numpy()


def segment_max_sum(token_scores: torch.Tensor, doc_offsets: np.ndarray) -> torch.Tensor:
    """Sum over query tokens of the per-document max of ``token_scores`` ``(n_tokens, n_query_tokens)``."""
    n_docs = len(doc_offsets) - 1
    lengths = torch.from_numpy(np.diff(doc_offsets))
    owner = torch.repeat_interleave(torch.arange(n_docs), lengths)
    best = torch.full((n_docs, token_scores.shape[1]), -torch.inf, dtype=token_scores.dtype)
    best.scatter_reduce_(0, owner[:, None].expand_as(token_scores), token_scores, reduce="amax")
    best[lengths == 0] = 0.0
    return best.sum(dim=1)


def grouped_maxsim(
    queries: torch.Tensor, query_mask: torch.Tensor, docs: torch.Tensor, doc_mask: torch.Tensor
) -> torch.Tensor:
    """MaxSim of each query against its own group of documents, on padded batches (differentiable; training).

    Args:
        queries: ``(b, query_len, dim)`` token vectors.
        query_mask: ``(b, query_len)`` bool, the query tokens that count.
        docs: ``(b, n, doc_len, dim)``: the ``n`` documents of each query's group.
        doc_mask: ``(b, n, doc_len)`` bool, the document tokens that count (at least one per document).

    Returns:
        ``(b, n)`` scores.

    >>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])            # its 3rd token is padding
    >>> d = torch.tensor([[[[0.6, 0.8], [1.0, 0.0]], [[0.0, -1.0], [5.0, 5.0]]]])  # 2nd document: one token
    >>> grouped_maxsim(q, torch.tensor([[True, True, False]]), d, torch.tensor([[[True, True], [True, False]]]))
    tensor([[ 1.8000, -1.0000]])
    """
    token_scores = torch.einsum("bid,bntd->bnit", queries, docs)
    best = token_scores.masked_fill(~doc_mask[:, :, None, :], -torch.inf).amax(dim=-1)
    return torch.where(query_mask[:, None, :], best, 0.0).sum(dim=-1)
