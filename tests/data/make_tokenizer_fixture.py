#!/usr/bin/env python3
"""Makes tests/data/tokenizer_fixture/: a small byte-level BPE tokenizer trained by the Hugging Face
`tokenizers` library with GPT-NeoX's configuration, and the ids that library gives for a few
thousand lines of varied text, for tests/text/test_tokenizer_fixture.cpp to match exactly.

Run where `tokenizers` is installed (no network needed), from the repository root:

    python3 tests/data/make_tokenizer_fixture.py            # writes tests/data/tokenizer_fixture/
    python3 tests/data/make_tokenizer_fixture.py --out DIR  # elsewhere

The corpus is generated here from a fixed seed and fixed character lists, all of them characters of
Unicode 8.0 or older, so that every Unicode version involved (Python's, the regex engine's inside
`tokenizers`, the tables in include/transmamba/text/) classifies them alike. Written files:

  tokenizer.json                GPT-NeoX-like: NFC, ByteLevel(add_prefix_space=False) pre-tokenizer,
                                ByteLevel post-processor and decoder, <|endoftext|> and <|padding|>
                                (special), "  " and "    " (normalized, not special, like NeoX's
                                runs of spaces)
  tokenizer_prefix_space.json   the same with add_prefix_space=True and a TemplateProcessing that
                                puts <|endoftext|> first
  tokenizer_no_normalizer.json  the same with normalizer null: decode(encode(line)) == line exactly
  expected.json                 the lines, and per tokenizer file the ids of encode(line) and the
                                text of decode(ids, skip_special_tokens=False)
"""
import argparse
import json
import pathlib
import random
import sys
import unicodedata

WORDS = """the of and to in is was he for it with as his on be at by had are but from or have an they which
one you were her all she there would their we him been has when who will more no if out so said what up its
about into than them can only other new some could time these two may then do first any my now such like our
over man me even most made after also did many before must through back years where much your way well down
should because each just those people how too little state good very make world still own see men work long
get here between both life being under never day same another know while last might us great old year off
come since against go came right used take three Zürich naïve café résumé coöperate façade jalapeño
Straße Ångström Øresund Łódź Dvořák Ærøskøbing""".split()
CJK = "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服"
KANA = "こんにちはありがとうございますおはようさようならカタカナテストコンピュータープログラム"
HANGUL = ["안녕하세요", "한국어", "테스트입니다", "감사합니다", "대한민국", "\u1100\u1161\u11A8", "\u1112\u1161\u11AB\u1100\u1173\u11AF"]
SCRIPTS = [
    "Привет мир", "съешь же ещё этих мягких французских булок", "Ёлка",
    "Καλημέρα κόσμε", "ξεσκεπάζω την ψυχοφθόρα βδελυγμία", "ΑΒΓΔ",
    "مرحبا بالعالم", "اللغة العربية", "١٢٣٤٥ ٦٧٨٩٠",
    "שלום עולם", "שָׁלוֹם", "עִבְרִית",
    "नमस्ते दुनिया", "हिन्दी भाषा", "१२३",
    "สวัสดีชาวโลก", "ภาษาไทย",
    "Tiếng Việt có dấu", "Ελληνικά", "Հայերեն", "ქართული", "தமிழ்", "ಕನ್ನಡ", "አማርኛ",
]
EMOJI = ["😀", "😃😄😁", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷🇯🇵", "❤️", "✨", "🎉🎊", "🙈🙉🙊", "🐍", "☕", "⭐"]
COMBINING = ["e\u0301", "a\u0300", "n\u0303", "o\u0308\u0304", "Z\u0351\u036b\u0343", "\u1e0b\u0323", "a\u0323\u0302",
             "q\u0307\u0323", "\u212b", "\u2126", "\u0958", "\u0344", "e\u0301\u0301", "\u0301", "i\u0307"]
DECOMPOSED = [unicodedata.normalize("NFD", w) for w in ["café", "naïve", "résumé", "Ångström", "Ελληνικά", "Tiếng Việt"]]
SPACES = [" ", " ", " ", " ", "  ", "   ", "    ", "        ", "\t", "\t\t", " \t ", "\n", "\n\n", "\r\n", "\n  ",
          "\u00a0", "\u3000", "\u2028", "\u2029", "\u2009", "\u200b", "\ufeff", "\x0b", "\x0c", "\x85", " \u00a0 "]
PUNCT = list("!?.,;:-_()[]{}<>@#$%^&*+=/\\|~`'\"") + ["«»", "“”", "‘’", "—", "–", "…", "€", "£", "¥", "©", "®", "™", "°", "±",
                                                    "×", "÷", "!!", "?!", "...", "--", "==>", "->", "::", "**"]
CONTRACTIONS = ["don't", "I'm", "you're", "we've", "she'll", "he'd", "it's", "DON'T", "'quoted'", "'s", "rock'n'roll",
                "O'Neill", "y'all", "'re", "''", "can't"]
SPECIALS = ["<|endoftext|>", "<|padding|>", "<|endoftext|", "<|endoftext|><|endoftext|>", "<|pad"]
CODE = ["def f(x):\n    return x ** 2  # square", "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
        "if x == 1:\n        pass\n", "SELECT * FROM t WHERE id = 42;", "<div class=\"a\">text</div>",
        "x = {'key': [1, 2, 3]}", "   indented\n      more\n"]


def number(rng):
    kind = rng.randrange(9)
    if kind == 0:
        return str(rng.randrange(10))
    if kind == 1:
        return str(rng.randrange(10 ** rng.randrange(1, 12)))
    if kind == 2:
        return f"{rng.uniform(-1000, 1000):.{rng.randrange(1, 6)}f}"
    if kind == 3:
        return f"{rng.randrange(1, 999)},{rng.randrange(1000):03d},{rng.randrange(1000):03d}"
    if kind == 4:
        return f"{rng.randrange(1900, 2100)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
    if kind == 5:
        return f"{rng.randrange(24)}:{rng.randrange(60):02d}"
    if kind == 6:
        return f"{rng.uniform(1, 10):.3f}e-{rng.randrange(1, 30)}"
    if kind == 7:
        return rng.choice(["½", "¾", "Ⅻ", "１２３", "²", "³", "٣", "௧௨"])
    return "".join(rng.choice("0123456789") for _ in range(rng.randrange(12, 40)))


def segment(rng):
    kind = rng.randrange(16)
    if kind <= 4:
        words = [rng.choice(WORDS) for _ in range(rng.randrange(1, 8))]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        if rng.random() < 0.1:
            words = [w.upper() for w in words]
        return " ".join(words) + rng.choice(["", "", ".", ",", "!", "?", ":", ";"])
    if kind == 5:
        return number(rng)
    if kind == 6:
        return "".join(rng.choice(CJK) for _ in range(rng.randrange(1, 12)))
    if kind == 7:
        return rng.choice([KANA[i:i + rng.randrange(2, 9)] for i in range(0, len(KANA), 5)] + HANGUL)
    if kind == 8:
        return rng.choice(SCRIPTS)
    if kind == 9:
        return "".join(rng.choice(EMOJI) for _ in range(rng.randrange(1, 4)))
    if kind == 10:
        return rng.choice(WORDS)[: rng.randrange(1, 5)] + rng.choice(COMBINING) + rng.choice(["", "x", " ", "\u0327"])
    if kind == 11:
        return rng.choice(DECOMPOSED)
    if kind == 12:
        return "".join(rng.choice(PUNCT) for _ in range(rng.randrange(1, 4)))
    if kind == 13:
        return rng.choice(CONTRACTIONS)
    if kind == 14:
        return rng.choice(SPECIALS) if rng.random() < 0.5 else rng.choice(CODE)
    return "".join(chr(rng.choice([1, 7, 0x1B, 0x7F, 0x80, 0x9F, 0xAD, 0x1C])) for _ in range(rng.randrange(1, 3)))


def corpus(seed, count):
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        parts = [segment(rng) for _ in range(rng.randrange(1, 10))]
        line = ""
        for i, p in enumerate(parts):
            if i:
                line += rng.choice(SPACES) if rng.random() < 0.35 else " "
            line += p
        if rng.random() < 0.15:
            line = rng.choice(SPACES) + line
        if rng.random() < 0.15:
            line += rng.choice(SPACES)
        lines.append(line)
    return lines


# Cases worth one line each, whatever the random corpus holds.
EDGE_CASES = ["", " ", "  ", "   ", "    ", "     ", "\n", "\n\n\n", "\t", "a", "<|endoftext|>", " <|endoftext|> ",
              "<|endoftext|>a<|padding|>", "don't", " don't", "12345678901234567890", "a  b   c    d     e",
              "trailing   ", "   leading", "x\n\ny", "é", "e\u0301", "\u212b", "中文", "😀", "👨\u200d👩\u200d👧",
              "\u00a0\u00a0x", "\u3000x", "x\u2028y", "'s's's", "$$$ 100 %"] + CODE + SCRIPTS + EMOJI + COMBINING + DECOMPOSED


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parent / "tokenizer_fixture")
    parser.add_argument("--vocab-size", type=int, default=2000)
    args = parser.parse_args()

    import tokenizers
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    train_lines = corpus(seed=1, count=4000)
    test_lines = EDGE_CASES + corpus(seed=2, count=2500)

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(train_lines, trainer=trainer)
    tok.add_tokens([AddedToken("  ", normalized=True, special=False),
                    AddedToken("    ", normalized=True, special=False)])
    eot = tok.token_to_id("<|endoftext|>")

    base = json.loads(tok.to_str())
    prefix = Tokenizer.from_str(tok.to_str())
    prefix.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    prefix.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A", pair="<|endoftext|> $A $B",
                                                          special_tokens=[("<|endoftext|>", eot)])
    no_norm_doc = dict(base)
    no_norm_doc["normalizer"] = None
    no_norm = Tokenizer.from_str(json.dumps(no_norm_doc))

    variants = {"tokenizer.json": tok, "tokenizer_prefix_space.json": prefix, "tokenizer_no_normalizer.json": no_norm}
    args.out.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, t in variants.items():
        (args.out / name).write_text(t.to_str(pretty=True) + "\n", encoding="utf-8")
        ids = [t.encode(line).ids for line in test_lines]
        decoded = [t.decode(i, skip_special_tokens=False) for i in ids]
        if name == "tokenizer_no_normalizer.json":
            bad = [line for line, d in zip(test_lines, decoded) if d != line]
            if bad:
                print(f"warning: {name}: no exact round trip for {len(bad)} lines, e.g. {bad[:3]!r}", file=sys.stderr)
        if name == "tokenizer.json":
            bad = [line for line, d in zip(test_lines, decoded) if d != unicodedata.normalize("NFC", line)]
            if bad:
                print(f"warning: {name}: decode(encode(line)) != NFC(line) for {len(bad)} lines, e.g. {bad[:3]!r}",
                      file=sys.stderr)
        cases.append({"tokenizer": name, "ids": ids, "decoded": decoded})
    expected = {
        "generator": "tests/data/make_tokenizer_fixture.py",
        "tokenizers_version": tokenizers.__version__,
        "python_unicode_version": unicodedata.unidata_version,
        "lines": test_lines,
        "cases": cases,
    }
    (args.out / "expected.json").write_text(json.dumps(expected, ensure_ascii=True, separators=(",", ":")) + "\n",
                                            encoding="ascii")
    total = sum(len(i) for c in cases for i in c["ids"])
    print(f"wrote {args.out}: {len(test_lines)} lines, {len(variants)} tokenizers, {total} ids "
          f"(tokenizers {tokenizers.__version__}, vocab {tok.get_vocab_size()})", file=sys.stderr)


if __name__ == "__main__":
    main()
