"""The revision-keyed document cache and its centroid -> documents inverted lists."""

import numpy as np
import pytest

from colbert_store.cache import CachedDocuments, CacheInfo, DocumentCache, cached_bytes, subset_batch
from colbert_store.centroid_lists import CentroidLists, InvertedList, range_positions
from colbert_store.codec import ResidualCodec
from colbert_store.storage import DocumentBatch


def random_batch(n_docs: int, seed: int, n_centroids: int = 50, first_revision: int = 1, width: int = 4) -> DocumentBatch:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 30, n_docs)  # empty documents included
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return DocumentBatch(
        ids=[f"d{first_revision + i}" for i in range(n_docs)],
        revisions=np.arange(first_revision, first_revision + n_docs, dtype=np.int64),
        token_offsets=offsets,
        centroid_ids=rng.integers(0, n_centroids, int(offsets[-1])).astype(np.uint16),
        residuals=rng.integers(0, 256, (int(offsets[-1]), width), dtype=np.uint8),
    )


@pytest.mark.parametrize("seed", range(4))
def test_pairs_among_lists_each_chosen_document_once_per_centroid(seed):
    batch = random_batch(40, seed)
    offsets, centroids = batch.distinct_centroids()
    inverted = (InvertedList.build(offsets, centroids, 0, 17), InvertedList.build(offsets, centroids, 17, 40))
    lists = CentroidLists(batch.revisions, offsets, centroids, inverted)
    rng = np.random.default_rng(100 + seed)
    for _ in range(5):
        probes = np.unique(rng.integers(0, 60, 8))  # ids past the largest stored one included
        chosen = rng.permutation(len(batch))[: rng.integers(1, len(batch))]  # a subset, out of order
        rows, centroids = lists.pairs_among(probes, chosen)
        found = list(zip(chosen[rows].tolist(), centroids.tolist()))
        assert len(found) == len(set(found))
        assert set(found) == {(slot, c) for slot, c in holders(batch, probes) if slot in chosen}
    all_slots = np.arange(len(batch))
    assert [a.tolist() for a in lists.pairs_among(np.array([], dtype=np.int64), all_slots)] == [[], []]
    assert [a.tolist() for a in lists.pairs_among(np.arange(60), all_slots[:0])] == [[], []]


@pytest.mark.parametrize("seed", range(4))
def test_range_positions_concatenates_ranges_including_empty_ones(seed):
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, 100, 30)
    lengths = rng.integers(0, 4, 30) * (rng.random(30) < 0.7)  # many empty, at the ends too
    expected = [p for start, length in zip(starts, lengths) for p in range(start, start + length)]
    assert range_positions(starts, lengths).tolist() == expected
    assert range_positions(starts[:0], lengths[:0]).tolist() == []
    assert range_positions(starts, np.zeros_like(lengths)).tolist() == []


def holders(batch: DocumentBatch, centroids: np.ndarray) -> set[tuple[int, int]]:
    """Brute force: every (slot, centroid) with the centroid among the document's tokens."""
    return {
        (slot, int(c))
        for slot in range(len(batch))
        for c in set(batch.centroid_ids[batch.token_offsets[slot] : batch.token_offsets[slot + 1]].tolist())
        if c in centroids
    }


def test_many_inserts_keep_few_inverted_lists_covering_every_document_and_old_snapshots_intact():
    cache = DocumentCache()
    batches = [random_batch(int(n), seed, first_revision=1000 * seed + 1) for seed, n in enumerate([5, 3, 40, 1, 7] * 8)]
    snapshots = []
    for batch in batches:
        cache.insert(batch)
        snapshots.append((cache.lookup(batch.revisions)[0], batch))
    docs, slots = cache.lookup(np.concatenate([b.revisions for b in batches]))
    assert (slots >= 0).all() and len(docs.batch) == sum(len(b) for b in batches)
    assert len(docs.lists.inverted_lists) <= np.log2(len(docs.batch.centroid_ids)) + 1
    spans = [(inverted.first_slot, inverted.end_slot) for inverted in docs.lists.inverted_lists]
    assert spans[0][0] == 0 and spans[-1][1] == len(docs.batch)
    assert all(end == start for (_, end), (start, _) in zip(spans, spans[1:]))
    probes = np.arange(0, 60, 3)
    found = list(zip(*(a.tolist() for a in docs.lists.pairs_among(probes, np.arange(len(docs.batch))))))
    assert len(found) == len(set(found)) and set(found) == holders(docs.batch, probes)
    for snapshot, batch in snapshots:  # each search keeps reading the snapshot it started with
        rows = snapshot.slots(batch.revisions)
        positions = np.concatenate([np.arange(*snapshot.batch.token_offsets[r : r + 2]) for r in rows])
        assert snapshot.batch.centroid_ids[positions].tolist() == batch.centroid_ids.tolist()
        assert snapshot.batch.residuals[positions].tolist() == batch.residuals.tolist()
        assert [snapshot.batch.ids[r] for r in rows] == batch.ids


def test_distinct_centroids_of_each_document_survive_inserts_and_follow_the_slots_asked_for():
    cache = DocumentCache()
    for seed, n in enumerate([6, 1, 12, 3]):
        cache.insert(random_batch(n, seed, first_revision=100 * seed + 1))
    docs, _ = cache.lookup(np.array([1]))
    batch = docs.batch
    slots = np.random.default_rng(0).permutation(len(batch))[:15]  # a subset, out of order
    centroids, owner = docs.lists.distinct_centroids_of(slots)
    for row, slot in enumerate(slots):
        tokens = batch.centroid_ids[batch.token_offsets[slot] : batch.token_offsets[slot + 1]]
        assert centroids[owner == row].tolist() == sorted(set(tokens.tolist()))
    assert centroids.dtype == batch.centroid_ids.dtype


def test_cache_inserts_only_new_revisions_and_drops_old_entries_over_budget():
    first, second = random_batch(10, 1), random_batch(10, 2, first_revision=11)
    cache = DocumentCache()
    cache.insert(first)
    cache.insert(first)  # already cached: nothing added
    docs, slots = cache.lookup(np.array([3, 11, 10]))
    assert len(docs.batch) == 10
    assert slots[1] == -1 and docs.batch.revisions[slots[[0, 2]]].tolist() == [3, 10]
    cache.insert(second)
    docs, slots = cache.lookup(second.revisions)
    assert (slots >= 0).all() and len(docs.batch) == 20
    held, _ = docs.lists.pairs_among(np.arange(50), np.arange(20))  # the inverted lists cover the new documents
    assert set(docs.batch.revisions[held].tolist()) == {
        int(r) for r, n in zip(docs.batch.revisions, np.diff(docs.batch.token_offsets)) if n
    }

    small = DocumentCache(max_bytes=CachedDocuments.of(first).nbytes)
    small.insert(first)
    small.insert(random_batch(12, 2, first_revision=11))  # more than the budget alone: everything else is dropped
    docs, slots = small.lookup(np.arange(1, 23))
    assert (slots[:10] == -1).all() and (slots[10:] >= 0).all()


def even_batch(n_docs: int, first_revision: int, tokens: int = 10) -> DocumentBatch:
    """Documents of ``tokens`` tokens each, every token's codes telling its document and position apart."""
    revisions = np.arange(first_revision, first_revision + n_docs, dtype=np.int64)
    token_revisions = np.repeat(revisions, tokens)
    return DocumentBatch(
        ids=[f"d{r}" for r in revisions],
        revisions=revisions,
        token_offsets=np.arange(0, (n_docs + 1) * tokens, tokens, dtype=np.int64),
        centroid_ids=(token_revisions % 50).astype(np.uint16),
        residuals=np.stack([token_revisions % 256, np.tile(np.arange(tokens), n_docs)] * 2, axis=1).astype(np.uint8),
    )


def test_a_full_cache_keeps_the_documents_searches_found_in_it_since_it_was_last_full_up_to_half_its_budget():
    first = even_batch(10, first_revision=1)
    cache = DocumentCache(max_bytes=cached_bytes(first))  # room for 10 documents; half of it for 5
    cache.insert(first)
    cache.lookup(np.array([3, 7, 2]), searched=True)
    cache.lookup(np.array([6, 4, 8]))  # looked up, not asked for by a search
    cache.lookup(np.array([5, 7, 99]), searched=True)  # 99 is not cached
    cache.lookup(np.array([9, 1]), searched=True)  # the hits, the most recent first: 1 and 9, 5 and 7, 2 and 3
    epoch = cache.epoch
    assert (cache.info().hits, cache.info().misses, cache.info().evictions) == (7, 1, 0)
    cache.insert(even_batch(2, first_revision=11))
    docs, slots = cache.lookup(np.arange(1, 13))
    assert set(docs.batch.revisions[slots[slots >= 0]].tolist()) == {1, 9, 5, 7, 2, 11, 12}
    assert cache.epoch == epoch + 1  # documents were dropped
    kept = subset_batch(first, np.array([0, 1, 4, 6, 8]))
    again = subset_batch(docs.batch, slots[[0, 1, 4, 6, 8]])
    for field in ("token_offsets", "centroid_ids", "residuals"):
        np.testing.assert_array_equal(getattr(again, field), getattr(kept, field))
    assert again.ids == kept.ids
    held, _ = docs.lists.pairs_among(np.arange(50), np.arange(len(docs.batch)))  # lists cover the kept documents
    assert set(docs.batch.revisions[held].tolist()) == {1, 2, 5, 7, 9, 11, 12}

    cache.lookup(np.array([12, 2]), searched=True)
    cache.insert(even_batch(4, first_revision=21))  # 7 + 4 over 10: only the hits since the last eviction stay
    docs, slots = cache.lookup(np.arange(1, 25))
    assert set(docs.batch.revisions[slots[slots >= 0]].tolist()) == {2, 12, 21, 22, 23, 24}
    assert cache.info() == CacheInfo(6, cached_bytes(docs.batch), cached_bytes(first), 9, 1, 2)


def test_remembered_inverse_norms_are_computed_once_and_shared_by_later_snapshots():
    vectors = np.random.default_rng(0).normal(size=(1000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    codec = ResidualCodec.fit(vectors[24:], nbits=2, n_centroids=16)
    lengths = np.array([7, 0, 12, 5])
    ids, packed = codec.compress(vectors[: lengths.sum()])
    batch = DocumentBatch(
        ids=["a", "b", "c", "d"],
        revisions=np.arange(1, 5, dtype=np.int64),
        token_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        centroid_ids=ids,
        residuals=packed,
    )
    cache = DocumentCache()
    cache.insert(batch)
    docs, _ = cache.lookup(batch.revisions)
    asked = np.arange(7, 19)  # document "c"
    np.testing.assert_allclose(docs.inverse_norms(asked, codec), codec.inverse_norms(ids[asked], packed[asked]), rtol=1e-6)
    known = ~np.isnan(docs.known_inverse_norms)
    assert known[asked].all() and known.sum() == len(asked)

    cache.insert(random_batch(3, 5, n_centroids=16, first_revision=10, width=packed.shape[1]))
    later, _ = cache.lookup(batch.revisions)
    assert (~np.isnan(later.known_inverse_norms[: len(ids)]) == known).all()  # remembered across snapshots
    assert np.isnan(later.known_inverse_norms[len(ids) :]).all()


def test_fits_tells_whether_a_batch_needs_no_eviction():
    first, second = random_batch(10, 1), random_batch(10, 2, first_revision=11)
    cache = DocumentCache(max_bytes=cached_bytes(first) + cached_bytes(second) - 1)
    assert cache.fits(first)
    cache.insert(first)
    assert not cache.fits(second)
    cache.insert(second)  # drops some of the first batch
    assert (cache.lookup(first.revisions)[1] == -1).any() and (cache.lookup(second.revisions)[1] >= 0).all()
