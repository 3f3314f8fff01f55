"""Image bytes -> model input, computed exactly as Keras does for training.

The reference is `keras.utils.load_img(path, target_size=…)` + `img_to_array` +
`keras.applications.<family>.preprocess_input`: Pillow decode, `convert("RGB")` when the mode is
not RGB (alpha dropped, not composited; 16-bit clipped; no EXIF rotation), `resize` with NEAREST
when the size differs, float32, then the family's normalisation in place, in Keras' order of
float32 operations. The defaults reproduce it bit for bit; every deviation is an explicit option.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from clothing_preproc.errors import (
    InputTooLarge,
    NotAnImage,
    PreprocessingError,
    TooManyPixels,
    UnreadableImage,
    UnsupportedImage,
)

Mode = Literal["tf", "caffe", "torch", "none"]

# keras.applications families -> the normalisation their preprocess_input applies.
FAMILY_MODES: dict[str, Mode] = {
    "xception": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "nasnet": "tf",
    "resnet_v2": "tf",
    "resnet": "caffe",
    "resnet50": "caffe",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "densenet": "torch",
    # These models rescale inside the graph; their preprocess_input is the identity.
    "efficientnet": "none",
    "efficientnet_v2": "none",
    "convnext": "none",
    "none": "none",
}

# keras.utils' names for Pillow's resampling filters.
RESIZE_FILTERS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "hamming": Image.Resampling.HAMMING,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Limits:
    """Bounds on untrusted input, checked before any pixel is decoded."""

    # Encoded size. A 12-megapixel phone JPEG is 3-8 MB.
    max_bytes: int = 20 * 1024 * 1024
    # Width × height from the header. Pillow's own bomb limit is ~89 M (error at 2×); 50 M still
    # admits 48-megapixel phone photos while bounding the RGB buffer to 150 MB.
    max_pixels: int = 50_000_000
    # Formats Pillow may try (its JPEG reader also opens MPO, the multi-picture JPEG of many phones).
    formats: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")


@dataclass(frozen=True)
class PreprocessConfig:
    """How to turn an image into model input. The defaults are the course model's training path."""

    # (height, width), as Keras' target_size.
    target_size: tuple[int, int] = (299, 299)
    family: str = "xception"
    resize_filter: str = "nearest"
    # Options beyond the Keras reference (all off: each changes the pixels the model sees).
    exif_orientation: bool = False
    # RGB colour to composite transparent images onto; None drops alpha as Keras does.
    background: tuple[int, int, int] | None = None
    # Let libjpeg decode JPEGs at 1/2, 1/4 or 1/8 scale when still >= the target size.
    draft: bool = False
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.family not in FAMILY_MODES:
            raise ValueError(f"unknown preprocessing family {self.family!r}; one of {sorted(FAMILY_MODES)}")
        if self.resize_filter not in RESIZE_FILTERS:
            raise ValueError(f"unknown resize filter {self.resize_filter!r}; one of {sorted(RESIZE_FILTERS)}")
        h, w = self.target_size
        if not (1 <= h <= 8192 and 1 <= w <= 8192):
            raise ValueError(f"target size {self.target_size} out of range")

    @property
    def mode(self) -> Mode:
        return FAMILY_MODES[self.family]


def decode_image(data: bytes, config: PreprocessConfig = PreprocessConfig()) -> Image.Image:
    """Decode, convert to RGB and resize: `keras.utils.load_img(…, target_size=…)` on bytes."""
    limits = config.limits
    if not data:
        raise NotAnImage("the image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InputTooLarge(f"the image is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        img = Image.open(io.BytesIO(data), formats=list(limits.formats))
    except UnidentifiedImageError:
        raise NotAnImage(
            f"not an image in a supported format ({', '.join(limits.formats)})"
        ) from None
    except Image.DecompressionBombError as e:
        raise TooManyPixels(str(e)) from None
    except Exception as e:  # noqa: BLE001 - a corrupt header can raise almost anything in a plugin
        raise UnreadableImage(f"the image header is corrupt ({type(e).__name__})") from None
    width, height = img.size
    if width < 1 or height < 1:
        raise UnsupportedImage(f"the image has no pixels ({width}×{height})")
    if width * height > limits.max_pixels:
        raise TooManyPixels(
            f"the image is {width}×{height} = {width * height} pixels; the limit is {limits.max_pixels}"
        )
    target_h, target_w = config.target_size
    try:
        if config.draft and img.format in ("JPEG", "MPO"):
            img.draft("RGB", (target_w, target_h))
        img.load()
        if config.exif_orientation:
            img = ImageOps.exif_transpose(img)
        img = _to_rgb(img, config.background)
        if img.size != (target_w, target_h):
            img = img.resize((target_w, target_h), RESIZE_FILTERS[config.resize_filter])
    except PreprocessingError:
        raise
    except Image.DecompressionBombError as e:
        raise TooManyPixels(str(e)) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError) as e:
        raise UnreadableImage(f"the {img.format or 'image'} data cannot be decoded: {e}") from None
    return img


def _to_rgb(img: Image.Image, background: tuple[int, int, int] | None) -> Image.Image:
    if background is not None and _has_alpha(img):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if img.mode != "RGB":
        try:
            return img.convert("RGB")
        except ValueError as e:
            raise UnsupportedImage(f"image mode {img.mode} cannot be converted to RGB") from e
    return img


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )


def image_to_array(img: Image.Image) -> npt.NDArray[np.float32]:
    """`keras.utils.img_to_array` for an RGB image: (height, width, 3) float32."""
    return np.asarray(img, dtype=np.float32)


def preprocess_input(x: npt.NDArray[np.float32], family: str = "xception") -> npt.NDArray[np.float32]:
    """`keras.applications.<family>.preprocess_input` for channels-last float32, **in place**.

    Returns the normalised array (the same object, except for "caffe", whose channel flip is a
    view of it, as in Keras).
    """
    if x.dtype != np.float32:
        raise TypeError(f"preprocess_input works on float32 arrays, got {x.dtype}")
    mode = FAMILY_MODES[family]
    if mode == "tf":
        # Keras' order: divide, then subtract. `x * (1/127.5) - 1` differs in the last bit.
        x /= 127.5
        x -= 1.0
        return x
    if mode == "none":
        return x
    if mode == "torch":
        x /= 255.0
        for c in range(3):
            x[..., c] -= _TORCH_MEAN[c]
        for c in range(3):
            x[..., c] /= _TORCH_STD[c]
        return x
    # caffe: RGB -> BGR, then zero-centre each channel by the ImageNet mean.
    bgr = x[..., ::-1]
    for c in range(3):
        bgr[..., c] -= _CAFFE_MEAN_BGR[c]
    return bgr


def preprocess_image(data: bytes, config: PreprocessConfig = PreprocessConfig()) -> npt.NDArray[np.float32]:
    """Image bytes -> (height, width, 3) float32, exactly the Keras training input by default."""
    return preprocess_input(image_to_array(decode_image(data, config)), config.family)


def preprocess_batch(
    images: Sequence[bytes], config: PreprocessConfig = PreprocessConfig()
) -> npt.NDArray[np.float32]:
    """Several images -> one (N, height, width, 3) float32 batch.

    Each decoded image is written straight into its slot of the batch and the batch is normalised
    once in place: no per-image float arrays, no concatenation copy. Equal, element for element, to
    stacking `preprocess_image` results.
    """
    h, w = config.target_size
    batch = np.empty((len(images), h, w, 3), dtype=np.float32)
    for i, data in enumerate(images):
        batch[i] = np.asarray(decode_image(data, config))
    out = preprocess_input(batch, config.family)
    return np.ascontiguousarray(out)


def preprocess_path(
    path: str | Path, config: PreprocessConfig = PreprocessConfig()
) -> npt.NDArray[np.float32]:
    """`preprocess_image` on a file, with the byte limit checked before reading it all."""
    p = Path(path)
    size = p.stat().st_size
    if size > config.limits.max_bytes:
        raise InputTooLarge(f"{p} is {size} bytes; the limit is {config.limits.max_bytes}")
    return preprocess_image(p.read_bytes(), config)


