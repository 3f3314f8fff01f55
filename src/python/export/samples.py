"""Sample images for warmup records and verification, made here so no download is needed.

They go through clothing_preproc exactly as the gateway's requests do, so TF Serving warms up on
tensors shaped and scaled like real traffic.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from clothing_preproc import PreprocessConfig, PreprocessingError, decode_image, normalize_into
from export.errors import BadOption

# (width, height, format): a phone-photo-like JPEG, a square PNG at the model size, a small GIF.
_SYNTHETIC = ((640, 480, "JPEG"), (299, 299, "PNG"), (120, 160, "GIF"))


def synthetic_images(seed: int = 0) -> list[bytes]:
    """A few deterministic encoded images of different sizes and formats (gradients + noise)."""
    rng = np.random.default_rng(seed)
    images = []
    for width, height, fmt in _SYNTHETIC:
        yy, xx = np.mgrid[0:height, 0:width]
        base = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 255 // (width + height)], axis=-1)
        noise = rng.integers(-40, 41, size=base.shape)
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(out, format=fmt)
        images.append(out.getvalue())
    return images


def read_images(paths: Sequence[str | Path]) -> list[bytes]:
    """The bytes of the user's sample image files."""
    images = []
    for path in paths:
        try:
            images.append(Path(path).read_bytes())
        except OSError as e:
            raise BadOption(f"cannot read sample image {path}: {e.strerror}") from None
    return images


def sample_pixels(
    images: Sequence[bytes], config: PreprocessConfig, names: Sequence[str] = ()
) -> npt.NDArray[np.uint8]:
    """(N, height, width, 3) uint8 RGB, decoded and resized by clothing_preproc; names label errors."""
    height, width = config.target_size
    batch = np.empty((len(images), height, width, 3), dtype=np.uint8)
    for i, data in enumerate(images):
        try:
            batch[i] = np.asarray(decode_image(data, config))
        except PreprocessingError as e:
            name = names[i] if i < len(names) else f"sample image {i + 1}"
            raise BadOption(f"{name}: {e}") from None
    return batch


def preprocess_samples(pixels: npt.NDArray[np.uint8], config: PreprocessConfig) -> npt.NDArray[np.float32]:
    """The float32 model input for `sample_pixels`' output, as `preprocess_image` computes it."""
    return normalize_into(pixels, np.empty(pixels.shape, dtype=np.float32), config.family)
