#!/usr/bin/env python3
"""Golden data for the tokenizer.json reader (include/ssm/models/tokenizer.hpp, docs/tokenizer.md).

1. Trains a small byte-level BPE (vocab_size 1500 asked; this corpus stops at 1218) with the Hugging Face `tokenizers` package on a varied corpus, set up
   as GPT-NeoX ships it: NFC normalizer, ByteLevel pre-tokenizer / post-processor / decoder, special tokens
   <|endoftext|> and <|padding|>, non-special added tokens for runs of spaces (normalized, as in GPT-NeoX), plus a few
   added tokens exercising lstrip / rstrip / single_word / normalized. Saves variants of its tokenizer.json:
     neox/            as trained; merges in the form this `tokenizers` version writes
     neox_str_merges/ the same with merges rewritten as "a b" strings (or as [a, b] arrays, whichever neox lacks)
     bos/             add_prefix_space, TemplateProcessing "<|endoftext|> $A"
     split/           Sequence[Split(GPT-2 regex, Isolated), ByteLevel(use_regex=false)], ignore_merges, and two
                      vocabulary words ("zzqqzz", "Gzzqqzz") no merge reaches
   and, outside that folder, tests/data/mamba/tiny/tokenizer.json (variant "mamba_tiny", byte_tokenizer()): the 256 byte
   tokens alone (ids 0-255 in GPT-2's byte order, no merges, no added tokens), so that every id fits the tiny test
   checkpoint's vocabulary of 256 (what tools/ssm-generate's tests run on).
2. Writes text.txt: a varied test text (scripts, emoji with ZWJ, CJK, combining marks NFC composes, whitespace runs,
   tabs / CR / control characters, digits, contractions, special tokens inside the text).
3. Records, per variant, in golden.json: the ids of the whole text and of every line (with and without special
   tokens), decode of the whole, and decodes of random id sequences (skip_special_tokens off and on).

Usage (needs `pip install tokenizers`; never run in CI; the output is committed):
    python3 tools/make_tokenizer_golden.py [out_dir]
"""
import copy
import json
import os
import random
import sys

import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data", "tokenizer")
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

WORDS = ("the of and to in is was for that with as on by it be at from this which or are an not have has had but "
         "were they their one all been there more when would who will about into than time state model sequence "
         "token layer scan memory kernel input output hidden length linear recurrent selective convolution "
         "attention language network training python rust function return value print string number").split()

FRAGMENTS = [
    "I'm sure they're here, we've seen it; you'll see, he'd say. Don't! IT'S ok, it''s odd, 'tis 'S 'LL.",
    "Numbers: 12345 3.14159 1,000,000 0x1F 2nd 10th \u0663\u0664\u0665 \u216b \u00bd \u2460 007",
    "Whitespace:  two   three    four     five      six\t\ttabs\t \t mixed \n\n\n  lines   \r\n crlf\r lone CR",
    "Trailing spaces   ",
    "   leading spaces",
    "Odd spaces:\u00a0nbsp\u3000ideographic\u2028line-sep\u2029para\u000b vt \u000c ff \u0085 nel \u2009thin",
    "Controls: \x01\x02\x1b[31mred\x1b[0m \x7f \x1f unit-sep \x1c \x00 nul",
    "NFC: cafe\u0301 e\u0301\u0327 A\u030a \u212b \u2126 q\u0307\u0323 \u1100\u1161\u11a8 \u0958 \u0344 Tie\u0302\u0301ng Vie\u0323\u0302t",
    "Composed: caf\u00e9 \u00c5 \u00f1 \u00fc \u1ec7 \uac01 na\u00efve r\u00e9sum\u00e9",
    "CJK: \u6f22\u5b57\u304b\u306a\u30ab\u30ca\ud55c\uad6d\uc5b4 \u4e2d\u6587\u6d4b\u8bd5\u3002\u65e5\u672c\u8a9e\uff01",
    "Emoji: \U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 \U0001F3F3\ufe0f\u200d\U0001F308 \U0001F44D\U0001F3FD \U0001F1EF\U0001F1F5 \u2764\ufe0f \U0001F600\U0001F600",
    "Scripts: \u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u05e9\u05dc\u05d5\u05dd \u0393\u03b5\u03b9\u03ac \u041f\u0440\u0438\u0432\u0435\u0442 \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22 \u0928\u092e\u0938\u094d\u0924\u0947",
    "Math: \u2200x\u2208\u211d: x\u00b2\u22650, \u03c0\u22483.14, a\u2260b \u2192 \u221e",
    "Special:<|endoftext|>inside<|padding|><|padding|> partial <|endoftext| <|endoftext|> end",
    "Mask: left   <mask>   right <mask>x",
    "Single: hello world, xhello worldx, (hello world) _hello world \u203fhello world \u00b2hello world\u00bd "
    "e\u0301hello world \u24b6hello world-hello world\u200d \u0663hello world \u216bhello world",
    "Normalized added: cafe\u0301bar caf\u00e9bar xa\u00e9y xae\u0301y",
    "Code: def f(x):\n    return x**2  # comment\n        if a == b: pass\n{\"key\": [1, 2, 3], \"v\": null}",
    "URL: https://example.com/path?q=1&r=two#frag user@example.org",
    "Repeats: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa !!!!!!!!!!!! ---------- ==========",
    "",
    " ",
    "\t",
    "<|endoftext|>",
    "x",
]


def corpus(rng, n):
    lines = []
    for _ in range(n):
        k = rng.randint(3, 18)
        line = " ".join(rng.choice(WORDS) for _ in range(k))
        if rng.random() < 0.3:
            line = line.capitalize() + rng.choice([".", "!", "?", ",", ":"])
        if rng.random() < 0.4:
            line += " " + rng.choice(FRAGMENTS)
        if rng.random() < 0.1:
            line = " " * rng.randint(2, 12) + line
        lines.append(line)
    return lines


def train():
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(random.Random(1), 6000), trainer=trainer)
    # GPT-NeoX's runs of spaces: non-special, normalized added tokens.
    tok.add_tokens([AddedToken(" " * n, normalized=True) for n in range(24, 1, -1)])
    tok.add_tokens([AddedToken("\t\t", normalized=True)])
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, normalized=False)])
    tok.add_tokens([AddedToken("hello world", single_word=True, normalized=False)])
    tok.add_tokens([AddedToken("caf\u00e9", normalized=True)])  # matches decomposed "cafe\u0301" after NFC
    tok.add_tokens([AddedToken("<raw\u00df>", normalized=False)])
    tok.add_tokens([AddedToken("ae\u0301", normalized=True)])  # its pattern is NFC'd: matches "a\u00e9" too
    return json.loads(tok.to_str())


def variants(base):
    out = {"neox": base}
    other = copy.deepcopy(base)
    merges = other["model"]["merges"]
    if merges and isinstance(merges[0], list):
        other["model"]["merges"] = [" ".join(m) for m in merges]
    else:
        other["model"]["merges"] = [m.split(" ") for m in merges]
    out["neox_str_merges"] = other
    bos = copy.deepcopy(base)
    bos["pre_tokenizer"]["add_prefix_space"] = True
    eot = next(t for t in base["added_tokens"] if t["content"] == "<|endoftext|>")
    bos["post_processor"] = json.loads(processors.TemplateProcessing(
        single="<|endoftext|> $A", pair="<|endoftext|> $A <|endoftext|> $B:1",
        special_tokens=[("<|endoftext|>", eot["id"])]).__getstate__())
    out["bos"] = bos
    split = copy.deepcopy(base)
    split["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": GPT2_REGEX}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    split["model"]["ignore_merges"] = True
    # Words that are vocabulary tokens no merge makes: ignore_merges encodes each as that one token.
    next_id = len(split["model"]["vocab"])  # the trained vocabulary is 0 ... len - 1
    split["model"]["vocab"]["zzqqzz"] = next_id
    split["model"]["vocab"]["\u0120zzqqzz"] = next_id + 1
    # tokenizers numbers added tokens after the vocabulary when it loads a file, whatever ids the file gives them:
    # load and save once so that the file holds the ids tokenizers uses.
    split = json.loads(Tokenizer.from_str(json.dumps(split)).to_str())
    out["split"] = split
    return out


def byte_tokenizer():
    """A byte-level BPE whose vocabulary is exactly the 256 byte tokens (id = the byte's rank in GPT-2's
    bytes_to_unicode order) with no merges and no added tokens: every text encodes to one id per UTF-8 byte, all
    below 256."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=lambda c: BYTE_OF[c])
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    assert tok.get_vocab_size(with_added_tokens=True) == 256
    return json.loads(tok.to_str())


def bytes_to_unicode():
    """GPT-2's byte -> printable character table (include/ssm/models/tokenizer.hpp has the same)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
        list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_OF = {c: b for b, c in bytes_to_unicode().items()}

# Variants written outside OUT: name -> path of their tokenizer.json relative to OUT (golden.json records it).
ELSEWHERE = {"mamba_tiny": os.path.join("..", "mamba", "tiny", "tokenizer.json")}


def test_text():
    rng = random.Random(7)
    lines = list(FRAGMENTS) + ["zzqqzz zzqqzz"]  # not in the training corpus: no merge makes these words
    lines += corpus(rng, 120)
    for _ in range(60):  # fragments glued to each other and to words, without separators
        lines.append("".join(rng.choice(FRAGMENTS + WORDS + [" ", "  ", "\t", "'s", "<|endoftext|>"])
                             for _ in range(rng.randint(2, 6))))
    return "\n".join(lines) + "\n"


def main():
    os.makedirs(OUT, exist_ok=True)
    text = test_text()
    with open(os.path.join(OUT, "text.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(text)
    lines = text.split("\n")
    golden = {"tokenizers_version": tokenizers.__version__, "variants": {}}
    all_variants = variants(train())
    all_variants["mamba_tiny"] = byte_tokenizer()
    for name, tj in all_variants.items():
        rel = ELSEWHERE.get(name, os.path.join(name, "tokenizer.json"))
        path = os.path.join(OUT, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        s = json.dumps(tj, ensure_ascii=False, separators=(",", ":"))
        with open(path, "w", encoding="utf-8") as f:
            f.write(s)
        tok = Tokenizer.from_str(s)
        whole = tok.encode(text).ids
        rng = random.Random(11)
        n = tok.get_vocab_size(with_added_tokens=True)
        seqs = [[rng.randrange(n) for _ in range(rng.randint(1, 12))] for _ in range(300)]
        seqs.append(list(range(n)))
        g = {
            "whole": whole,
            "whole_no_special": tok.encode(text, add_special_tokens=False).ids,
            "lines": [tok.encode(line).ids for line in lines],
            "lines_no_special": [tok.encode(line, add_special_tokens=False).ids for line in lines],
            "decode_whole": tok.decode(whole, skip_special_tokens=False),
            "decode_whole_skip": tok.decode(whole, skip_special_tokens=True),
            "decode_ids": seqs,
            "decode": [tok.decode(s, skip_special_tokens=False) for s in seqs],
            "decode_skip": [tok.decode(s, skip_special_tokens=True) for s in seqs],
        }
        if name in ELSEWHERE:
            g["path"] = rel.replace(os.sep, "/")
        # Keep the data small: the other variants check the whole text only (mamba_tiny also random byte decodes).
        if name not in ("neox", "bos"):
            for k in ("lines", "lines_no_special") + (() if name == "mamba_tiny" else ("decode_ids", "decode", "decode_skip")):
                del g[k]
        golden["variants"][name] = g
    with open(os.path.join(OUT, "golden.json"), "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
