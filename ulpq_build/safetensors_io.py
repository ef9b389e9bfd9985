"""Read and write safetensors files with numpy alone, validating every field.

Reading memory-maps the file, so a tensor costs memory only when it is used; every malformed
header, offset or size becomes a one-line UserError naming the file. Writing streams: the
header (all shapes and offsets) is written first and each tensor's bytes are appended as they
are produced, so a writer never holds more than one tensor. The `safetensors` package is the
independent check in the tests that both directions agree with the reference implementation.

Format: u64 little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
then the tensor bytes, offsets relative to the end of the header.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ulpq_build.errors import UserError
from ulpq_build.schema import Anything, Int, List, Map, Obj, Str, validate, parse_json

DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
CODES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
         "int16": "I16", "int8": "I8", "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL"}
MAX_HEADER = 100 * 1024 * 1024


ADVICE = "re-export it with safetensors.save_file or check that the download is complete"
HEADER_DEPTH = 4  # {name: {"shape": [...]}} nests 3 deep
MAX_RANK = 16
# The header as declared by the format: every tensor entry, and string-to-string metadata.
TENSOR_ENTRY = Obj({"dtype": Str(choices=tuple(DTYPES)), "shape": List(Int(min=0, max=2**48), max_len=MAX_RANK),
                    "data_offsets": List(Int(min=0, max=2**62), min_len=2, max_len=2)}, extra="forbid")
HEADER = Map(Anything())
METADATA = Map(Str(max_len=1 << 26))


def _bad(path: Path, what: str) -> UserError:
    return UserError(" ".join(f"{path}: not a valid safetensors file ({what}); {ADVICE}".split()))


class SafetensorsFile:
    """A validated, memory-mapped safetensors file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise _bad(self.path, f"only {size} bytes")
                (n,) = struct.unpack("<Q", head)
                if n < 2 or n > min(MAX_HEADER, size - 8):
                    raise _bad(self.path, f"header length {n} does not fit a {size}-byte file")
                raw = f.read(n)
        except FileNotFoundError:
            raise UserError(f"{self.path}: no such file; pass a .safetensors file or a model folder") from None
        except IsADirectoryError:
            raise UserError(f"{self.path}: is a folder, expected a .safetensors file") from None
        except PermissionError:
            raise UserError(f"{self.path}: permission denied; make it readable or pass another file") from None
        except OSError as exc:
            raise UserError(f"{self.path}: cannot be read ({exc.strerror or exc}); pass a readable .safetensors file") from None
        what = f"{self.path}: not a valid safetensors file"
        header = validate(parse_json(raw, what, ADVICE, max_depth=HEADER_DEPTH), HEADER, what, ADVICE)
        self.metadata: dict[str, str] = validate(header.pop("__metadata__", None) or {}, METADATA, f"{what}: __metadata__", ADVICE)
        self.data_start = 8 + n
        data_size = size - self.data_start
        self.entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        spans = []
        for name, entry in header.items():
            entry = validate(entry, TENSOR_ENTRY, f"{what}: tensor {name!r:.80}", ADVICE)
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            if end - begin != math.prod(shape) * DTYPES[dtype].itemsize:
                raise _bad(self.path, f"tensor {name!r:.80}: offsets [{begin}, {end}) do not match shape {list(shape)} of {dtype}")
            if end > data_size:
                raise _bad(self.path, f"tensor {name!r:.80} ends at byte {end} but the data holds {data_size} (truncated?)")
            self.entries[name] = (dtype, shape, begin, end)
            spans.append((begin, end))
        spans.sort()
        for (b0, e0), (b1, _) in zip(spans, spans[1:]):
            if b1 < e0:
                raise _bad(self.path, "two tensors overlap")
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r") if size > self.data_start else np.zeros(0, np.uint8)

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][1]

    def dtype(self, name: str) -> str:
        """numpy-style dtype name ('float32', 'bfloat16', ...)."""
        code = self.entries[name][0]
        return "bfloat16" if code == "BF16" else str(DTYPES[code])

    def raw(self, name: str) -> np.ndarray:
        """The stored values as numpy, a read-only view of the map (bfloat16 as its uint16 bits)."""
        code, shape, begin, end = self.entries[name]
        return self._map[self.data_start + begin : self.data_start + end].view(DTYPES[code]).reshape(shape)

    def tensor(self, name: str) -> np.ndarray:
        """The tensor as numpy (a read-only view of the map; bfloat16 is widened to float32)."""
        values = self.raw(name)
        if self.entries[name][0] == "BF16":
            return (values.astype(np.uint32) << 16).view(np.float32)
        return values

    def release(self, name: str) -> None:
        """Drop the pages of a tensor that has been used, so a streaming pass over a large file
        keeps only about one tensor resident (the kernel re-reads them if touched again)."""
        _, _, begin, end = self.entries[name]
        raw = getattr(self._map, "_mmap", None)
        if raw is None or not hasattr(raw, "madvise"):
            return
        page = mmap.PAGESIZE
        start = (self.data_start + begin) // page * page
        stop = -(-(self.data_start + end) // page) * page
        if stop > start:
            raw.madvise(mmap.MADV_DONTNEED, start, min(stop, len(raw)) - start)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)


def storage_dtype(dtype: str) -> np.dtype:
    """The numpy dtype that holds a tensor of `dtype` on disk (bfloat16 as its uint16 bits)."""
    return DTYPES["BF16"] if str(dtype) == "bfloat16" else np.dtype(dtype)


def to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounding to nearest even."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


def write_safetensors(path: Path, specs: list[tuple[str, str, tuple[int, ...]]],
                      tensors: Iterable[np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Stream a safetensors file: `specs` = [(name, dtype name, shape)] in file order, then
    `tensors` yields the arrays in that order (each checked against its spec as it arrives;
    a "bfloat16" tensor comes as its uint16 bits)."""
    header: dict = {}
    offset = 0
    for name, dtype, shape in specs:
        nbytes = math.prod(shape) * storage_dtype(dtype).itemsize
        header[name] = {"dtype": CODES[str(dtype)], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        count = 0
        tensors = iter(tensors)
        for (name, dtype, shape), array in zip(specs, tensors):
            array = np.asarray(array, order="C")  # (ascontiguousarray would turn a 0-dim tensor into 1-dim)
            if array.dtype != storage_dtype(dtype) or tuple(array.shape) != tuple(shape):
                raise ValueError(f"{name}: produced {array.dtype}{list(array.shape)}, header says {dtype}{list(shape)}")
            f.write(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
            count += 1
        if count != len(specs) or next(tensors, None) is not None:  # (also lets a generator run to its end)
            raise ValueError(f"{path}: {len(specs)} tensors announced, {count} or more produced")
