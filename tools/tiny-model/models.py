"""Tiny SD-1.5-shaped networks: VAE (8x down, 4 latent channels), CLIP-like
causal text encoder, and a cross-attention UNet on 8x8 latents. Written so the
TorchScript ONNX exporter (opset 17) yields graphs with a dynamic batch axis."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_LEN = 77


# ----------------------------------------------------------------------------- VAE
class VRes(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.c2(F.silu(self.c1(F.silu(x))))


class VAEEncoder(nn.Module):
    """[B,3,64,64] in [-1,1] -> [B,8,8,8] = mean ++ logvar."""

    def __init__(self, ch=(32, 64, 96), zc=4):
        super().__init__()
        c0, c1, c2 = ch
        self.net = nn.Sequential(
            nn.Conv2d(3, c0, 4, stride=2, padding=1),  # @32
            VRes(c0),
            nn.SiLU(),
            nn.Conv2d(c0, c1, 3, stride=2, padding=1),  # @16
            VRes(c1),
            nn.SiLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),  # @8
            nn.SiLU(),
            nn.Conv2d(c2, c2, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(c2, 2 * zc, 3, padding=1),
        )

    def forward(self, x):
        return self.net(x)


class VAEDecoder(nn.Module):
    """[B,4,8,8] (unscaled latents) -> [B,3,64,64] in about [-1,1]."""

    def __init__(self, ch=(96, 64, 32), zc=4):
        super().__init__()
        c0, c1, c2 = ch
        self.net = nn.Sequential(
            nn.Conv2d(zc, c0, 3, padding=1),
            VRes(c0),
            nn.SiLU(),
            nn.Upsample(scale_factor=2.0, mode="nearest"),
            nn.Conv2d(c0, c1, 3, padding=1),  # @16
            VRes(c1),
            nn.SiLU(),
            nn.Upsample(scale_factor=2.0, mode="nearest"),
            nn.Conv2d(c1, c2, 3, padding=1),  # @32
            VRes(c2),
            nn.SiLU(),
            nn.Conv2d(c2, 12, 3, padding=1),
            nn.PixelShuffle(2),  # 3 @ 64
        )

    def forward(self, z):
        return self.net(z)


# ---------------------------------------------------------------------- attention
class Attention(nn.Module):
    def __init__(self, dim, heads, ctx_dim=None, causal_len=None):
        super().__init__()
        ctx_dim = ctx_dim or dim
        self.h, self.d = heads, dim // heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(ctx_dim, dim, bias=False)
        self.v = nn.Linear(ctx_dim, dim, bias=False)
        self.o = nn.Linear(dim, dim)
        if causal_len:
            m = torch.full((causal_len, causal_len), -1e9).triu(1)
            self.register_buffer("mask", m, persistent=False)
        else:
            self.mask = None

    def forward(self, x, ctx=None):
        ctx = x if ctx is None else ctx
        n, m = x.shape[1], ctx.shape[1]
        q = self.q(x).reshape(-1, n, self.h, self.d).transpose(1, 2)
        k = self.k(ctx).reshape(-1, m, self.h, self.d).transpose(1, 2)
        v = self.v(ctx).reshape(-1, m, self.h, self.d).transpose(1, 2)
        a = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.d))
        if self.mask is not None:
            a = a + self.mask
        y = a.softmax(-1) @ v
        return self.o(y.transpose(1, 2).reshape(-1, n, self.h * self.d))


# ------------------------------------------------------------------- text encoder
class TextLayer(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads, causal_len=MAX_LEN)
        self.fc1, self.fc2 = nn.Linear(d, ff * d), nn.Linear(ff * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TextEncoder(nn.Module):
    """input_ids [B,77] -> last_hidden_state [B,77,D] (CLIP-like, causal)."""

    def __init__(self, vocab_size, d=64, layers=2, heads=2, ff=2):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d)
        self.pos = nn.Parameter(torch.zeros(MAX_LEN, d))
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.01)
        self.layers = nn.ModuleList([TextLayer(d, heads, ff) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)

    def forward(self, ids):
        x = self.tok(ids.long()) + self.pos
        for l in self.layers:
            x = l(x)
        return self.ln(x)


# ---------------------------------------------------------------------------- UNet
def gn(c):
    return nn.GroupNorm(16 if c % 16 == 0 else 8, c)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, tdim):
        super().__init__()
        self.n1, self.c1 = gn(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(tdim, cout)
        self.n2, self.c2 = gn(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, temb):
        h = self.c1(F.silu(self.n1(x)))
        h = h + self.t(temb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


def sincos_2d(c, size):
    """[size*size, c] 2-D sine-cosine position code (half the channels for x, half for y)."""
    q = c // 4
    freqs = torch.exp(-math.log(100.0) * torch.arange(q, dtype=torch.float32) / q)
    pos = torch.arange(size, dtype=torch.float32)[:, None] * freqs[None]  # [size, q]
    code = torch.cat([pos.sin(), pos.cos()], 1)  # [size, 2q]
    yy, xx = code[:, None, :].expand(size, size, 2 * q), code[None, :, :].expand(size, size, 2 * q)
    return torch.cat([xx, yy], -1).reshape(size * size, 4 * q)


class SpatialTransformer(nn.Module):
    def __init__(self, c, ctx_dim, heads, ff=4, size=8):
        super().__init__()
        self.norm = gn(c)
        self.proj_in = nn.Conv2d(c, c, 1)
        # learned absolute position embedding (attention alone is blind to "left"/"top"...)
        self.pos = nn.Parameter(0.5 * sincos_2d(c, size)[None])
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(c), nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn1 = Attention(c, heads)
        self.attn2 = Attention(c, heads, ctx_dim)
        self.ff1, self.ff2 = nn.Linear(c, 2 * ff * c), nn.Linear(ff * c, c)  # gated (SwiGLU)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x, ctx):
        c, hh, ww = x.shape[1], x.shape[2], x.shape[3]
        h = self.proj_in(self.norm(x))
        h = h.reshape(-1, c, hh * ww).transpose(1, 2) + self.pos
        h = h + self.attn1(self.ln1(h))
        h = h + self.attn2(self.ln2(h), ctx)
        a, g = self.ff1(self.ln3(h)).chunk(2, dim=-1)
        h = h + self.ff2(a * F.silu(g))
        h = h.transpose(1, 2).reshape(-1, c, hh, ww)
        return x + self.proj_out(h)


class UNet(nn.Module):
    """sample [B,4,8,8], timestep [B] (float), encoder_hidden_states [B,77,D] -> eps."""

    def __init__(self, ctx_dim=64, c0=64, c1=96, tdim=128, heads=2, ff0=4, ff1=2):
        super().__init__()
        self.tfreq = 64
        self.t1, self.t2 = nn.Linear(self.tfreq, tdim), nn.Linear(tdim, tdim)
        self.conv_in = nn.Conv2d(4, c0, 3, padding=1)
        self.d0r, self.d0a = ResBlock(c0, c0, tdim), SpatialTransformer(c0, ctx_dim, heads, ff0, 8)
        self.down = nn.Conv2d(c0, c1, 3, stride=2, padding=1)
        self.d1r, self.d1a = ResBlock(c1, c1, tdim), SpatialTransformer(c1, ctx_dim, heads, ff1, 4)
        self.u1r, self.u1a = ResBlock(c1, c1, tdim), SpatialTransformer(c1, ctx_dim, heads, ff1, 4)
        self.up = nn.Conv2d(c1, c0, 3, padding=1)
        self.u0r, self.u0a = ResBlock(2 * c0, c0, tdim), SpatialTransformer(c0, ctx_dim, heads, ff0, 8)
        self.n_out, self.conv_out = gn(c0), nn.Conv2d(c0, 4, 3, padding=1)
        half = self.tfreq // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, sample, timestep, encoder_hidden_states):
        ctx = encoder_hidden_states
        a = timestep.reshape(-1, 1).float() * self.freqs[None]
        temb = torch.cat([torch.cos(a), torch.sin(a)], dim=-1)
        temb = self.t2(F.silu(self.t1(temb)))
        x = self.conv_in(sample)
        h0 = self.d0a(self.d0r(x, temb), ctx)
        x = self.down(h0)
        h1 = self.d1a(self.d1r(x, temb), ctx)
        x = self.u1a(self.u1r(h1, temb), ctx)
        x = self.up(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        x = self.u0a(self.u0r(torch.cat([x, h0], 1), temb), ctx)
        return self.conv_out(F.silu(self.n_out(x)))


def n_params(m):
    return sum(p.numel() for p in m.parameters())
