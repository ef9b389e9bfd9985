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


def pack_vq(codes: np.ndarray, fmt: Format) -> np.ndarray:
    """Codes [rows, groups, stages] of a vector-quantized row format -> u32 [rows, words_per_row(8 * groups)]:
    each stage's codes after the previous stage's, a stage starting on a word, code g of a stage at
    bits [b * g, b * g + b) (b, the stage's bits, divides 32: no code straddles a word)."""
    from ulpq_build.formats import CODEBOOK_STAGES, GROUP_DIM

    codes = np.asarray(codes)
    rows, groups, n_stages = codes.shape
    if n_stages != len(fmt.stages):
        raise ValueError(f"{fmt.name}: {len(fmt.stages)} stages, got codes for {n_stages}")
    planes = []
    for s, stage in enumerate(fmt.stages):
        bits = CODEBOOK_STAGES[stage]["bits"]
        per_word = 32 // bits
        words = fmt.stage_words(groups * GROUP_DIM)[s]
        padded = np.zeros((rows, words * per_word), np.uint32)
        padded[:, :groups] = codes[:, :, s].astype(np.uint32)
        lanes = padded.reshape(rows, words, per_word) << (np.arange(per_word, dtype=np.uint32) * np.uint32(bits))
        planes.append(np.bitwise_or.reduce(lanes, axis=2).astype(np.uint32))
    return np.ascontiguousarray(np.concatenate(planes, axis=1))


def unpack_vq(words: np.ndarray, fmt: Format, k: int) -> np.ndarray:
    """Inverse of pack_vq: u32 [rows, words_per_row(k)] -> int32 codes [rows, k / 8, stages]."""
    from ulpq_build.formats import CODEBOOK_STAGES, GROUP_DIM

    words = np.asarray(words, np.uint32)
    if words.ndim != 2 or words.shape[1] != fmt.words_per_row(k):
        raise ValueError(f"{fmt.name}: {k} values take {fmt.words_per_row(k)} words per row, got shape {words.shape}")
    groups = k // GROUP_DIM
    out, start = [], 0
    for stage, count in zip(fmt.stages, fmt.stage_words(k)):
        bits = CODEBOOK_STAGES[stage]["bits"]
        per_word = 32 // bits
        plane = words[:, start : start + count]
        lanes = (plane[:, :, None] >> (np.arange(per_word, dtype=np.uint32) * np.uint32(bits))) & np.uint32((1 << bits) - 1)
        out.append(lanes.reshape(len(words), -1)[:, :groups])
        start += count
    return np.stack(out, axis=2).astype(np.int32)
