"""Residual codec: sizes, bit packing and reconstruction quality on real MiniLM token vectors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import colbert_store as cs
from colbert_store.bitpack import pack, unpack
from colbert_store.codec import centroid_id_dtype, default_centroid_count


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_pack_unpack_round_trip_and_size(nbits):
    rng = np.random.default_rng(nbits)
    codes = rng.integers(0, 1 << nbits, (50, 128)).astype(np.uint8)
    packed = pack(codes, nbits)
    assert packed.shape == (50, 128 * nbits // 8)
    np.testing.assert_array_equal(unpack(packed, nbits), codes)


def test_centroid_ids_use_the_narrowest_type():
    assert centroid_id_dtype(65_536) == np.uint16
    assert centroid_id_dtype(65_537) == np.uint32
    assert default_centroid_count(1_200_000) == 16_384
    assert default_centroid_count(1) == 16


@pytest.fixture(scope="module")
def real_tokens(minilm_token_vectors) -> tuple[np.ndarray, np.ndarray]:
    """Real token vectors, split into a training half and a held-out half."""
    vectors = minilm_token_vectors
    return vectors[::2], vectors[1::2]


@pytest.mark.parametrize(("nbits", "min_cosine"), [(1, 0.85), (2, 0.95), (4, 0.98)])
def test_reconstruction_quality_on_real_token_vectors(real_tokens, nbits, min_cosine):
    train, held_out = real_tokens
    codec = cs.ResidualCodec.fit(train, nbits=nbits, n_centroids=512)
    ids, packed = codec.compress(held_out)
    assert packed.shape == (len(held_out), held_out.shape[1] * nbits // 8)
    assert packed.dtype == np.uint8 and ids.dtype == np.uint16
    restored = codec.decompress(ids, packed)
    np.testing.assert_allclose(np.linalg.norm(restored, axis=1), 1.0, atol=1e-5)
    cosine = float((restored * held_out).sum(axis=1).mean())
    assert cosine >= min_cosine, f"mean cosine {cosine:.4f} at {nbits} bits"


def test_more_bits_reconstruct_better(real_tokens):
    train, held_out = real_tokens
    errors = []
    for nbits in (1, 2, 4):
        codec = cs.ResidualCodec.fit(train, nbits=nbits, n_centroids=256)
        restored = codec.decompress(*codec.compress(held_out))
        errors.append(float(np.square(restored - held_out).sum(axis=1).mean()))
    assert errors[0] > errors[1] > errors[2]


def test_serialisation_round_trip_without_pickle(real_tokens):
    train, held_out = real_tokens
    codec = cs.ResidualCodec.fit(train[:4000], nbits=2, n_centroids=64)
    payload = codec.to_bytes()
    assert len(payload) < codec.centroids.nbytes  # the fitted centroids travel as float16
    restored = cs.ResidualCodec.from_bytes(payload)
    for name in ("centroids", "cutoffs", "weights"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(codec, name))
    np.testing.assert_array_equal(restored.compress(held_out[:100])[1], codec.compress(held_out[:100])[1])
    unrounded = replace(codec, centroids=codec.centroids + np.float32(1e-5))  # e.g. an older index's codec
    np.testing.assert_array_equal(cs.ResidualCodec.from_bytes(unrounded.to_bytes()).centroids, unrounded.centroids)
