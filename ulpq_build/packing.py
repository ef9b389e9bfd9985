"""Pack `bits`-bit codes into little-endian u32 words and back, for every layout of the registry.

Rows (the last axis) are packed independently, so row r of a packed matrix starts at word
r * words_per_row(K): a kernel finds any row without decoding the rows before it.
Both packed layouts follow one block rule (see formats.py): `block_values` values fill
`block_words` words and value j of a block starts at bit bits*j of the block. The loops below
run over the j of a block (at most 32 steps), each step a vector operation over all blocks.
"""

from __future__ import annotations

import numpy as np

from ulpq_build.formats import Format


def pack(codes: np.ndarray, fmt: Format) -> np.ndarray:
    """Pack integer codes (any shape [..., n], values < 2**bits) into u32 words [..., words_per_row(n)]."""
    if not fmt.quantized:
        raise ValueError(f"{fmt.name} is not a packed format")
    codes = np.asarray(codes)
    n = codes.shape[-1]
    lead = codes.shape[:-1]
    n_blocks = -(-n // fmt.block_values)
    padded = np.zeros((*lead, n_blocks * fmt.block_values), dtype=np.uint64)
    padded[..., :n] = codes
    blocks = padded.reshape(*lead, n_blocks, fmt.block_values)
    words = np.zeros((*lead, n_blocks, fmt.block_words), dtype=np.uint64)
    for j in range(fmt.block_values):
        bit = fmt.bits * j
        word, offset = divmod(bit, 32)
        value = blocks[..., j]
        words[..., word] |= (value << np.uint64(offset)) & np.uint64(0xFFFFFFFF)
        if offset + fmt.bits > 32:  # the value straddles: its high bits spill into the next word
            words[..., word + 1] |= value >> np.uint64(32 - offset)
    flat = words.reshape(*lead, n_blocks * fmt.block_words).astype(np.uint32)
    return np.ascontiguousarray(flat[..., : fmt.words_per_row(n)])


def unpack(words: np.ndarray, fmt: Format, n: int) -> np.ndarray:
    """Inverse of pack: u32 words [..., words_per_row(n)] -> uint8 codes [..., n]."""
    if not fmt.quantized:
        raise ValueError(f"{fmt.name} is not a packed format")
    words = np.asarray(words, dtype=np.uint32)
    lead = words.shape[:-1]
    if words.shape[-1] != fmt.words_per_row(n):
        raise ValueError(f"{fmt.name}: {n} values take {fmt.words_per_row(n)} words, got {words.shape[-1]}")
    n_blocks = -(-n // fmt.block_values)
    padded = np.zeros((*lead, n_blocks * fmt.block_words), dtype=np.uint64)
    padded[..., : words.shape[-1]] = words
    blocks = padded.reshape(*lead, n_blocks, fmt.block_words)
    codes = np.empty((*lead, n_blocks, fmt.block_values), dtype=np.uint8)
    mask = np.uint64(fmt.mask)
    for j in range(fmt.block_values):
        bit = fmt.bits * j
        word, offset = divmod(bit, 32)
        value = blocks[..., word] >> np.uint64(offset)
        if offset + fmt.bits > 32:
            value |= blocks[..., word + 1] << np.uint64(32 - offset)
        codes[..., j] = value & mask
    return codes.reshape(*lead, n_blocks * fmt.block_values)[..., :n]
