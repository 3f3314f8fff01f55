"""Image bytes -> model input, exactly as Keras computes it for training.

`keras.utils.load_img(…, target_size=…)` + `img_to_array` + `keras.applications.<family>
.preprocess_input` is `decode_image` + `normalize_into` here: the same pixels, the same float32
operations in the same order, so `np.array_equal` holds with the defaults. The float conversion is
fused into the first normalisation step, and a batch is filled slot by slot, so neither a single
image nor a batch makes an intermediate float array.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from clothing_preproc.config import DEFAULT_CONFIG, RESIZE_FILTERS, Limits, PreprocessConfig
from clothing_preproc.decode import decode_image, open_image
from clothing_preproc.errors import InputTooLarge, PreprocessingError
from clothing_preproc.normalize import FAMILY_MODES, Mode, normalize_into, preprocess_input

# Names this module defined before the library was split into modules; imports of them stay valid.
__all__ = [
    "FAMILY_MODES",
    "RESIZE_FILTERS",
    "Limits",
    "Mode",
    "PreprocessConfig",
    "decode_image",
    "image_to_array",
    "open_image",
    "preprocess_batch",
    "preprocess_image",
    "preprocess_input",
    "preprocess_path",
]


def image_to_array(img: Image.Image) -> npt.NDArray[np.float32]:
    """`keras.utils.img_to_array` for an RGB image: a new (height, width, 3) float32 array."""
    return np.asarray(img, dtype=np.float32)


def preprocess_image(data: bytes, config: PreprocessConfig = DEFAULT_CONFIG) -> npt.NDArray[np.float32]:
    """Image bytes -> (height, width, 3) float32, exactly the Keras training input by default."""
    pixels = np.asarray(decode_image(data, config))
    return normalize_into(pixels, np.empty(pixels.shape, dtype=np.float32), config.family)


def preprocess_batch(
    images: Sequence[bytes], config: PreprocessConfig = DEFAULT_CONFIG
) -> npt.NDArray[np.float32]:
    """Several images -> one C-ordered (N, height, width, 3) float32 batch.

    Each image is decoded and normalised straight into its slot: the batch is the only float
    array allocated. Equal, element for element, to stacking `preprocess_image` results. A bad
    image raises its own error type with its 1-based position in the message.
    """
    h, w = config.target_size
    batch = np.empty((len(images), h, w, 3), dtype=np.float32)
    for i, data in enumerate(images):
        try:
            pixels = np.asarray(decode_image(data, config))
        except PreprocessingError as e:
            raise type(e)(f"image {i + 1} of {len(images)}: {e}") from None
        normalize_into(pixels, batch[i], config.family)
    return batch


def preprocess_path(
    path: str | Path, config: PreprocessConfig = DEFAULT_CONFIG
) -> npt.NDArray[np.float32]:
    """`preprocess_image` on a file, reading no more than the byte limit allows.

    A missing or unreadable file raises the usual `OSError`; what is in the file is judged like
    any other bytes.
    """
    p = Path(path)
    limit = config.limits.max_bytes
    with p.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InputTooLarge(f"{p} is more than {limit} bytes, the limit")
    return preprocess_image(data, config)
