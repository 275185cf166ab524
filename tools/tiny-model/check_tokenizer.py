"""Compare clip_tokenizer.py with transformers' CLIPTokenizer (and CLIPTokenizerFast) on the
exported vocab/merges. Needs `transformers` (not a Debian package; run it where it is installed).

    python3 tools/tiny-model/check_tokenizer.py [--model packages/model-tiny/model]
"""
import argparse
import os
import random
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import clip_tokenizer as ct  # noqa: E402
import grammar as g  # noqa: E402


def texts():
    rng = random.Random(0)
    out = ["", " ", "a red circle", "A  Small RED circle on the LEFT\ton a blue background.",
           "it's a star, isn't it? we'll see; they'd've", "123 4.5 circles!!", "Ünïcödé café ÉCOLE naïve",
           "emoji 🙂 and 中文 text", "<|startoftext|>hello<|endoftext|>", "cirrcle sqare trianglee starr",
           "redblue bluered backgrounds", "a-b_c/d\\e", "x" * 300, "word " * 100]
    out += [g.caption(g.random_attrs(rng), rng) for _ in range(200)]
    out += [" ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz,.!'") for _ in range(rng.randint(1, 9)))
                     for _ in range(rng.randint(1, 12))) for _ in range(300)]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="tokenizer folder's parent; default: build it afresh")
    args = ap.parse_args()
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    if args.model:
        folder = os.path.join(args.model, "tokenizer")
    else:
        from train import grammar_words
        folder = tempfile.mkdtemp()
        ct.save(folder, *ct.build(grammar_words()))
    ours = ct.CLIPTokenizer.load(folder)
    bad = 0
    for cls in (CLIPTokenizer, CLIPTokenizerFast):
        hf = cls.from_pretrained(folder)
        for t in texts():
            ref = hf(t, padding="max_length", max_length=77, truncation=True).input_ids
            if ref != ours(t):
                bad += 1
                print(f"{cls.__name__} mismatch for {t!r}:\n  hf   {ref[:20]}\n  ours {ours(t)[:20]}")
    print(f"{len(texts())} texts x 2 tokenizers, {bad} mismatches")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
