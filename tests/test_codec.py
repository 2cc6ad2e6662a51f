"""Residual codec: sizes, bit packing and reconstruction quality on real MiniLM token vectors."""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch

import colbert_store as cs
from colbert_store import codec as codec_module
from colbert_store.bitpack import unpack
from colbert_store.codec import centroid_id_dtype, default_centroid_count, query_second_moment


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_unpack_reads_codes_first_in_the_high_bits(nbits):
    per_byte = 8 // nbits
    rng = np.random.default_rng(nbits)
    codes = rng.integers(0, 1 << nbits, (50, 128)).astype(np.int64)
    shifts = nbits * np.arange(per_byte - 1, -1, -1)
    packed = (codes.reshape(50, -1, per_byte) << shifts).sum(axis=2).astype(np.uint8)
    assert packed.shape == (50, 128 * nbits // 8)
    np.testing.assert_array_equal(unpack(packed, nbits), codes)


def test_centroid_ids_use_the_narrowest_type():
    assert centroid_id_dtype(65_536) == np.uint16
    assert centroid_id_dtype(65_537) == np.uint32
    assert default_centroid_count(1) == 16


def test_centroid_count_is_the_power_of_two_at_or_below_sixteen_root_n():
    assert default_centroid_count(1_200_000) == 16_384  # 16 * sqrt(n) = 17,527
    assert default_centroid_count(740_000) == 8_192  # 16 * sqrt(n) = 13,764: rounds down, as ColBERTv2 does
    assert default_centroid_count(1_048_576) == 16_384  # exactly a power of two


@pytest.fixture(scope="module")
def real_tokens(minilm_token_vectors) -> tuple[np.ndarray, np.ndarray]:
    """Real token vectors, split into two thirds for training (enough for learned codebooks) and a held-out third."""
    vectors = minilm_token_vectors
    return np.delete(vectors, np.s_[::3], axis=0), vectors[::3]


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
    with np.load(io.BytesIO(payload), allow_pickle=False) as arrays:
        assert arrays["centroids"].dtype == np.float16  # the fitted centroids travel as float16
    assert {entry.compress_type for entry in zipfile.ZipFile(io.BytesIO(payload)).infolist()} == {zipfile.ZIP_DEFLATED}
    restored = cs.ResidualCodec.from_bytes(payload)
    for name in ("centroids", "codebooks", "rotation"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(codec, name))
    np.testing.assert_array_equal(restored.compress(held_out[:100])[1], codec.compress(held_out[:100])[1])
    unrounded = replace(codec, centroids=codec.centroids + np.float32(1e-5))  # e.g. an older index's codec
    np.testing.assert_array_equal(cs.ResidualCodec.from_bytes(unrounded.to_bytes()).centroids, unrounded.centroids)


def test_rotation_is_orthogonal_and_decoding_keeps_query_dot_products(real_tokens):
    train, held_out = real_tokens
    codec = cs.ResidualCodec.fit(train, nbits=2, n_centroids=64)
    assert not np.allclose(codec.rotation, np.eye(codec.dim))
    np.testing.assert_allclose(codec.rotation @ codec.rotation.T, np.eye(codec.dim), atol=1e-5)
    ids, packed = codec.compress(held_out[:50])
    query = held_out[50:60]
    in_codec_space = codec.decompress_tensor(ids, packed).numpy() @ codec.rotate(query).T
    np.testing.assert_allclose(in_codec_space, codec.decompress(ids, packed) @ query.T, atol=1e-5)


def query_like(vectors: np.ndarray, seed: int) -> np.ndarray:
    """Unit vectors that, like query tokens, put most of their energy in a few shared directions."""
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.standard_normal((vectors.shape[1], 4)))[0].T
    mixed = 3 * rng.standard_normal((len(vectors), 4)) @ directions + vectors
    return (mixed / np.linalg.norm(mixed, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(("nbits", "weighted"), [(1, False), (2, False), (4, False), (2, True)])
def test_lookup_table_scores_equal_dot_products_with_decoded_tokens(real_tokens, nbits, weighted):
    train, held_out = real_tokens
    moment = query_second_moment(query_like(held_out[:2000], seed=0)) if weighted else None
    codec = cs.ResidualCodec.fit(train, nbits=nbits, n_centroids=64, query_moment=moment)
    assert (codec.residual_basis is not None) == weighted
    ids, packed = codec.compress(held_out[:300])
    query = torch.from_numpy(codec.rotate(held_out[300:332]))
    tables = codec.query_tables(query)
    ids_t, packed_t = torch.from_numpy(ids.astype(np.int32)), torch.from_numpy(packed)
    dots = codec.token_dots(ids_t, packed_t, tables, codec.centroids_tensor @ query.T)
    scores = dots * torch.from_numpy(codec.inverse_norms(ids, packed))[:, None]
    np.testing.assert_allclose(scores.numpy(), (codec.decompress_tensor(ids, packed) @ query.T).numpy(), atol=1e-5)


def test_query_weighted_codec_keeps_query_dot_products_more_accurate(real_tokens):
    train, held_out = real_tokens
    queries = query_like(held_out[:3000], seed=1)
    plain = cs.ResidualCodec.fit(train, nbits=2, n_centroids=64)
    weighted = cs.ResidualCodec.fit(train, nbits=2, n_centroids=64, query_moment=query_second_moment(queries[:2000]))
    documents, unseen_queries = held_out[3000:], queries[2000:]  # neither was seen in training
    errors = []
    for codec in (plain, weighted):
        decoded = codec.decompress(*codec.compress(documents))
        errors.append(float(np.square((decoded - documents) @ unseen_queries.T).mean()))
    assert errors[1] < 0.8 * errors[0]
    restored = cs.ResidualCodec.from_bytes(weighted.to_bytes())
    for name in ("residual_basis", "query_moment", "codebooks"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(weighted, name))
    np.testing.assert_array_equal(restored.compress(documents[:100])[1], weighted.compress(documents[:100])[1])


def test_learned_codebooks_beat_per_dimension_buckets_fitted_on_the_same_sample(real_tokens, monkeypatch):
    train, held_out = real_tokens
    learned = cs.ResidualCodec.fit(train, nbits=2, n_centroids=64)
    monkeypatch.setattr(codec_module, "_MIN_LEARNED_SAMPLE", len(train) + 1)  # as for a small sample
    buckets = cs.ResidualCodec.fit(train, nbits=2, n_centroids=64)
    np.testing.assert_array_equal(buckets.rotation, np.eye(train.shape[1], dtype=np.float32))
    codes = unpack(np.arange(256, dtype=np.uint8)[:, None], 2)
    for position in range(4):  # byte 0's table is the product of its 4 dimensions' buckets
        for code in range(4):
            assert len(np.unique(buckets.codebooks[0][codes[:, position] == code, position])) == 1
    learned_error, bucket_error = (float(c.sq_errors(held_out, *c.compress(held_out)).mean()) for c in (learned, buckets))
    assert learned_error < 0.9 * bucket_error


def byte_errors(differences: np.ndarray, nbits: int) -> np.ndarray:
    """Squared error per packed byte (its ``8 // nbits`` dimensions summed)."""
    return np.square(differences).reshape(len(differences), -1, 8 // nbits).sum(axis=2)


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_codec_written_before_product_codebooks_decodes_as_before(real_tokens, nbits):
    """An index from before the product quantizer stored per-dimension cutoffs and weights."""
    train, held_out = real_tokens
    rng = np.random.default_rng(nbits)
    dim = train.shape[1]
    centroids = train[rng.choice(len(train), 32, replace=False)]
    weights = np.sort(rng.normal(0, 0.05, (dim, 1 << nbits)), axis=1).astype(np.float32)
    cutoffs = ((weights[:, 1:] + weights[:, :-1]) / 2).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, centroids=centroids, cutoffs=cutoffs, weights=weights, nbits=np.array(nbits),
             reference_sq_error=np.array(0.1), reference_top_centroid_share=np.array(0.05))
    codec = cs.ResidualCodec.from_bytes(buffer.getvalue())
    np.testing.assert_array_equal(codec.rotation, np.eye(dim, dtype=np.float32))

    ids, packed = codec.compress(held_out[:200])
    residuals = held_out[:200] - centroids[ids]
    expected_codes = np.stack([np.searchsorted(cutoffs[d], residuals[:, d], side="right") for d in range(dim)], axis=1)
    codes = unpack(packed, nbits)
    assert (codes != expected_codes).mean() < 1e-3  # the old per-dimension buckets, but for float near-ties:
    chosen, expected = weights[np.arange(dim), codes], weights[np.arange(dim), expected_codes]
    assert (byte_errors(residuals - chosen, nbits) <= byte_errors(residuals - expected, nbits) + 1e-8).all()
    decoded = centroids[ids] + chosen
    decoded /= np.linalg.norm(decoded, axis=1, keepdims=True)
    np.testing.assert_allclose(codec.decompress(ids, packed), decoded, atol=1e-5)
