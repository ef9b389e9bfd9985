"""Fuzz every input reader with many mutated inputs (issue 12): >= 10,000 per reader by default.

    python scripts/fuzz_readers.py [--per-reader N] [--readers safetensors,manifest,...] [--seed S]
    python scripts/fuzz_readers.py --write-seeds     # regenerate tests/data/fuzz_seeds

Each input is a valid seed file mutated by 1-4 random operations (tests/fuzzing.py: byte flips,
truncation, JSON edits, type swaps, deep nesting, huge numbers, NaN) and read in-process. Prints,
per reader, how many inputs were read fine, how many gave a one-line UserError, and how many raised
anything else (must be 0; the first few are printed with their seed and operations to reproduce).
Exit status 1 if any reader had a non-UserError exception.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import fuzzing  # noqa: E402


def write_seeds() -> None:
    """The committed seed corpus: small valid files of every kind the readers take."""
    import numpy as np

    from support import tiny_bert
    from ulpq_build.bundle import build_bundle
    from ulpq_build.checkpoint import write_quantized
    from ulpq_build.model_source import open_model
    from ulpq_build.safetensors_io import to_bfloat16_bits, write_safetensors
    from ulpq_build.strategy import plan_and_quantize

    seeds = fuzzing.SEEDS
    for sub in fuzzing.SEED_FOLDERS.values():
        (seeds / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12)
    tensors = {"layers.0.weight": rng.standard_normal((16, 64)).astype(np.float32),
               "layers.0.bias": rng.standard_normal(16).astype(np.float32),
               "layers.1.weight": rng.standard_normal((8, 32)).astype(np.float16),
               "embeddings.weight": to_bfloat16_bits(rng.standard_normal((4, 32)).astype(np.float32)),
               "bn.num_batches_tracked": np.array(3, np.int64), "mask": np.array([True, False, True])}
    dtypes = {"embeddings.weight": "bfloat16"}
    specs = [(n, dtypes.get(n, str(v.dtype)), v.shape) for n, v in tensors.items()]
    small = seeds / "safetensors" / "small.safetensors"
    write_safetensors(small, specs, tensors.values(), {"format": "pt"})
    source = open_model(small)
    names = [(n, source.weights.shape(n), source.weights.dtype(n)) for n in source.weights.names]
    for name, overrides in (("int4-g32", {"format": "int4", "group_size": 32}), ("int3-optimal", {"format": "int3-optimal"}),
                            ("int2-ternary", {"format": "int2-ternary", "group_size": -1})):
        plan, _ = plan_and_quantize(source, names, overrides, None)
        write_quantized(source.weights, plan, seeds / "checkpoint" / f"{name}.safetensors", source_name="small.safetensors")
    with tempfile.TemporaryDirectory() as tmp:
        bert = tiny_bert(Path(tmp) / "bert")
        for name in ("config.json", "tokenizer_config.json"):
            (seeds / "hf" / f"bert--{name}").write_bytes((bert / name).read_bytes())
        build_bundle("builtin:mlp", Path(tmp) / "b", {"format": "int4"}, log=lambda m: None)
        (seeds / "manifest" / "mlp-int4.json").write_bytes((Path(tmp) / "b" / "manifest.json").read_bytes())
    vit = ROOT / "ulpq_build" / "models" / "vit-fashion-mnist"
    for name in ("config.json", "preprocessor_config.json"):
        (seeds / "hf" / f"vit--{name}").write_bytes((vit / name).read_bytes())
    hf = {"bert--modules.json": [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                                 {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                                 {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
          "bert--pooling.json": {"word_embedding_dimension": 32, "pooling_mode_cls_token": False,
                                 "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                                 "pooling_mode_mean_sqrt_len_tokens": False},
          "bert--sentence_bert_config.json": {"max_seq_length": 12, "do_lower_case": False},
          "bert--tokenizer.json": {"version": "1.0", "model": {"type": "WordPiece", "unk_token": "[UNK]",
                                                               "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}}}}
    for name, value in hf.items():
        (seeds / "hf" / name).write_text(json.dumps(value, indent=1) + "\n")
    (seeds / "quant_config" / "mixed.toml").write_text(
        'bitsPerWeight = 3\ndistributeOptimalValues = true\ngroupSize = 32\nscaleDtype = "float32"\ncodebook = "tensor"\n'
        "symmetricQuantization = true\n\n[mixedPrecision]\nfirstLayerBits = 8\nlastLayerBits = 4\n\n"
        "[[rules]]\npattern = \"embeddings.*\"\nformat = \"int8\"\ngroupSize = 32\nasymmetric = true\n")
    (seeds / "quant_config" / "rules.json").write_text(json.dumps(
        {"format": "int4", "perChannelQuantization": True, "scaleDtype": "float16",
         "mixedPrecision": {"embeddingBits": "int8"},
         "rules": [{"pattern": "layers.0.weight", "format": "int2-optimal", "codebook": "channel"},
                   {"pattern": "layers.1.*", "bits": 8, "groupSize": -1}]}, indent=1) + "\n")
    (seeds / "quant_config" / "plain.json").write_text('{"bitsPerWeight": 8, "symmetricQuantization": false}\n')
    print(f"wrote the seed corpus under {seeds}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-reader", type=int, default=10_000)
    parser.add_argument("--readers", default=",".join(fuzzing.READERS))
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--write-seeds", action="store_true")
    args = parser.parse_args()
    if args.write_seeds:
        write_seeds()
        return 0
    rng = random.Random(args.seed)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="ulpq-fuzz-") as tmp:
        ws = fuzzing.Workspace(Path(tmp))
        print(f"{'reader':<14} {'inputs':>7} {'read':>7} {'UserError':>10} {'other':>6} {'seconds':>8}")
        for reader in [r.strip() for r in args.readers.split(",") if r.strip()]:
            seeds = ws.seeds(reader)
            counts = {"ok": 0, "user_error": 0, "other": 0}
            start = time.time()
            for i in range(args.per_reader):
                seed_name, seed = seeds[i % len(seeds)]
                ops = [(rng.randrange(fuzzing.N_KINDS), rng.randrange(1 << 30), rng.randrange(1 << 30))
                       for _ in range(rng.randint(1, 4))]
                data = fuzzing.mutate(seed, ops, fuzzing.codec_for(reader, seed_name))
                try:
                    counts[fuzzing.check_one(ws, reader, seed_name, data)] += 1
                except AssertionError as exc:
                    counts["other"] += 1
                    if counts["other"] <= 5:
                        print(f"  BUG {exc}\n      seed {seed_name}, ops {ops}", flush=True)
            failures += counts["other"]
            print(f"{reader:<14} {args.per_reader:>7} {counts['ok']:>7} {counts['user_error']:>10} {counts['other']:>6} "
                  f"{time.time() - start:>8.1f}", flush=True)
    print(f"non-UserError exceptions: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
