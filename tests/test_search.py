"""Search knobs: validation, and the pruned stage's bound on the (document, centroid) pairs it reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import colbert_store as cs
from colbert_store.centroid_lists import CentroidLists
from colbert_store.search import SearchParams, _relevant_centroids


@pytest.mark.parametrize("knob", ["nprobe", "ncandidates", "nrerank", "max_pruned_pairs"])
@pytest.mark.parametrize("value", [0, -3, 1.5, "8"])
def test_bad_knob_values_raise_naming_the_knob(knob, value):
    with pytest.raises(cs.InvalidInputError, match=knob):
        SearchParams().updated(**{knob: value})


def test_the_pairs_budget_keeps_the_best_scoring_centroids_above_the_threshold_that_fit_it():
    # Centroid c is held by c + 1 documents; scores rise with the id, except centroid 5, the best.
    holders = {c: list(range(c + 1)) for c in range(8)}
    pairs = sorted((doc, c) for c, docs in holders.items() for doc in docs)
    docs = np.array([doc for doc, _ in pairs])
    offsets = np.concatenate([[0], np.cumsum(np.bincount(docs, minlength=8))])
    lists = CentroidLists.of(np.arange(1, 9), offsets, np.array([c for _, c in pairs], dtype=np.uint16))
    scores = torch.tensor([[0.1], [0.6], [0.7], [0.75], [0.8], [0.99], [0.85], [0.9]])
    assert _relevant_centroids(scores, 0.5, lists, 1000).tolist() == [1, 2, 3, 4, 5, 6, 7]
    # Best first: 5 (6 holders), 7 (8 -> 14), 6 (7 -> 21), 4 (5 -> 26), 3 (4 -> 30) ...
    assert _relevant_centroids(scores, 0.5, lists, 26).tolist() == [4, 5, 6, 7]
    assert _relevant_centroids(scores, 0.5, lists, 29).tolist() == [4, 5, 6, 7]
    assert _relevant_centroids(scores, 0.5, lists, 1).tolist() == [5]  # always at least the best one
    unlisted = CentroidLists.unlisted(lists.revisions, lists.offsets, lists.centroids)
    assert _relevant_centroids(scores, 0.5, unlisted, 26).tolist() == [4, 5, 6, 7]
