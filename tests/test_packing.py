"""Bit-exact pack/unpack round trips for every layout, and the int3-dense stream checked against
an oracle written here straight from its definition."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ulpq_build.formats import FORMATS, PACKED_FORMATS
from ulpq_build.packing import pack, unpack

COUNTS = [1, 9, 10, 11, 31, 32, 33, 2047]


def random_codes(rng, fmt, shape):
    return rng.integers(0, fmt.n_levels, size=shape, dtype=np.uint8)


def stream_oracle(codes, bits):
    """value i occupies bits [bits*i, bits*i + bits) of the little-endian u32 array, one bit at a time."""
    n_words = -(-len(codes) * bits // 32)
    words = [0] * n_words
    for i, value in enumerate(int(c) for c in codes):
        for b in range(bits):
            if value >> b & 1:
                bit = bits * i + b
                words[bit // 32] |= 1 << (bit % 32)
    return np.array(words, dtype=np.uint32)


def words_oracle(codes, bits):
    """values_per_word = 32 // bits codes per word, code j at bits [bits*j, bits*j + bits)."""
    per = 32 // bits
    words = []
    for start in range(0, len(codes), per):
        word = 0
        for j, value in enumerate(codes[start : start + per]):
            word |= int(value) << (bits * j)
        words.append(word)
    return np.array(words, dtype=np.uint32)


@pytest.mark.parametrize("name", PACKED_FORMATS)
@pytest.mark.parametrize("n", COUNTS)
def test_round_trip_and_oracle(name, n, rng):
    fmt = FORMATS[name]
    codes = random_codes(rng, fmt, n)
    words = pack(codes, fmt)
    assert words.dtype == np.uint32 and words.shape == (fmt.words_per_row(n),)
    oracle = stream_oracle(codes, fmt.bits) if fmt.layout == "stream" else words_oracle(codes, fmt.bits)
    np.testing.assert_array_equal(words, oracle)
    np.testing.assert_array_equal(unpack(words, fmt, n), codes)


def test_int3_dense_straddles_words():
    fmt = FORMATS["int3-dense"]
    codes = np.zeros(32, np.uint8)
    codes[10] = 0b111  # bits 30..32: two bits in word 0, one in word 1
    words = pack(codes, fmt)
    assert words[0] == 0b11 << 30 and words[1] == 1 and words[2] == 0
    assert fmt.words_per_row(32) == 3 and fmt.words_per_row(11) == 2 and fmt.words_per_row(10) == 1


def test_int3_words_leaves_top_bits_unused(rng):
    fmt = FORMATS["int3"]
    words = pack(np.full(100, 7, np.uint8), fmt)
    assert fmt.values_per_word == 10 and words.shape == (10,)
    assert np.all(words >> 30 == 0)


@pytest.mark.parametrize("name", PACKED_FORMATS)
def test_rows_pack_independently(name, rng):
    fmt = FORMATS[name]
    codes = random_codes(rng, fmt, (5, 37))
    words = pack(codes, fmt)
    assert words.shape == (5, fmt.words_per_row(37))
    for r in range(5):
        np.testing.assert_array_equal(words[r], pack(codes[r], fmt))
    np.testing.assert_array_equal(unpack(words, fmt, 37), codes)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(PACKED_FORMATS), rows=st.integers(1, 4), n=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
def test_round_trip_property(name, rows, n, seed):
    fmt = FORMATS[name]
    codes = random_codes(np.random.default_rng(seed), fmt, (rows, n))
    np.testing.assert_array_equal(unpack(pack(codes, fmt), fmt, n), codes)
