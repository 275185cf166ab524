"""Train and export the tiny embedded text-to-image model (see README.md).

    /usr/bin/python3 tools/tiny-model/train.py            (about 28 min with 2 threads)

Stages: tokenizer -> procedural data -> VAE -> latents -> text encoder + UNet
-> ONNX export (+ configs) into packages/model-tiny/model/.
"""
import argparse
import json
import math
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import clip_tokenizer as ct  # noqa: E402
import grammar as g  # noqa: E402
from models import TextEncoder, UNet, VAEDecoder, VAEEncoder, n_params  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "packages", "model-tiny", "model")

# Noise schedule (must match scheduler/scheduler_config.json).
SCHED = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
P_UNCOND = 0.15  # captions dropped to "" for classifier-free guidance
P_NOISE_WORD = 0.1  # captions with out-of-grammar junk inserted (so the model learns to ignore it)
# Each colour word of a caption names a wrong colour with this probability (--p-wrong-colour), as web alt-text
# is imperfect: the conditional model alone then draws a wrong colour now and then, and classifier-free guidance
# (sampling towards p(caption | image)) corrects it, as it does for Stable Diffusion.
P_WRONG_COLOUR = 0.1


def alphas_cumprod():
    n = SCHED["num_train_timesteps"]
    betas = torch.linspace(SCHED["beta_start"] ** 0.5, SCHED["beta_end"] ** 0.5, n, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, 0)  # exactly as diffusers computes it


def grammar_words():
    ws = set(g.COLORS) | set(g.SHAPES) | set(g.SIZES)
    for p in g.POSITION_NAMES:
        ws |= set(g.position_phrase(p).split())
    ws |= {"a", "an", "on", "background"}
    return sorted(ws)


def to_tensor(imgs_u8):
    return torch.from_numpy(imgs_u8).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def log(msg, t0=[time.time()]):
    print(f"[{time.time() - t0[0]:7.1f}s] {msg}", flush=True)


def lr_at(step, total, base, warmup):
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


# ------------------------------------------------------------------------- VAE
def train_vae(imgs, args):
    torch.manual_seed(args.seed + 1)
    dev = args.device
    enc, dec = VAEEncoder().to(dev), VAEDecoder().to(dev)
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=args.vae_lr)
    gen = torch.Generator().manual_seed(args.seed + 2)
    n = imgs.shape[0]
    for step in range(args.vae_steps):
        for pg in opt.param_groups:
            pg["lr"] = lr_at(step, args.vae_steps, args.vae_lr, 50)
        idx = torch.randint(0, n, (args.vae_batch,), generator=gen)
        x = to_tensor(imgs[idx.numpy()]).to(dev)
        p = enc(x)
        mean, logvar = p[:, :4], p[:, 4:].clamp(-30.0, 20.0)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen).to(dev)
        y = dec(z)
        rec = F.mse_loss(y, x) + 0.5 * F.l1_loss(y, x)
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()
        loss = rec + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.vae_steps - 1:
            log(f"vae {step:5d} rec {rec.item():.5f} kl {kl.item():.3f}")
    return enc.cpu().eval(), dec.cpu().eval()


@torch.no_grad()
def encode_all(enc, imgs, bs=256):
    out = [enc(to_tensor(imgs[i : i + bs])) for i in range(0, imgs.shape[0], bs)]
    return torch.cat(out)


# ------------------------------------------------------------- text + UNet
JUNK_CHARS = "abcdefghijklmnopqrstuvwxyz"
JUNK_PUNCT = [",", ".", "!", "?", "-", "'s", "0", "1", "2", "3", "(", ")", ":", "&"]


def junk_word(rng):
    if rng.random() < 0.3:
        return rng.choice(JUNK_PUNCT)
    return "".join(rng.choice(JUNK_CHARS) for _ in range(rng.randint(1, 8)))


def wrong_colour(colour, p_wrong, rng):
    return rng.choice([c for c in g.COLORS if c != colour]) if rng.random() < p_wrong else colour


def make_caption(attrs, rng, p_wrong_colour):
    if rng.random() < P_UNCOND:
        return ""
    colour, shape, size, pos, bg = attrs
    cap = g.caption((wrong_colour(colour, p_wrong_colour, rng), shape, size, pos, wrong_colour(bg, p_wrong_colour, rng)), rng)
    if rng.random() < P_NOISE_WORD:
        words = cap.split(" ")
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randint(0, len(words)), junk_word(rng))
        cap = " ".join(words)
    return cap


def train_unet(tok, attrs, params, scale, args):
    torch.manual_seed(args.seed + 3)
    dev = args.device
    te = TextEncoder(len(tok.encoder), d=args.ctx_dim).to(dev)
    unet = UNet(ctx_dim=args.ctx_dim).to(dev)
    log(f"text encoder {n_params(te)} params, unet {n_params(unet)} params")
    ema_te, ema_unet = TextEncoder(len(tok.encoder), d=args.ctx_dim), UNet(ctx_dim=args.ctx_dim)
    ema_te.to(dev), ema_unet.to(dev)
    ema_te.load_state_dict(te.state_dict())
    ema_unet.load_state_dict(unet.state_dict())
    live = list(te.parameters()) + list(unet.parameters())
    shadow = list(ema_te.parameters()) + list(ema_unet.parameters())
    opt = torch.optim.AdamW(live, lr=args.lr, weight_decay=0.01)
    ac = alphas_cumprod()
    snr = ac / (1 - ac)
    gen = torch.Generator().manual_seed(args.seed + 4)
    rng = random.Random(args.seed + 5)
    mean, logvar = params[:, :4], params[:, 4:].clamp(-30.0, 20.0)
    std = torch.exp(0.5 * logvar)
    n = mean.shape[0]
    for step in range(args.steps):
        for pg in opt.param_groups:
            pg["lr"] = lr_at(step, args.steps, args.lr, 200)
        # each (latent, caption) pair is used twice, at two noise levels: halves the text-encoder work
        idx = torch.randint(0, n, (args.batch // 2,), generator=gen)
        ids = torch.tensor([tok(make_caption(attrs[i], rng, args.p_wrong_colour)) for i in idx.tolist()], dtype=torch.int32)
        idx = torch.cat([idx, idx])
        x0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale
        t = torch.randint(0, SCHED["num_train_timesteps"], (args.batch,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = ac[t].view(-1, 1, 1, 1)
        x0, ids, t, eps, a = x0.to(dev), ids.to(dev), t.to(dev), eps.to(dev), a.to(dev)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        ctx = te(ids)
        pred = unet(xt, t.float(), torch.cat([ctx, ctx]))
        # eps-loss weight = (min(SNR, gamma) + kappa) / SNR: min-SNR-gamma plus kappa * (x0-space loss), which
        # lifts the high-noise steps where the layout (the prompt's position words) is decided
        st = snr.to(dev)[t]
        w = (torch.clamp(st, max=args.min_snr) + args.x0_weight) / st  # min-SNR-gamma weighting (eps-pred)
        loss = ((pred - eps).square().mean(dim=(1, 2, 3)) * w).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(live, 1.0)
        opt.step()
        d = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for s, p in zip(shadow, live):
                s.mul_(d).add_(p.detach(), alpha=1 - d)
        if step % 100 == 0 or step == args.steps - 1:
            log(f"unet {step:5d} loss {loss.item():.4f}")
    return ema_te.cpu().eval(), ema_unet.cpu().eval()


# ------------------------------------------------------------------------ export
def export_all(out, tok_vocab, tok_merges, enc, dec, te, unet, scale, args):
    ct.save(os.path.join(out, "tokenizer"), tok_vocab, tok_merges)

    def dump(name, obj):
        path = os.path.join(out, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    def onnx(model, inputs, names_in, names_out, folder):
        os.makedirs(os.path.join(out, folder), exist_ok=True)
        dyn = {k: {0: "batch"} for k in names_in + names_out}
        torch.onnx.export(
            model, inputs, os.path.join(out, folder, "model.onnx"), input_names=names_in,
            output_names=names_out, dynamic_axes=dyn, opset_version=17, do_constant_folding=True,
        )

    D = args.ctx_dim
    if args.skip_onnx:
        return
    with torch.no_grad():
        onnx(te, (torch.ones(2, 77, dtype=torch.int32),), ["input_ids"], ["last_hidden_state"], "text_encoder")
        onnx(unet, (torch.randn(2, 4, 8, 8), torch.tensor([999.0, 1.0]), torch.randn(2, 77, D)),
             ["sample", "timestep", "encoder_hidden_states"], ["out_sample"], "unet")
        onnx(dec, (torch.randn(2, 4, 8, 8),), ["latent_sample"], ["sample"], "vae_decoder")
        onnx(enc, (torch.randn(2, 3, 64, 64),), ["sample"], ["latent_parameters"], "vae_encoder")

    v = "0.21.0"
    dump("text_encoder/config.json", {
        "_class_name": "CLIPTextModel", "architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
        "vocab_size": len(tok_vocab), "hidden_size": D, "intermediate_size": 2 * D,
        "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77,
        "hidden_act": "gelu", "bos_token_id": tok_vocab[ct.BOS], "eos_token_id": tok_vocab[ct.EOS],
        "pad_token_id": tok_vocab[ct.EOS], "torch_dtype": "float32",
    })
    dump("unet/config.json", {
        "_class_name": "UNet2DConditionModel", "_diffusers_version": v, "in_channels": 4, "out_channels": 4,
        "sample_size": 8, "cross_attention_dim": D, "block_out_channels": [64, 96],
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 1, "attention_head_dim": 2, "norm_num_groups": 16,
        "flip_sin_to_cos": True, "freq_shift": 0, "act_fn": "silu",
    })
    vae_cfg = {
        "_class_name": "AutoencoderKL", "_diffusers_version": v, "in_channels": 3, "out_channels": 3,
        "latent_channels": 4, "sample_size": 64, "scaling_factor": round(float(scale), 6),
        # 4 entries: the pipeline derives the 8x down-sampling factor as 2 ** (len - 1)
        "block_out_channels": [16, 32, 64, 96], "act_fn": "silu",
    }
    dump("vae_decoder/config.json", vae_cfg)
    dump("vae_encoder/config.json", vae_cfg)
    dump("scheduler/scheduler_config.json", {
        "_class_name": "DDIMScheduler", "_diffusers_version": v, "num_train_timesteps": SCHED["num_train_timesteps"],
        "beta_start": SCHED["beta_start"], "beta_end": SCHED["beta_end"], "beta_schedule": SCHED["beta_schedule"],
        "trained_betas": None, "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
        "prediction_type": "epsilon", "timestep_spacing": "leading", "skip_prk_steps": True,
        "thresholding": False, "rescale_betas_zero_snr": False,
    })
    dump("model_index.json", {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": v,
        "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["diffusers", "OnnxRuntimeModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "OnnxRuntimeModel"],
        "vae_decoder": ["diffusers", "OnnxRuntimeModel"], "vae_encoder": ["diffusers", "OnnxRuntimeModel"],
    })


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--work", default="/tmp/tiny-model-work", help="checkpoints (outside the repo)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--n-images", type=int, default=40000)
    ap.add_argument("--vae-steps", type=int, default=1200)
    ap.add_argument("--vae-batch", type=int, default=48)
    ap.add_argument("--vae-lr", type=float, default=2e-3)
    ap.add_argument("--vae-kl", type=float, default=1e-4)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--min-snr", type=float, default=5.0)
    ap.add_argument("--x0-weight", type=float, default=0.1)
    ap.add_argument("--ctx-dim", type=int, default=64)
    ap.add_argument("--p-wrong-colour", type=float, default=P_WRONG_COLOUR, help="share of wrong colour words")
    ap.add_argument("--reuse-vae", action="store_true", help="load VAE + latents from --work")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-onnx", action="store_true")
    ap.add_argument("--export-only", action="store_true", help="re-export from the checkpoints in --work")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):  # experiments only: keep fp32 maths
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    os.makedirs(args.work, exist_ok=True)
    t_start = time.time()
    log(f"torch {torch.__version__}, {args.threads} threads, args {vars(args)}")

    vocab, merges = ct.build(grammar_words())
    tok = ct.CLIPTokenizer(vocab, merges)
    log(f"tokenizer: {len(vocab)} tokens, {len(merges)} merges")
    if args.export_only:
        vae, diff = torch.load(os.path.join(args.work, "vae.pt")), torch.load(os.path.join(args.work, "diffusion.pt"))
        enc, dec = VAEEncoder(), VAEDecoder()
        enc.load_state_dict(vae["enc"])
        dec.load_state_dict(vae["dec"])
        te, unet = TextEncoder(diff["vocab_size"], d=diff["ctx_dim"]), UNet(ctx_dim=diff["ctx_dim"])
        te.load_state_dict(diff["te"])
        unet.load_state_dict(diff["unet"])
        for m in (enc, dec, te, unet):
            m.eval()
        export_all(args.out, vocab, merges, enc, dec, te, unet, diff["scale"], args)
        log(f"re-exported to {args.out}")
        return

    attrs, imgs = g.make_dataset(args.n_images, args.seed)
    log(f"rendered {len(attrs)} scenes")
    vae_ckpt = os.path.join(args.work, "vae.pt")
    if args.reuse_vae and os.path.exists(vae_ckpt):
        enc, dec = VAEEncoder(), VAEDecoder()
        ck = torch.load(vae_ckpt)
        enc.load_state_dict(ck["enc"])
        dec.load_state_dict(ck["dec"])
        enc.eval(), dec.eval()
    else:
        enc, dec = train_vae(imgs, args)
        torch.save({"enc": enc.state_dict(), "dec": dec.state_dict()}, vae_ckpt)
    t_vae = time.time()
    params = encode_all(enc, imgs)
    mean, logvar = params[:, :4], params[:, 4:].clamp(-30, 20)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=torch.Generator().manual_seed(args.seed))
    scale = 1.0 / z.std().item()
    with torch.no_grad():
        rec = dec(mean[:512])
        err = (rec.clamp(-1, 1) - to_tensor(imgs[:512])).abs().mean().item()
    log(f"latents: mean {z.mean():.3f} std {z.std():.3f} -> scaling_factor {scale:.5f}; "
        f"logvar mean {logvar.mean():.2f}; recon L1 {err:.4f}")
    del imgs

    te, unet = train_unet(tok, attrs, params, scale, args)
    t_unet = time.time()
    torch.save({"te": te.state_dict(), "unet": unet.state_dict(), "scale": scale, "vocab_size": len(vocab),
                "ctx_dim": args.ctx_dim}, os.path.join(args.work, "diffusion.pt"))
    export_all(args.out, vocab, merges, enc, dec, te, unet, scale, args)
    t_end = time.time()
    sizes = {d: os.path.getsize(os.path.join(args.out, d, "model.onnx"))
             for d in ("text_encoder", "unet", "vae_decoder", "vae_encoder") if not args.skip_onnx}
    log(f"exported to {args.out}: {sizes} total {sum(sizes.values())} bytes")
    log(f"timing: data+vae {t_vae - t_start:.0f}s, unet {t_unet - t_vae:.0f}s, export {t_end - t_unet:.0f}s, "
        f"total {t_end - t_start:.0f}s")


if __name__ == "__main__":
    main()
