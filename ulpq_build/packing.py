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
    if n % fmt.block_values:
        padded = np.zeros((*lead, n_blocks * fmt.block_values), dtype=codes.dtype)
        padded[..., :n] = codes
        codes = padded
    blocks = codes.reshape(*lead, n_blocks, fmt.block_values)
    words = np.zeros((*lead, n_blocks, fmt.block_words), dtype=np.uint32)
    for j in range(fmt.block_values):
        word, offset = divmod(fmt.bits * j, 32)
        value = blocks[..., j].astype(np.uint32)
        words[..., word] |= value << np.uint32(offset)  # u32 shifts drop the bits that spill over
        if offset + fmt.bits > 32:  # the value straddles: its high bits go to the next word
            words[..., word + 1] |= value >> np.uint32(32 - offset)
    flat = words.reshape(*lead, n_blocks * fmt.block_words)
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
    if words.shape[-1] != n_blocks * fmt.block_words:
        padded = np.zeros((*lead, n_blocks * fmt.block_words), dtype=np.uint32)
        padded[..., : words.shape[-1]] = words
        words = padded
    blocks = words.reshape(*lead, n_blocks, fmt.block_words)
    codes = np.empty((*lead, n_blocks, fmt.block_values), dtype=np.uint8)
    mask = np.uint32(fmt.mask)
    for j in range(fmt.block_values):
        word, offset = divmod(fmt.bits * j, 32)
        value = blocks[..., word] >> np.uint32(offset)
        if offset + fmt.bits > 32:
            value |= blocks[..., word + 1] << np.uint32(32 - offset)
        codes[..., j] = value & mask
    return codes.reshape(*lead, n_blocks * fmt.block_values)[..., :n]
