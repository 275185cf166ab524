"""Write eval_cases.json: palette, classifier rules and 48 (prompt, seed) cases.

    /usr/bin/python3 tools/tiny-model/make_eval_cases.py
"""
import json
import os
import random
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import clip_tokenizer as ct  # noqa: E402
import grammar as g  # noqa: E402
from train import grammar_words  # noqa: E402


def cases():
    rng = random.Random(2024)
    out = []
    for i in range(48):
        color = g.COLORS[i % 8]
        bg = g.COLORS[(i % 8 + 1 + (i // 8 + 3 * (i % 2)) % 7) % 8]
        shape, size, pos = g.SHAPES[(i + i // 8) % 4], g.SIZES[(i // 4) % 3], rng.choice(g.POSITION_NAMES)
        if i % 6 == 5:  # a few shorter phrasings
            prompt = f"{g.article(color)} {color} {shape} on {g.article(bg)} {bg} background"
        elif i % 6 == 2:
            prompt = f"{g.article(size)} {size} {color} {shape} on {g.article(bg)} {bg} background"
        else:
            prompt = g.full_prompt(color, shape, size, pos, bg)
        out.append({"prompt": prompt, "seed": 1000 + 7 * i, "shape_color": color, "background_color": bg,
                    "position": pos if i % 6 not in (2, 5) else None})
    return out


def main():
    vocab, merges = ct.build(grammar_words())
    tok = ct.CLIPTokenizer(vocab, merges)

    def ids(p):
        full = tok(p)
        return full[: full.index(tok.eos_id) + 1]

    cs = cases()
    for c in cs:
        c["input_ids"] = ids(c["prompt"])
    doc = {
        "description": "Quality check for @diff/model-tiny: generate each prompt (64x64, DDIM 20 steps, "
        "guidance 7.5) and classify the image's shape and background colours with the rules below.",
        "image": {"width": 64, "height": 64, "num_inference_steps": 20, "guidance_scale": 7.5,
                  "compare_guidance_scale": 1.0},
        "palette": {k: list(v) for k, v in g.PALETTE.items()},
        "classifier": {
            "pixels": "uint8 RGB as the pipeline outputs them: round((clamp(x,-1,1)/2+0.5)*255)",
            "background": f"median (per channel) of all pixels within {g.BG_BORDER} px of the image border",
            "shape_pixels": f"pixels whose Euclidean RGB distance to the background median is > {g.FAR_THRESHOLD}",
            "shape": f"median (per channel) of the shape pixels; no shape (a miss) if fewer than {g.MIN_SHAPE_PIXELS}",
            "color_name": "nearest palette colour by squared RGB distance",
            "pass": "shape colour == shape_color and background colour == background_color",
            "border_px": g.BG_BORDER, "far_threshold": g.FAR_THRESHOLD, "min_shape_pixels": g.MIN_SHAPE_PIXELS,
        },
        "tokenizer_check": {
            "note": "input_ids below are the unpadded [bos ... eos]; pad with eos to 77",
            "empty_prompt": ids(""),
            "out_of_grammar": {p: ids(p) for p in ("A cat, riding a Bike!", "Ünïcödé 42 don't", "big   BLUE\tstar")},
        },
        "cases": cs,
    }
    text = json.dumps({k: v for k, v in doc.items() if k != "cases"}, indent=2, ensure_ascii=False)
    text = re.sub(r"\[\s*([-\d.,\s]+?)\s*\]", lambda m: "[" + re.sub(r"\s*,\s*", ", ", m.group(1)) + "]", text)
    text = text[:-2] + ',\n  "cases": [\n' + ",\n".join("    " + json.dumps(c, ensure_ascii=False) for c in cs) + "\n  ]\n}\n"
    json.loads(text)
    with open(os.path.join(HERE, "eval_cases.json"), "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {len(cs)} cases")


if __name__ == "__main__":
    main()
