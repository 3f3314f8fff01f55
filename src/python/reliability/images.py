"""Real images for traffic and their hostile mutations (what a fuzzer feeds the decoder)."""

from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image


def photo_like(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    """A smooth colour field with noise: compresses like a photo, not like a flat test card."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            127 + 100 * np.sin(x / (37 + seed % 11)),
            127 + 100 * np.cos(y / (23 + seed % 7)),
            127 + 100 * np.sin((x + y) / 51),
        ],
        axis=-1,
    )
    noisy = base + rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def sample_jpeg(width: int = 640, height: int = 480, seed: int = 0, quality: int = 90) -> bytes:
    return encode(photo_like(width, height, seed), "JPEG", quality=quality)


def sample_png(width: int = 320, height: int = 240, seed: int = 0, alpha: bool = False) -> bytes:
    image = photo_like(width, height, seed)
    if alpha:
        image = image.convert("RGBA")
    return encode(image, "PNG")


def mutate(data: bytes, rng: random.Random, max_edits: int = 8) -> bytes:
    """A corrupted copy of an encoded image: what a broken upload or a hostile client sends.

    Mixes the classic file-fuzzing edits: bit flips and byte overwrites (often in the header, where
    the decoder trusts sizes), insertions, deletions, truncation and duplicated spans.
    """
    buf = bytearray(data)
    for _ in range(rng.randint(1, max_edits)):
        if not buf:
            break
        # Headers hold the sizes and tables a decoder trusts: aim a third of the edits there.
        limit = min(len(buf), 512) if rng.random() < 1 / 3 else len(buf)
        at = rng.randrange(limit)
        edit = rng.randrange(6)
        if edit == 0:
            buf[at] ^= 1 << rng.randrange(8)
        elif edit == 1:
            buf[at] = rng.choice((0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif edit == 2:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif edit == 3:
            del buf[at : at + rng.randint(1, 64)]
        elif edit == 4:
            del buf[max(1, at) :]
        else:
            span = buf[at : at + rng.randint(1, 256)]
            buf[at:at] = span * rng.randint(1, 4)
    return bytes(buf)
