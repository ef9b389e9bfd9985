"""The runtime's input checks, manifest schema, truncation counts and CPU slices under Node (pure
functions of web_runtime/inputs.js, bundle_loader.js and tokenizer.js): every bad item is a
TypeError naming it, every bad manifest field a BundleError naming it. The same cases run in
real browsers through the public API in e2e/test_runtime_reliability.py."""

import json
import shutil
import subprocess

import pytest
from tokenizers import Tokenizer

from support import ROOT, run_cli

NODE = shutil.which("node")
RUNTIME = ROOT / "web_runtime"


def call(tmp_path, calls, runtime=RUNTIME):
    if NODE is None:
        pytest.fail("node is not installed (.ci/run installs it): the JS runtime tests need it")
    request = tmp_path / "calls.json"
    request.write_text(json.dumps(calls))
    proc = subprocess.run([NODE, ROOT / "tests/js/call_runtime.mjs", runtime, request], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def refused(results, cases, name="TypeError"):
    for (source, fragment), got in zip(cases, results):
        assert got.get("error", {}).get("name") == name and fragment in got["error"]["message"], (source, got)


def test_rows_are_checked_and_encoded(tmp_path, rng):
    rows = rng.standard_normal((3, 4)).round(3)
    cases = [
        ("new Array(2), 4", "item 0 is missing"), ("[, [1, 2, 3, 4]], 4", "item 0 is missing"), ("[], 4", "the array is empty"),
        ("[null], 4", "row 0 is null"), ("[[1, 2, NaN, 4]], 4", "row 0, value 2 is NaN"),
        ("[[1, 2, 3, 4], [1, Infinity, 3, 4]], 4", "row 1, value 1 is Infinity"), ("[[1, '2', 3, 4]], 4", 'value 1 is the string "2"'),
        ("[[1, 2, 3]], 4", "row 0 has 3 values, the model takes 4"), ("[[1, , 3, 4]], 4", "row 0, value 1 is missing (a hole)"),
        ("[[1, 2, 3, true]], 4", "row 0, value 3 is boolean"), ("[new BigInt64Array(4)], 4", "value 0 is bigint"),
        ("[new Float64Array([1, 2, 3, -Infinity])], 4", "value 3 is -Infinity"), ("'1,2,3,4', 4", "pass an array"),
    ]
    good = f"{json.dumps(rows.tolist())}, 4"
    results = call(tmp_path, [{"module": "inputs.js", "run": f"(m) => m.toMatrix({s})"} for s, _ in cases]
                   + [{"module": "inputs.js", "run": f"(m) => m.toMatrix({good})"}])
    refused(results, cases)
    assert results[-1]["value"]["rows"] == 3
    assert results[-1]["value"]["data"] == pytest.approx(rows.astype("float32").ravel().tolist())


def test_texts_and_images_are_checked(tmp_path):
    texts = [("new Array(1)", "item 0 is missing"), ("['a', , 'b']", "item 1 is missing"), ("['a', null]", "item 1 is null"),
             ("[42]", "item 0 is 42"), ("[{}]", "item 0 is object"), ("[]", "the array is empty"), ("null", "not null")]
    img = "{width: 2, height: 2, data: [0, 1, 2, 255, 4, 5, 6, 255, 8, 9, 10, 255, 12, 13, 14, 255]}"
    images = [("[null]", "image 0 is null"), (f"[{img}, 5]", "image 1 is 5"),
              (f"[{{...{img}, data: {img}.data.with(5, NaN)}}]", "image 0, data value 5 is NaN"),
              (f"[{{...{img}, data: {img}.data.with(0, -1)}}]", "image 0, data value 0 is -1"),
              (f"[{{...{img}, data: {img}.data.with(1, '9')}}]", 'data value 1 is the string "9"'),
              (f"[{{...{img}, data: {img}.data.slice(1)}}]", "image 0 has 15 data values; 2x2 RGBA needs 16"),
              (f"[{{...{img}, width: -2}}]", "image 0 has width -2"), (f"[{{...{img}, height: NaN}}]", "image 0 has height NaN"),
              (f"[{{...{img}, data: 'abc'}}]", 'image 0 has data the string "abc"'), ("[, 1]", "item 0 is missing")]
    ok = [f"[{img}]", f"[{{...{img}, data: new Uint8ClampedArray({img}.data)}}]"]
    results = call(tmp_path, [{"module": "inputs.js", "run": f"(m) => m.checkTexts({s})"} for s, _ in texts]
                   + [{"module": "inputs.js", "run": f"(m) => m.checkImages({s})"} for s, _ in images]
                   + [{"module": "inputs.js", "run": f"(m) => m.checkImages({s}).length"} for s in ok])
    refused(results[: len(texts)], texts)
    refused(results[len(texts): len(texts) + len(images)], images)
    assert [r.get("value") for r in results[-2:]] == [1, 1]


def test_cpu_slices_cover_the_batch_in_order(tmp_path):
    cases = [([1] * 130, 64), ([17] * 12, 64), ([80, 3, 3, 70, 10], 64), ([5], 64), ([], 64)]
    results = call(tmp_path, [{"module": "inputs.js", "run": f"(m) => m.slices({json.dumps(r)}, {b})"} for r, b in cases])
    for (rows, budget), got in zip(cases, results):
        ranges = got["value"]
        assert [i for a, b in ranges for i in range(a, b)] == list(range(len(rows)))  # every item once, in order
        for a, b in ranges:
            assert b - a == 1 or sum(rows[a:b]) <= budget
    assert results[1]["value"] == [[0, 3], [3, 6], [6, 9], [9, 12]]


def test_options_are_checked(tmp_path):
    allowed = "['hardware', 'profile', 'onProgress', 'poison', 'cpu', 'threads']"
    cases = [("{hardware: 'gpu'}", "option hardware must be one of 'auto', 'webgpu', 'cpu'"),
             ("{profile: 3}", "option profile must be null or a profile name"), ("{profile: ''}", "option profile must be"),
             ("{onProgress: {}}", "option onProgress must be a function"), ("{poison: 'yes'}", "option poison must be true or false"),
             ("{hardwre: 'cpu'}", "unknown option 'hardwre'; the options are hardware, profile, onProgress, poison, cpu, threads"),
             ("[]", "options must be an object"), ("null", "options must be an object"),
             ("{cpu: 'gpu'}", "option cpu must be null (the best CPU backend), 'wasm' or 'js'"),
             ("{threads: 0}", "option threads must be an integer from 1 to 256")]
    results = call(tmp_path, [{"module": "inputs.js", "run": f"(m) => m.checkOptions({s}, {allowed}, 'where')"} for s, _ in cases]
                   + [{"module": "inputs.js", "run": f"(m) => m.checkOptions({{hardware: 'cpu', profile: undefined}}, {allowed}, 'w')"}])
    refused(results[:-1], cases)
    assert "value" in results[-1]


def test_manifest_schema(tmp_path):
    bundle = tmp_path / "b"
    run_cli("bundle", "--model", "builtin:mlp", "--format", "int4", "--out", bundle, check=0)
    m = f"JSON.parse(readText({json.dumps(str(bundle / 'manifest.json'))}))"
    edits = [
        ("null", "the manifest must be a JSON object, not null"), ("[1]", "the manifest must be a JSON object"),
        (f"{{...{m}, schema_version: 3}}", "schema_version 3, this runtime reads 2"),
        (f"{{...{m}, schema_version: '2'}}", 'schema_version "2"'),
        (f"{{...{m}, model: undefined}}", "manifest field manifest.model must be an object"),
        (f"(({{files, ...rest}}) => rest)({m})", "manifest.files is missing"),
        (f"{{...{m}, shards: [{{...{m}.shards[0], sha256: 'abc'}}]}}", "manifest.shards[0].sha256 must be a sha256"),
        (f"{{...{m}, shards: [{{...{m}.shards[0], bytes: -1}}]}}", "manifest.shards[0].bytes must be a non-negative integer"),
        (f"{{...{m}, shaders: [{{...{m}.shaders[0], file: 'https://example.com/x.wgsl'}}]}}", "manifest.shaders[0].file must be a file name"),
        (f"{{...{m}, model: {{...{m}.model, architecture: 'gpt'}}}}", "manifest.model.architecture is 'gpt', unknown"),
        (f"{{...{m}, model: {{...{m}.model, input_size: 1.5}}}}", "manifest.model.input_size must be a non-negative integer"),
        (f"{{...{m}, tensors: [{{...{m}.tensors[0], shape: [2, true]}}]}}", "manifest.tensors[0].shape[1] must be a non-negative integer"),
        (f"{{...{m}, tensors: [{{...{m}.tensors[0], format: 'int9'}}]}}", "manifest.tensors[0].format names 'int9'"),
        (f"{{...{m}, tensors: [{{...{m}.tensors[0], parts: {{codes: {{...{m}.tensors[0].parts.codes, file: 'w.bin'}}}}}}]}}",
         "manifest.tensors[0].parts.codes.file names 'w.bin', which manifest.shards lacks"),
        (f"{{...{m}, tensors: [{{...{m}.tensors[0], parts: {{codes: {{...{m}.tensors[0].parts.codes, offset: 1e9}}}}}}]}}",
         "past the end of weights-000.bin"),
        (f"{{...{m}, tensors: [{{...{m}.tensors[0], parts: {{codes: {{...{m}.tensors[0].parts.codes, dtype: 'int64'}}}}}}]}}",
         "manifest.tensors[0].parts.codes.dtype is 'int64'"),
        (f"{{...{m}, profiles: [{{...{m}.profiles[0], limits: {{x: 'big'}}}}]}}", "manifest.profiles[0].limits.x must be a finite number"),
        (f"{{...{m}, matmul: {{gemv_max_rows: 2}}}}", "manifest.matmul.gemm_large_rows is missing"),
    ]
    results = call(tmp_path, [{"module": "bundle_loader.js", "run": f"(m) => m.checkManifest({s}, 'manifest.json')"} for s, _ in edits]
                   + [{"module": "bundle_loader.js", "run": f"(m) => m.checkManifest({m}).schema_version"}])
    refused(results[:-1], edits, "BundleError")
    assert results[-1] == {"value": 2}


def test_truncation_is_counted(tmp_path):
    bundle = tmp_path / "minilm"
    run_cli("bundle", "--model", "builtin:minilm", "--format", "int8", "--out", bundle, check=0)
    texts = ["short one", " ".join(["tokenization of unbelievable words"] * 60), "x " * 300]
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    pieces = [len(tokenizer.encode(t, add_special_tokens=False).ids) for t in texts]
    path = json.dumps(str(bundle / "tokenizer.json"))
    run = f"(m) => m.WordPieceTokenizer.fromTokenizerJson(JSON.parse(readText({path})), 256).batch({json.dumps(texts)})"
    (got,) = call(tmp_path, [{"module": "tokenizer.js", "run": run}])
    truncated = got["value"]["truncated"]
    expected = [{"index": i, "tokens": n, "dropped": n - 254} for i, n in enumerate(pieces) if n > 254]
    assert truncated == expected and len(expected) == 2
    assert got["value"]["lengths"] == [min(n, 254) + 2 for n in pieces]
