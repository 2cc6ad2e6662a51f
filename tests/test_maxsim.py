import numpy as np

import colbert_store as cs


def brute_force_maxsim(query: np.ndarray, docs: list[np.ndarray]) -> np.ndarray:
    """Reference: a plain double loop over query tokens and document tokens."""
    scores = []
    for doc in docs:
        total = 0.0
        for q in query:
            total += max(float(np.dot(q, d)) for d in doc)
        scores.append(total)
    return np.array(scores)


def test_maxsim_matches_brute_force_reference():
    rng = np.random.default_rng(1)
    query = rng.standard_normal((7, 16)).astype(np.float32)
    docs = [rng.standard_normal((n, 16)).astype(np.float32) for n in (1, 5, 30, 2)]
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    fast = cs.maxsim(query, np.concatenate(docs), offsets)
    np.testing.assert_allclose(fast, brute_force_maxsim(query, docs), atol=1e-4)
