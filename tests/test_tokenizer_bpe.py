"""The runtime's byte-level BPE tokenizer (web_runtime/tokenizer_bpe.js, under Node) against the
`tokenizers` package. No tokenizer.json can be downloaded here, so each one is TRAINED in the test
(on text that ships in the repo, plus generated unicode) in the layouts real models use: GPT-2
(ByteLevel pre-tokenizer with its regex, add_prefix_space false and true), Llama-3 (Split with the
Llama-3 regex + ByteLevel without regex, ignore_merges, a <|begin_of_text|> template) and Qwen2
(NFC normalizer, Qwen2's regex, chat special tokens), the tokenizer.json transformers' own GPT2Tokenizer
and Qwen2Tokenizer build from such a vocabulary, and variants edited from those (merges as
"a b" strings, every Split behaviour, unk/fuse_unk, byte_fallback, subword prefix/suffix, added
tokens with lstrip/rstrip/single_word/normalized), and Llama-2's SentencePiece-style BPE (Prepend/Replace
normalizer, byte fallback, Replace/ByteFallback/Fuse/Strip decoder). Every text must give identical ids, identical
decoded text (special tokens kept and skipped) and a streaming decode that adds up to the decode."""

import json
import random
import unicodedata

import pytest
from support import ROOT, node_json
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from tokenizers.decoders import DecodeStream

DRIVER = ROOT / "tests/js/tokenizer_bpe.mjs"
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SHIPPED = [*sorted((ROOT / "ulpq_build/data").glob("calibration_text*.txt")), ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

TRICKY = [
    "", " ", "  ", "\t", "\n", "\r\n", "a", "Hello world", "Hello  world ", "trailing spaces   ", "   leading",
    "tabs\tand\t\ttabs", "lines\nand\n\nlines\r\nand\r\n\r\n", "mixed \t\n \r\n\t  end\n", " \n \n  \n",
    "Café crème brûlée naïve façade Zürich Ærøskøbing", "Cafe\u0301 cre\u0300me bru\u0302le\u0301e nai\u0308ve",  # composed, decomposed
    "e\u0301\u0301\u0301 a\u0300\u0316\u0317 combining stacks Z\u0351\u0352\u0353\u0354",
    "北京欢迎你 東京タワー 한국어 텍스트 中文，标点。「引号」", "العربية مرحبا بالعالم עברית שלום", "Ελληνικά ΣΊΣΥΦΟΣ русский язык",
    "mixed RTL \u202eevil\u202c and LTR \u200fmark\u200e", "हिन्दी भाषा தமிழ் ไทย",
    "emoji 🙂🚀 family 👨‍👩‍👧‍👦 skin 👍🏽👋🏿 flags 🇫🇷🇯🇵🏳️‍🌈 keycap 1️⃣ heart ❤️",
    "🧑🏾‍💻🧑🏻‍🤝‍🧑🏿", "👩‍❤️‍💋‍👨",
    "digits 1 12 123 1234 12345 1234567890 3.14159 1,000,000 2026-11-29 0x1F ٣٤٥ ๑๒๓ ⅫⅣ ²³",
    "punctuation !!! ??? ... --- ::: ;;; (((()))) [[]] {{}} <<>> @@## $$%% ^^&& ** __ ++ == ~~ `` || \\\\ //",
    "“Smart quotes” ‘single’ – en — em … • ¿¡ «» ‹›",
    "I'm you're he's we've they'll she'd it's DON'T I'M WE'VE 'S 'T 'ſ 'K 'k ’s", "'ſtar x'ſtop 'ſ's 'KELVIN",
    "<|endoftext|>", "before<|endoftext|>after", "a <|endoftext|> b", "<|endoftext|><|endoftext|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>",
    "partial <|endoftext and <|im_start without end", "<|endoftext|>\n\n<|endoftext|>  ",
    "x <mask> y  <mask>  z", "wordtok and wordtoks and xwordtok wordtok.", "naïve token and naive token",
    "Café! Cafe\u0301! CAFÉ!", "\u0085next line\u00a0nbsp\u2003em\u3000ideo\u180emongolian\u200bzwsp\ufeffbom\u2028ls\u2029ps",
    "\ufeffstarts with a byte order mark", "\ufeff", "\ufeff\ufeffx",
    "control \u0000 \u0007 \u001b[31m \u007f", "replacement \ufffd and private \ue000 and astral 𝕏𝔸𝟘 𐍈",
    "a" * 300, "ab" * 200, " " * 100, "\n" * 50, "word " * 200, "!" * 120, "7" * 50, "😀" * 40,
    "def f(x):\n    return x ** 2  # comment\n\tif x:\n\t\tpass\n", "{\"key\": [1, 2.5, null], 'b': true}",
    "https://example.com/path?q=1&x=y#frag someone@example.org C:\\Users\\name",
]


def shipped_lines():
    lines = []
    for path in SHIPPED:
        lines += path.read_text(encoding="utf-8").splitlines()
    return lines


def generated_unicode(n, seed):
    """Strings drawn from pools of scripts, marks, emoji, digits, whitespace and punctuation."""
    rng = random.Random(seed)
    pools = ["abcdefghijklmnopqrstuvwxyzABCXYZ", "àéîõüçñßøåÆŒ", "\u0301\u0308\u0327\u0300\u0316", "中文字符漢字日本語かなカナ한글",
             "العربيةעברית", "ΑΒΓαβγДЖЯжя", "0123456789٣٤๑", " \t\n\r\u00a0\u3000", ".,;:!?'\"()[]{}<>-_/\\@#$%^&*+=~`|",
             "🙂🚀👍🏽🇫🇷‍❤️\ufe0f", "𝕏𝔸𝟘𐍈"]
    out = []
    for _ in range(n):
        out.append("".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 40))))
    return out


TEXTS = TRICKY + generated_unicode(250, seed=1)
CORPUS = shipped_lines() + generated_unicode(400, seed=2) + TRICKY


def train(pre_tokenizer, *, normalizer=None, specials=(), vocab_size=2000, corpus=CORPUS, alphabet=True,
          model_options=None, trainer_options=None):
    tok = Tokenizer(models.BPE(**(model_options or {})))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[AddedToken(s, special=True, normalized=False) for s in specials],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if alphabet else [], show_progress=False,
                                  **(trainer_options or {}))
    tok.train_from_iterator(corpus, trainer)
    return tok


def edited(tok, edit):
    """A tokenizer.json dict from `tok`, changed by `edit(dict)`, reloaded so `tokenizers` is the reference."""
    data = json.loads(tok.to_str())
    edit(data)
    return Tokenizer.from_str(json.dumps(data))


def gpt2(add_prefix_space=False):
    tok = train(pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space), specials=["<|endoftext|>"])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=add_prefix_space)
    return tok


def llama3(ignore_merges=True):
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = train(pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
                                         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
                specials=specials, vocab_size=3000, model_options={"ignore_merges": ignore_merges})
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])])
    return tok


def qwen2():
    tok = train(pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
                                         pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
                normalizer=normalizers.NFC(), specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    # added tokens of every kind the matcher handles: stripping, whole words, normalized before matching,
    # and contents outside the byte alphabet (a space, 'ï'), which the ByteLevel decoder passes through
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, special=True, normalized=False)])
    tok.add_tokens([AddedToken("wordtok", single_word=True, normalized=True), AddedToken("naïve token", normalized=False),
                    AddedToken("Café!", normalized=True), AddedToken("ï", normalized=False)])
    return tok


def split_variant(behavior, invert=False, pattern=None):
    def edit(data):
        data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": pattern or {"Regex": r"\p{N}|\s"}, "behavior": behavior, "invert": invert},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    return edit


def string_merges(data):
    data["model"]["merges"] = [" ".join(pair) for pair in data["model"]["merges"]]


def with_byte_fallback(data):
    vocab = data["model"]["vocab"]
    for ch in [c for c in vocab if len(c) == 1 and ord(c) > 0x7e][:40]:  # drop some byte characters...
        del vocab[ch]
    data["model"]["merges"] = [m for m in data["model"]["merges"] if "".join(m) in vocab and all(p in vocab for p in m)]
    for b in range(256):  # ...which then fall back to <0xXX> tokens
        vocab[f"<0x{b:02X}>"] = len(vocab) + 100
    data["model"]["byte_fallback"] = True


def unk_variant(fuse):
    ascii_corpus = [line for line in CORPUS if line.isascii()]
    tok = train(pre_tokenizers.ByteLevel(add_prefix_space=False), specials=["<unk>"], corpus=ascii_corpus, alphabet=False,
                model_options={"unk_token": "<unk>", "fuse_unk": fuse}, vocab_size=1000)
    return tok


def affix_variant():
    return train(pre_tokenizers.ByteLevel(add_prefix_space=False), specials=["<|endoftext|>"], vocab_size=1500,
                 model_options={"continuing_subword_prefix": "##", "end_of_word_suffix": "</w>"},
                 trainer_options={"continuing_subword_prefix": "##", "end_of_word_suffix": "</w>"})


SPLIT_BEHAVIORS = {"removed": "Removed", "merged_with_previous": "MergedWithPrevious", "merged_with_next": "MergedWithNext",
                   "contiguous": "Contiguous"}


def llama2():
    """Llama-2's SentencePiece-style BPE as transformers converts it: '▁' prepended and for spaces by the
    normalizer, no pre-tokenizer, <0xXX> byte fallback for characters outside a small alphabet, <unk>
    fused, the Replace/ByteFallback/Fuse/Strip decoder and a <s> template."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")  # training only: no merges across words
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=[AddedToken(s, special=True, normalized=False)
                                                                   for s in ("<unk>", "<s>", "</s>")],
                                  limit_alphabet=120, show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    data = json.loads(tok.to_str())
    data["pre_tokenizer"] = None
    vocab = data["model"]["vocab"]
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    data["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                       {"Sequence": {"id": "A", "type_id": 0}}],
                              "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                              "special_tokens": {"<s>": {"id": "<s>", "ids": [vocab["<s>"]], "tokens": ["<s>"]}}}
    data["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return Tokenizer.from_str(json.dumps(data))


def transformers_built(cls, base, extra_specials=()):
    """The tokenizer.json transformers' own tokenizer class builds from a vocab and merges (the layout of
    the files GPT-2 / Qwen2 checkpoints ship), over `base`'s trained vocabulary."""
    model = json.loads(base.to_str())["model"]
    tok = cls(vocab=dict(model["vocab"]), merges=[tuple(m) for m in model["merges"]])
    if extra_specials:
        tok.add_tokens([AddedToken(s, special=True) for s in extra_specials], special_tokens=True)
    return tok.backend_tokenizer


def tokenizers_under_test():
    from transformers import GPT2Tokenizer, Qwen2Tokenizer

    base_gpt2, base_llama3, base_qwen2 = gpt2(), llama3(), qwen2()
    return {
        "gpt2": base_gpt2,
        "gpt2_prefix_space": gpt2(add_prefix_space=True),
        "gpt2_string_merges": edited(base_gpt2, string_merges),
        "llama3": base_llama3,
        "llama3_no_ignore_merges": llama3(ignore_merges=False),
        "qwen2": base_qwen2,
        "transformers_gpt2": transformers_built(GPT2Tokenizer, base_gpt2),
        "transformers_qwen2": transformers_built(Qwen2Tokenizer, base_qwen2, ["<|im_start|>", "<|im_end|>"]),
        **{f"split_{snake}": edited(base_gpt2, split_variant(b)) for snake, b in SPLIT_BEHAVIORS.items()},
        "split_isolated_inverted": edited(base_gpt2, split_variant("Isolated", invert=True)),
        "split_onig_escapes": edited(base_gpt2, split_variant("Isolated", pattern={"Regex": r"\d|\w+|..|[^\w\s]"})),
        "split_string": edited(base_gpt2, split_variant("Isolated", pattern={"String": "ab"})),
        "unk_fused": unk_variant(True),
        "unk_unfused": unk_variant(False),
        "byte_fallback": edited(base_gpt2, with_byte_fallback),
        "subword_affixes": affix_variant(),
        "llama2": llama2(),
        "trained_decoder": Tokenizer.from_file(str(ROOT / "ulpq_build/models/llama-pydoc/tokenizer.json")),  # the committed model's
    }


def random_id_lists(tok, n, seed):
    """Id lists the model could emit: any ids in any order, so arbitrary (often invalid) UTF-8 byte runs."""
    rng = random.Random(seed)
    size = max(tok.get_vocab(with_added_tokens=True).values()) + 1
    lists = [[rng.randrange(size) for _ in range(rng.randint(1, 12))] for _ in range(n)]
    return lists + [[size + 3], [1, size, 2, size + 1000]]  # ids past the vocabulary decode to nothing


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bpe")
    toks = tokenizers_under_test()
    texts = shipped_lines() + TEXTS
    request = {"cases": [], "broken": []}
    for name, tok in toks.items():
        path = folder / f"{name}.json"
        tok.save(str(path))
        request["cases"].append({"tokenizer": str(path), "texts": texts, "ids": random_id_lists(tok, 150, seed=len(name)),
                                 "maxId": max(tok.get_vocab(with_added_tokens=True).values())})
    for name, edit in BROKEN.items():
        data = json.loads(toks["gpt2"].to_str())
        edit(data)
        path = folder / f"broken_{name}.json"
        path.write_text(json.dumps(data))
        request["broken"].append(str(path))
    out = node_json(DRIVER, request=request, tmp_path=folder, timeout=600)
    return toks, texts, request, out


def assert_streams(decoded, expected):
    for got, (kept, skipped) in zip(decoded, expected):
        assert "".join(got["stream"]) == kept and "".join(got["streamSkipped"]) == skipped
        # a chunk never ends inside a character (the full text has U+FFFD only where its bytes are invalid)
        assert sum(c.count("\ufffd") for c in got["stream"]) == kept.count("\ufffd")


@pytest.mark.parametrize("name", ["gpt2", "gpt2_prefix_space", "gpt2_string_merges", "llama3", "llama3_no_ignore_merges", "qwen2",
                                  "transformers_gpt2", "transformers_qwen2",
                                  "split_removed", "split_merged_with_previous", "split_merged_with_next", "split_contiguous",
                                  "split_isolated_inverted", "split_onig_escapes", "split_string", "unk_fused", "unk_unfused", "byte_fallback",
                                  "subword_affixes", "llama2", "trained_decoder"])
def test_js_matches_tokenizers(compared, name):
    toks, texts, request, out = compared
    index = list(toks).index(name)
    tok, got = toks[name], out["cases"][index]
    mismatches = []
    for text, words, ids, plain, decoded in zip(texts, got["words"], got["encoded"], got["plain"], got["decoded"]):
        pre = tok.pre_tokenizer
        if words != ([w for w, _ in pre.pre_tokenize_str(text)] if pre else [text] if text else []):  # the regexes split alike
            mismatches.append((text, words))
            continue
        want = tok.encode(text).ids
        want_plain = tok.encode(text, add_special_tokens=False).ids
        if ids != want or plain != want_plain:
            mismatches.append((text, ids, want, plain, want_plain))
            continue
        assert decoded["kept"] == tok.decode(want, skip_special_tokens=False), text
        assert decoded["skipped"] == tok.decode(want, skip_special_tokens=True), text
    assert not mismatches, f"{len(mismatches)} of {len(texts)} texts differ; first: {mismatches[:3]}"
    assert_streams(got["decoded"], [(tok.decode(i, skip_special_tokens=False), tok.decode(i, skip_special_tokens=True))
                                    for i in got["encoded"]])
    # arbitrary id sequences: invalid UTF-8 replaced exactly as `tokenizers` (from_utf8_lossy) does
    expected = [(tok.decode(ids, skip_special_tokens=False), tok.decode(ids, skip_special_tokens=True))
                for ids in request["cases"][index]["ids"]]
    assert [(d["kept"], d["skipped"]) for d in got["free"]] == expected
    if name == "llama2":
        # a token-level decoder streams by `tokenizers`' DecodeStream algorithm, chunk for chunk; on
        # arbitrary ids its U+FFFD per invalid byte depends on the window, so the chunks need not add up
        # (where `tokenizers` raises "Invalid prefix" the JS carries on: that list is not compared)
        raised = 0
        for ids, d in zip(got["encoded"] + request["cases"][index]["ids"], got["decoded"] + got["free"]):
            for skip, chunks in ((False, d["stream"]), (True, d["streamSkipped"])):
                stream = DecodeStream(skip_special_tokens=skip)
                try:
                    want = [stream.step(tok, i) or "" for i in ids]
                except Exception as e:  # noqa: BLE001 (`tokenizers` raises a bare Exception)
                    assert "Invalid prefix" in str(e) and ids in request["cases"][index]["ids"], (e, ids)
                    raised += 1
                    continue
                assert chunks[:-1] == want, ids
        assert raised < len(request["cases"][index]["ids"]) // 4
        return
    if name.startswith("unk_"):  # an ASCII-only vocabulary: the rest is <unk>, one per character unless fused
        unk = tok.token_to_id("<unk>")
        runs = [ids.count(unk) for ids in got["encoded"]]
        assert sum(runs) > 100 and (max(runs) < 40 if name == "unk_fused" else max(runs) > 100)
    else:
        assert any("\ufffd" in kept for kept, _ in expected)  # the random lists do exercise invalid bytes
    assert_streams(got["free"], expected)
    # vocabulary: size with added tokens, id <-> token both ways, out-of-range ids give null
    vocab = tok.get_vocab(with_added_tokens=True)
    assert got["vocabSize"] == tok.get_vocab_size(with_added_tokens=True) == len(vocab)
    assert {int(i): t for i, t in got["tokens"].items() if t is not None} == {i: tok.id_to_token(i) for i in vocab.values()}
    assert got["ids"] == {t: tok.token_to_id(t) for t in got["ids"]} and len(got["ids"]) == len(vocab)


def test_texts_cover_what_the_tokenizer_must_handle(compared):
    toks, texts, _, out = compared
    assert len(texts) >= 500
    assert any(unicodedata.normalize("NFC", t) != t for t in texts)  # decomposed accents (NFC changes them)
    assert any("\u200d" in t for t in texts) and any("\U0001F1EB" in t for t in texts)  # ZWJ sequences, flags
    assert any("\r\n" in t for t in texts) and "" in texts
    # the trained vocabularies do merge multi-byte characters, so decode crosses token boundaries inside characters
    qwen = out["cases"][list(toks).index("qwen2")]["decoded"]
    assert sum("" in d["stream"][:-1] for d in qwen) > 20
    # the Llama-3 template adds <|begin_of_text|> only when special tokens are asked for
    llama = out["cases"][list(toks).index("llama3")]
    bos = toks["llama3"].token_to_id("<|begin_of_text|>")
    assert llama["encoded"][texts.index("a")][0] == bos and bos not in llama["plain"][texts.index("a")]


BROKEN = {
    "wordpiece": lambda d: d["model"].update(type="WordPiece"),
    "unigram": lambda d: d["model"].update(type="Unigram"),
    "metaspace": lambda d: d.update(pre_tokenizer={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}),
    "lowercase": lambda d: d.update(normalizer={"type": "Lowercase"}),
    "wordpiece_decoder": lambda d: d.update(decoder={"type": "WordPiece", "prefix": "##", "cleanup": True}),
    "bert_processing": lambda d: d.update(post_processor={"type": "BertProcessing", "sep": ["[SEP]", 1], "cls": ["[CLS]", 0]}),
    "dropout": lambda d: d["model"].update(dropout=0.1),
    "truncation": lambda d: d.update(truncation={"max_length": 8, "strategy": "LongestFirst", "stride": 0, "direction": "Right"}),
    "split_behavior": lambda d: d.update(pre_tokenizer={"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Sideways", "invert": False}),
    "atomic_regex": lambda d: d.update(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(?>a+)b"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}),
}
BROKEN_FIELDS = {"wordpiece": "model.type = WordPiece", "unigram": "model.type = Unigram", "metaspace": "pre_tokenizer.type = Metaspace",
                 "lowercase": "normalizer.type = Lowercase", "wordpiece_decoder": "decoder.type = WordPiece",
                 "bert_processing": "post_processor.type = BertProcessing", "dropout": "model.dropout = 0.1",
                 "truncation": "truncation = ", "split_behavior": "pre_tokenizer.behavior = Sideways",
                 "atomic_regex": "pre_tokenizer.pattern.Regex = (?>a+)b"}


def test_unsupported_tokenizer_json_names_the_field(compared):
    _, _, _, out = compared
    for (name, message) in zip(BROKEN, out["broken"]):
        assert message is not None and BROKEN_FIELDS[name] in message and "not supported" in message, (name, message)
