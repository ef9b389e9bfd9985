"""Our safetensors reader/writer against the reference implementation, and every corruption
turned into a one-line UserError."""

import json
import struct

import numpy as np
import pytest
import safetensors.numpy

from ulpq_build.errors import UserError
from ulpq_build.safetensors_io import SafetensorsFile, write_safetensors


def sample(rng):
    return {"a.weight": rng.standard_normal((3, 5)).astype(np.float32), "b": np.arange(7, dtype=np.int64),
            "c": rng.standard_normal(4).astype(np.float16), "packed": rng.integers(0, 2**32, (2, 3), dtype=np.uint32)}


def test_reads_what_the_reference_writes(tmp_path, rng):
    tensors = sample(rng)
    safetensors.numpy.save_file(tensors, tmp_path / "m.safetensors", metadata={"k": "v"})
    f = SafetensorsFile(tmp_path / "m.safetensors")
    assert f.metadata == {"k": "v"} and set(f.names) == set(tensors)
    for name, value in tensors.items():
        np.testing.assert_array_equal(f.tensor(name), value)
        assert f.dtype(name) == str(value.dtype)


def test_reference_reads_what_we_write(tmp_path, rng):
    tensors = sample(rng)
    path = tmp_path / "ours.safetensors"
    write_safetensors(path, [(n, str(t.dtype), t.shape) for n, t in tensors.items()], tensors.values(), {"x": "1"})
    loaded = safetensors.numpy.load_file(path)
    for name, value in tensors.items():
        np.testing.assert_array_equal(loaded[name], value)


def test_bfloat16_is_widened(tmp_path):
    values = np.array([1.0, -2.5, 3.140625], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)
    header = json.dumps({"t": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    (tmp_path / "bf.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bf16.tobytes())
    np.testing.assert_array_equal(SafetensorsFile(tmp_path / "bf.safetensors").tensor("t"), values)


def corrupt_variants(good: bytes):
    n = struct.unpack("<Q", good[:8])[0]
    header = json.loads(good[8 : 8 + n])
    yield "empty", b""
    yield "truncated data", good[:-5]
    yield "huge header length", struct.pack("<Q", 10**12) + good[8:]
    yield "not json", good[:8] + b"{" * n + good[8 + n :]
    bad = dict(header)
    bad["a.weight"] = {**bad["a.weight"], "dtype": "F7"}
    raw = json.dumps(bad).encode()
    yield "unknown dtype", struct.pack("<Q", len(raw)) + raw + good[8 + n :]
    bad = dict(header)
    bad["a.weight"] = {**bad["a.weight"], "shape": [4, 5]}
    raw = json.dumps(bad).encode()
    yield "shape mismatch", struct.pack("<Q", len(raw)) + raw + good[8 + n :]


def test_corrupt_files_give_one_line_errors(tmp_path, rng):
    path = tmp_path / "good.safetensors"
    safetensors.numpy.save_file(sample(rng), path)
    good = path.read_bytes()
    for what, data in corrupt_variants(good):
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(data)
        with pytest.raises(UserError) as info:
            SafetensorsFile(bad)
        message = str(info.value)
        assert "bad.safetensors" in message and "\n" not in message, what
