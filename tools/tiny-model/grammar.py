"""Prompt grammar and procedural renderer for the tiny scene model.

A scene is one shape (circle/square/triangle/star) of one palette colour, with a
size and a position, on a flat background of another palette colour, 64x64 RGB.
"""
import math
import random

import numpy as np
from PIL import Image, ImageDraw

# Named palette (RGB). The evaluation classifies pixels by the nearest of these.
PALETTE = {
    "red": (220, 40, 40),
    "orange": (250, 140, 30),
    "yellow": (250, 220, 40),
    "green": (40, 170, 70),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
COLORS = list(PALETTE)
SHAPES = ["circle", "square", "triangle", "star"]
SIZES = ["small", "medium", "large"]
# Position name -> (x, y) anchor in {-1, 0, 1}; -1 = left / top.
POSITIONS = {
    "left": (-1, 0),
    "right": (1, 0),
    "top": (0, -1),
    "bottom": (0, 1),
    "center": (0, 0),
    "top left": (-1, -1),
    "top right": (1, -1),
    "bottom left": (-1, 1),
    "bottom right": (1, 1),
}
POSITION_NAMES = list(POSITIONS)
RADIUS = {"small": 7.0, "medium": 12.0, "large": 17.0}
SIZE_PX = 64
SS = 4  # supersampling factor for anti-aliased edges
MARGIN = 3.0
JITTER = 2.5


def position_phrase(pos: str) -> str:
    if pos in ("left", "right"):
        return f"on the {pos}"
    if pos in ("top", "bottom"):
        return f"at the {pos}"
    if pos == "center":
        return "in the center"
    return f"in the {pos} corner"


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def full_prompt(color, shape, size, pos, bg) -> str:
    """Canonical, fully specified prompt (used for evaluation)."""
    return f"{article(size)} {size} {color} {shape} {position_phrase(pos)} on {article(bg)} {bg} background"


def caption(attrs, rng: random.Random) -> str:
    """A random phrasing of the scene; optional parts may be left out."""
    color, shape, size, pos, bg = attrs
    words = []
    if rng.random() < 0.75:
        words.append(size)
    words += [color, shape]
    head = f"{article(words[0])} " + " ".join(words)
    pos_p = position_phrase(pos) if rng.random() < 0.75 else None
    bg_p = f"on {article(bg)} {bg} background" if rng.random() < 0.85 else None
    parts = [head]
    if pos_p and bg_p and rng.random() < 0.15:
        parts += [bg_p, pos_p]
    else:
        parts += [p for p in (pos_p, bg_p) if p]
    return " ".join(parts)


def random_attrs(rng: random.Random):
    color = rng.choice(COLORS)
    bg = rng.choice([c for c in COLORS if c != color])
    return (color, rng.choice(SHAPES), rng.choice(SIZES), rng.choice(POSITION_NAMES), bg)


def _shape_points(shape, cx, cy, r):
    if shape == "square":
        s = r * 0.88
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        R = r * 1.2
        cy = cy + 0.2 * R
        return [(cx + R * math.cos(a), cy + R * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "star":
        R, ri = r * 1.15, r * 1.15 * 0.45
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rr = R if k % 2 == 0 else ri
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a) + 0.05 * R))
        return pts
    raise ValueError(shape)


def render(attrs, rng: random.Random) -> np.ndarray:
    """Draw a scene; returns uint8 [64, 64, 3]."""
    color, shape, size, pos, bg = attrs
    r = RADIUS[size] * rng.uniform(0.92, 1.08)
    ax, ay = POSITIONS[pos]
    lo, hi = MARGIN + r, SIZE_PX - MARGIN - r
    cx = {-1: lo, 0: SIZE_PX / 2, 1: hi}[ax] + rng.uniform(-JITTER, JITTER)
    cy = {-1: lo, 0: SIZE_PX / 2, 1: hi}[ay] + rng.uniform(-JITTER, JITTER)
    cx, cy = min(max(cx, lo - 1), hi + 1), min(max(cy, lo - 1), hi + 1)
    big = SIZE_PX * SS
    img = Image.new("RGB", (big, big), PALETTE[bg])
    d = ImageDraw.Draw(img)
    if shape == "circle":
        d.ellipse([(cx - r) * SS, (cy - r) * SS, (cx + r) * SS, (cy + r) * SS], fill=PALETTE[color])
    else:
        d.polygon([(x * SS, y * SS) for x, y in _shape_points(shape, cx, cy, r)], fill=PALETTE[color])
    return np.asarray(img.resize((SIZE_PX, SIZE_PX), Image.BOX), dtype=np.uint8)


def make_dataset(n: int, seed: int):
    """n random scenes: (attrs list, uint8 images [n, 64, 64, 3])."""
    rng = random.Random(seed)
    attrs = [random_attrs(rng) for _ in range(n)]
    imgs = np.stack([render(a, rng) for a in attrs])
    return attrs, imgs


# ---- colour classifier used by the evaluation (mirrored in eval_cases.json) ----
BG_BORDER = 2  # border width (px) whose median is the background colour
FAR_THRESHOLD = 48.0  # RGB distance from the background colour to count as "shape"
MIN_SHAPE_PIXELS = 12


def nearest_color(rgb) -> str:
    rgb = np.asarray(rgb, dtype=np.float64)
    return min(COLORS, key=lambda c: float(np.sum((rgb - np.array(PALETTE[c])) ** 2)))


def classify(img: np.ndarray):
    """img uint8 [64,64,3] -> (shape colour or None, background colour)."""
    x = img.astype(np.float64)
    b = BG_BORDER
    border = np.concatenate([x[:b].reshape(-1, 3), x[-b:].reshape(-1, 3), x[b:-b, :b].reshape(-1, 3), x[b:-b, -b:].reshape(-1, 3)])
    bg_rgb = np.median(border, axis=0)
    dist = np.sqrt(np.sum((x - bg_rgb) ** 2, axis=-1))
    mask = dist > FAR_THRESHOLD
    if mask.sum() < MIN_SHAPE_PIXELS:
        return None, nearest_color(bg_rgb)
    shape_rgb = np.median(x[mask], axis=0)
    return nearest_color(shape_rgb), nearest_color(bg_rgb)


def locate(img: np.ndarray):
    """(x, y) anchors in {-1, 0, 1} of the shape pixels' centroid, or None (informational metric)."""
    x = img.astype(np.float64)
    b = BG_BORDER
    border = np.concatenate([x[:b].reshape(-1, 3), x[-b:].reshape(-1, 3), x[b:-b, :b].reshape(-1, 3), x[b:-b, -b:].reshape(-1, 3)])
    mask = np.sqrt(np.sum((x - np.median(border, axis=0)) ** 2, axis=-1)) > FAR_THRESHOLD
    if mask.sum() < MIN_SHAPE_PIXELS:
        return None
    ys, xs = np.nonzero(mask)
    bucket = lambda v: -1 if v < 24 else (1 if v > 40 else 0)  # noqa: E731
    return bucket(xs.mean() + 0.5), bucket(ys.mean() + 0.5)
