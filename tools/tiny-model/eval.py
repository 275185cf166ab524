"""DDIM + classifier-free-guidance sampling over the trained networks (PyTorch
copies of the exported weights) and the 48-case colour check of eval_cases.json.

    /usr/bin/python3 tools/tiny-model/eval.py [--work /tmp/tiny-model-work] [--samples /tmp/tiny-model-samples]
        [--guidance 7.5 1] [--random 240]

--random N adds a held-out check beyond the 48 fixed cases: N random fully specified prompts with random seeds.

(eval.mjs runs the same check on the exported ONNX files with onnxruntime-node.)
"""
import argparse
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import clip_tokenizer as ct  # noqa: E402
import grammar as g  # noqa: E402
from models import TextEncoder, UNet, VAEDecoder, VAEEncoder  # noqa: E402
from train import DEFAULT_OUT, alphas_cumprod  # noqa: E402


def ddim_timesteps(steps, n_train=1000, offset=1):
    ratio = n_train // steps
    return (np.arange(0, steps) * ratio).round()[::-1].astype(np.int64) + offset  # "leading"


@torch.no_grad()
def generate(te, unet, dec, tok, scale, prompts, seeds, guidance=7.5, steps=20):
    ac = alphas_cumprod().double()
    cond = te(torch.tensor([tok(p) for p in prompts], dtype=torch.int32))
    uncond = te(torch.tensor([tok("")] * len(prompts), dtype=torch.int32))
    x = torch.cat([torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(s)) for s in seeds])
    ratio = 1000 // steps
    for t in ddim_timesteps(steps):
        # diffusers applies CFG only for guidance > 1; here every value but 1 is applied, for diagnostics:
        # 0 = the unconditional model, 1 - g = what swapping the [uncond; cond] halves would give
        if guidance != 1.0:
            eps_u, eps_c = unet(torch.cat([x, x]), torch.full((2 * len(x),), float(t)), torch.cat([uncond, cond])).chunk(2)
            eps = eps_u + guidance * (eps_c - eps_u)
        else:
            eps = unet(x, torch.full((len(x),), float(t)), cond)
        a_t = ac[t]
        prev = t - ratio
        a_prev = ac[prev] if prev >= 0 else ac[0]  # set_alpha_to_one = False
        x0 = (x.double() - (1 - a_t).sqrt() * eps.double()) / a_t.sqrt()
        x = (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps.double()).float()
    img = dec(x / scale).clamp(-1, 1)
    return ((img / 2 + 0.5) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def grid(imgs, cols=8, zoom=2):
    rows = [np.concatenate(list(imgs[i : i + cols]), 1) for i in range(0, len(imgs), cols)]
    if rows[-1].shape != rows[0].shape:
        rows[-1] = np.pad(rows[-1], ((0, 0), (0, rows[0].shape[1] - rows[-1].shape[1]), (0, 0)))
    im = Image.fromarray(np.concatenate(rows, 0))
    return im.resize((im.width * zoom, im.height * zoom), Image.NEAREST)


def score(imgs, cases):
    ok, details = 0, []
    for im, c in zip(imgs, cases):
        s, b = g.classify(im)
        hit = s == c["shape_color"] and b == c["background_color"]
        ok += hit
        details.append((hit, s, b))
    return ok / len(cases), details


def position_score(imgs, cases):
    """Informational: share of the cases naming a position whose shape centroid lies in that region."""
    pairs = [(im, c) for im, c in zip(imgs, cases) if c.get("position")]
    return sum(g.locate(im) == g.POSITIONS[c["position"]] for im, c in pairs), len(pairs)


def random_check(te, unet, dec, tok, scale, n, guidances, batch=48):
    """Colour and position accuracy on n random fully specified prompts and seeds (random.Random(99))."""
    rng = random.Random(99)
    cases = []
    for _ in range(n):
        color, shape, size, pos, bg = g.random_attrs(rng)
        cases.append((g.full_prompt(color, shape, size, pos, bg), rng.randrange(1 << 30), color, bg, pos))
    for gs in guidances:
        both = shapes = backgrounds = positions = 0
        for k in range(0, n, batch):
            chunk = cases[k : k + batch]
            imgs = generate(te, unet, dec, tok, scale, [c[0] for c in chunk], [c[1] for c in chunk], guidance=gs)
            for im, (_, _, color, bg, pos) in zip(imgs, chunk):
                s, b = g.classify(im)
                both += s == color and b == bg
                shapes += s == color
                backgrounds += b == bg
                positions += g.locate(im) == g.POSITIONS[pos]
        pct = lambda k: f"{k / n * 100:.1f}%"  # noqa: E731
        print(f"random {n}, guidance {gs}: colours {pct(both)} (shape {pct(shapes)}, background {pct(backgrounds)}); "
              f"position {pct(positions)}")


@torch.no_grad()
def dump_ref(path, te, unet, dec, enc, tok, cases):
    """Reference tensors for eval.mjs's ONNX parity check (batch 3) and torch's initial noise."""
    gen = torch.Generator().manual_seed(7)
    ids = [tok(p) for p in ("a small red circle on the left on a blue background", "", "a cat on a mat!")]
    te_out = te(torch.tensor(ids, dtype=torch.int32))
    sample, t = torch.randn((3, 4, 8, 8), generator=gen), torch.tensor([951.0, 501.0, 1.0])
    dec_in = torch.randn((3, 4, 8, 8), generator=gen) * 1.5
    enc_in = torch.rand((3, 3, 64, 64), generator=gen) * 2 - 1
    flat = lambda x: [round(v, 7) for v in x.flatten().tolist()]  # noqa: E731
    ref = {
        "ids": ids, "te_out": flat(te_out), "unet_sample": flat(sample), "unet_t": t.tolist(),
        "unet_out": flat(unet(sample, t, te_out)), "dec_in": flat(dec_in), "dec_out": flat(dec(dec_in)),
        "enc_in": flat(enc_in), "enc_out": flat(enc(enc_in)),
        "init_noise": {c["seed"]: flat(torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(c["seed"])))
                       for c in cases},
    }
    with open(path, "w") as f:
        json.dump(ref, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/tiny-model-work")
    ap.add_argument("--model", default=DEFAULT_OUT, help="for the tokenizer")
    ap.add_argument("--samples", default="/tmp/tiny-model-samples")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--guidance", type=float, nargs="*", default=[7.5, 1.0])
    ap.add_argument("--random", type=int, default=0, help="also check this many random prompts and seeds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = ct.CLIPTokenizer.load(os.path.join(args.model, "tokenizer"))
    ck = torch.load(os.path.join(args.work, "diffusion.pt"))
    te, unet = TextEncoder(ck["vocab_size"], d=ck["ctx_dim"]), UNet(ctx_dim=ck["ctx_dim"])
    te.load_state_dict(ck["te"])
    unet.load_state_dict(ck["unet"])
    dec, enc = VAEDecoder(), VAEEncoder()
    vae = torch.load(os.path.join(args.work, "vae.pt"))
    dec.load_state_dict(vae["dec"])
    enc.load_state_dict(vae["enc"])
    for m in (te, unet, dec, enc):
        m.eval()
    with open(os.path.join(HERE, "eval_cases.json"), encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    dump_ref(os.path.join(args.work, "ref.json"), te, unet, dec, enc, tok, cases)
    os.makedirs(args.samples, exist_ok=True)
    prompts, seeds = [c["prompt"] for c in cases], [c["seed"] for c in cases]
    for gs in args.guidance:
        imgs = generate(te, unet, dec, tok, ck["scale"], prompts, seeds, guidance=gs)
        acc, details = score(imgs, cases)
        pos_ok, pos_n = position_score(imgs, cases)
        print(f"guidance {gs}: {acc * 100:.1f}% ({sum(d[0] for d in details)}/{len(cases)}) colour matches; "
              f"position {pos_ok}/{pos_n} (informational)")
        for c, (hit, s, b) in zip(cases, details):
            if not hit:
                print(f"   miss: {c['prompt']!r} seed {c['seed']} -> shape {s}, background {b}")
        grid(imgs).save(os.path.join(args.samples, f"eval48_guidance{gs}.png"))
    extra = ["a large red circle in the center on a blue background", "a yellow star on a black background",
             "a small green triangle in the top left corner on a white background",
             "a large purple square at the bottom on an orange background", "a blue star", "a white circle on the right",
             "a cat riding a bike", ""]
    imgs = generate(te, unet, dec, tok, ck["scale"], extra, list(range(len(extra))))
    grid(imgs, zoom=3).save(os.path.join(args.samples, "examples.png"))
    print(f"samples in {args.samples}")
    if args.random:
        random_check(te, unet, dec, tok, ck["scale"], args.random, args.guidance)


if __name__ == "__main__":
    main()
