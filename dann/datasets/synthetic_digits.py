"""Synthetic digits in the spirit of the DANN paper's Syn Numbers (Ganin et al., JMLR 2016,
section 5.2.1): digits 0-9 rendered with PIL from TrueType fonts at varied size, position,
rotation and stroke width, sometimes between neighbouring digits as in a house number, in a
colour on a solid, gradient or two-tone background, blurred and noisy; 32x32 RGB."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from einops import rearrange
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE = 32
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 brightness of RGB


@lru_cache(maxsize=None)
def truetype(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


def glyphs(path: Path, text: str = "0123456789", size: int = 24) -> np.ndarray:
    """Each character of `text` drawn alone (len(text), 2 * size, 2 * size) uint8."""
    out = []
    for char in text:
        canvas = Image.new("L", (2 * size, 2 * size))
        ImageDraw.Draw(canvas).text((size // 2, size // 4), char, fill=255, font=truetype(path, size))
        out.append(np.asarray(canvas))
    return np.stack(out)


def has_digits(path: Path) -> bool:
    """Does the font draw ten non-blank, pairwise different digits, none of them its
    missing-glyph box (U+FFFF has no glyph in any font)? Catches fonts without digits; not
    fonts that put other symbols at the digits' code points (cmsy10): those were seen by eye."""
    drawn = glyphs(path, "0123456789\uffff").reshape(11, -1).astype(np.int32)
    different = np.abs(drawn[:, None] - drawn[None]).mean(-1) > 2  # (11, 11)
    return bool((drawn[:10].max(1) > 0).all() and different[np.triu_indices(11, 1)].all())


@lru_cache(maxsize=None)
def origin(path: Path, size: int, digit: int, left: int, stroke: int) -> tuple[float, float]:
    """Where the text `left digit ...` (left -1: none) starts on its baseline, relative to
    `digit`'s box's centre."""
    font = truetype(path, size)
    l, t, r, b = font.getbbox(str(digit), anchor="ls", stroke_width=stroke)
    return -(font.getlength(str(left)) if left >= 0 else 0) - (l + r) / 2, -(t + b) / 2


def masks(labels: np.ndarray, fonts: list[Path], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each label's digit as a coverage mask (N, 32, 32) in [0, 1], and the index of its font."""
    n = len(labels)
    font = rng.integers(len(fonts), size=n)
    size = rng.integers(24, 36, size=n, endpoint=True)  # the em: digits about 17-26 px high
    stroke = rng.choice([0, 0, 1], size=n)  # a third of them bolder
    centre = SIZE / 2 + rng.uniform(-3, 3, size=(n, 2))  # off-centre by up to 3 px
    angle = rng.uniform(-15, 15, size=n)
    # house-number crops show parts of their neighbours: none, left, right or both
    neighbours = np.where(rng.random((n, 2)) < 0.3, rng.integers(10, size=(n, 2)), -1)
    blur = rng.uniform(0, 1.2, size=n)
    out = np.empty((n, SIZE, SIZE), dtype=np.uint8)
    for i in range(n):
        digit, (left, right), cx, cy = int(labels[i]), neighbours[i].tolist(), *centre[i].tolist()
        dx, dy = origin(fonts[font[i]], int(size[i]), digit, left, int(stroke[i]))
        text = (str(left) if left >= 0 else "") + str(digit) + (str(right) if right >= 0 else "")
        canvas = Image.new("L", (SIZE, SIZE))
        ImageDraw.Draw(canvas).text((cx + dx, cy + dy), text, fill=255, font=truetype(fonts[font[i]], int(size[i])),
                                    anchor="ls", stroke_width=int(stroke[i]), stroke_fill=255)
        canvas = canvas.rotate(float(angle[i]), resample=Image.BILINEAR, center=(cx, cy))
        out[i] = np.asarray(canvas.filter(ImageFilter.GaussianBlur(float(blur[i]))))
    return out.astype(np.float32) / 255, font


def backgrounds(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32, 3) backgrounds, half solid, 30% a linear gradient and 20% two-tone (two
    colours either side of a line), each in a random direction; and their two colours (N, 2, 3)."""
    colours = rng.uniform(0, 255, size=(n, 2, 3)).astype(np.float32)
    kind = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    theta, shift = rng.uniform(0, 2 * np.pi, size=n), rng.uniform(-0.6, 0.6, size=n)
    grid = np.linspace(-1, 1, SIZE, dtype=np.float32)
    along = (np.cos(theta, dtype=np.float32)[:, None, None] * grid[None, None, :]
             + np.sin(theta, dtype=np.float32)[:, None, None] * grid[None, :, None])  # (N, 32, 32) in [-1.5, 1.5]
    t = np.zeros_like(along)  # how far each pixel is from the first colour to the second
    t[kind == 1] = (along[kind == 1] + 1.5) / 3
    t[kind == 2] = along[kind == 2] > shift[kind == 2, None, None]
    colours[kind == 0, 1] = colours[kind == 0, 0]
    bg = colours[:, None, None, 0] + (colours[:, None, None, 1] - colours[:, None, None, 0]) * t[..., None]
    return bg, colours


def foregrounds(colours: np.ndarray, rng: np.random.Generator, distance: float = 100, contrast: float = 60
                ) -> np.ndarray:
    """A colour (N, 3) for each digit at least `distance` (RGB) and `contrast` (luma) from both
    its background colours, as printed numbers are made to be read; redrawn where not, black or
    white as a last resort. (Without the luma margin, 500 steps of LeNet learn syn to 56% only.)"""
    fg = rng.uniform(0, 255, size=colours[:, 0].shape).astype(np.float32)

    def close() -> np.ndarray:
        apart = colours - fg[:, None]  # (N, 2, 3)
        return ((np.linalg.norm(apart, axis=-1) < distance) | (np.abs(apart @ LUMA) < contrast)).any(1)

    for _ in range(30):
        if not close().any():
            return fg
        fg[close()] = rng.uniform(0, 255, size=(close().sum(), 3))
    darkest = (colours @ LUMA).min(1, keepdims=True)
    fg[close()] = np.where(darkest > 255 - (colours @ LUMA).max(1, keepdims=True), 0, 255)[close()]
    return fg


def render(labels: np.ndarray, fonts: list[Path], rng: np.random.Generator, chunk: int = 1000
           ) -> tuple[np.ndarray, np.ndarray]:
    """Syn digits (N, 3, 32, 32) uint8 of the given labels, and the index in `fonts` of each
    one's font. Deterministic in the rng's state; coloured `chunk` at a time to bound memory."""
    coverage, font = masks(labels, fonts, rng)
    out = np.empty((len(labels), 3, SIZE, SIZE), dtype=np.uint8)
    for start in range(0, len(labels), chunk):
        mask = coverage[start:start + chunk, :, :, None]
        bg, colours = backgrounds(len(mask), rng)
        images = bg + (foregrounds(colours, rng)[:, None, None] - bg) * mask
        sigma = rng.uniform(0, 12, (len(mask), 1, 1, 1)).astype(np.float32)
        images += rng.standard_normal(images.shape, dtype=np.float32) * sigma
        out[start:start + chunk] = rearrange(images.clip(0, 255).round(), "n h w c -> n c h w")
    return out, font
