"""Image bytes -> the RGB picture the model sees: `keras.utils.load_img(…, target_size=…)` on bytes.

The reference, step by step (keras/src/utils/image_utils.py): Pillow opens the bytes;
`convert("RGB")` when the mode is not RGB (alpha dropped, not composited; 16-bit values clipped;
EXIF orientation and ICC profiles ignored); `resize(target, interpolation)` only when the size
differs, after a centred crop with `keep_aspect_ratio`. With `PreprocessConfig`'s options off this
module does exactly that, plus the limits: the byte count before parsing, the pixel count from the
header before any pixel is decoded.
"""

from __future__ import annotations

import io

from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from clothing_preproc.config import DEFAULT_CONFIG, DEFAULT_LIMITS, RESIZE_FILTERS, Limits, PreprocessConfig
from clothing_preproc.errors import (
    InputTooLarge,
    NotAnImage,
    PreprocessingError,
    TooManyPixels,
    UnreadableImage,
    UnsupportedImage,
)

# EXIF Orientation -> the transpose that shows the picture upright (as ImageOps.exif_transpose).
_UPRIGHT: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})


def open_image(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Image.Image:
    """Parse the header only: the byte and pixel limits are checked, no pixel is decoded yet."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(
            f"expected the image's bytes, got {type(data).__name__} (preprocess_path reads a file)"
        )
    if len(data) == 0:
        raise NotAnImage("the image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InputTooLarge(f"the image is {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        img = Image.open(io.BytesIO(data), formats=list(limits.formats))
    except UnidentifiedImageError:
        raise NotAnImage(f"not an image in a supported format ({', '.join(limits.formats)})") from None
    except Image.DecompressionBombError:
        # Pillow's own guard, for headers far beyond any sane limit; report ours.
        raise TooManyPixels(f"the image has more than {limits.max_pixels} pixels") from None
    except MemoryError:
        raise
    except Exception as e:  # a corrupt header can raise almost anything in a plugin
        raise UnreadableImage(f"the image header is corrupt ({type(e).__name__}: {e})") from None
    width, height = img.size
    if width < 1 or height < 1:
        raise UnsupportedImage(f"the image has no pixels ({width}×{height})")
    if width * height > limits.max_pixels:
        raise TooManyPixels(
            f"the image is {width}×{height} = {width * height} pixels; the limit is {limits.max_pixels}"
        )
    return img


def decode_image(data: bytes, config: PreprocessConfig = DEFAULT_CONFIG) -> Image.Image:
    """Decode, convert to RGB and resize to `config.target_size`: Keras' `load_img` on bytes.

    Raises only `PreprocessingError` subclasses for bad input (and TypeError for a non-bytes
    argument): see `clothing_preproc.errors`.
    """
    img = open_image(data, config.limits)
    try:
        if config.draft and img.format in _JPEG_FORMATS:
            _request_draft(img, config)
        if isinstance(img, ImageFile.ImageFile):
            # The bytes are all in memory: hand them to the decoder in one call rather than in
            # 64 KiB pieces. Each piece releases and retakes the GIL, which a server's other
            # threads then contend for; the decoded pixels are the same.
            img.decodermaxblock = max(len(data), ImageFile.MAXBLOCK)
        img.load()
        if config.exif_orientation:
            img = _upright(img)
        img = _to_rgb(img, config.background)
        return _resize(img, config)
    except PreprocessingError:
        raise
    except Image.DecompressionBombError:
        raise TooManyPixels(f"the image has more than {config.limits.max_pixels} pixels") from None
    except MemoryError:
        raise
    except Exception as e:  # Pillow's decoders signal corrupt data with many types
        raise UnreadableImage(f"the {img.format or 'image'} data is truncated or corrupt: {e}") from None


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # a corrupt EXIF block must not lose an otherwise good photo
        return 1


def _request_draft(img: Image.Image, config: PreprocessConfig) -> None:
    """Ask libjpeg for a 1/2, 1/4 or 1/8 scale decode that still covers the target size."""
    target_h, target_w = config.target_size
    if config.exif_orientation and _orientation(img) in _SWAPS_AXES:
        # The stored picture is turned by 90°: its width becomes the target's height.
        target_h, target_w = target_w, target_h
    img.draft("RGB", (target_w, target_h))


def _upright(img: Image.Image) -> Image.Image:
    method = _UPRIGHT.get(_orientation(img))
    return img if method is None else img.transpose(method)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in _ALPHA_MODES or (img.mode in ("1", "L", "P", "RGB") and "transparency" in img.info)


def _to_rgb(img: Image.Image, background: tuple[int, int, int] | None) -> Image.Image:
    if background is not None and _has_alpha(img):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if img.mode == "RGB":
        return img
    if img.mode == "P" and isinstance(img.info.get("transparency"), bytes):
        # Pillow warns on every such conversion that per-entry alpha is lost; dropping alpha is
        # the point here (as in Keras), and the RGB values it produces are the same without it.
        del img.info["transparency"]
    try:
        return img.convert("RGB")
    except ValueError:
        raise UnsupportedImage(f"images of mode {img.mode} cannot be converted to RGB") from None


def _resize(img: Image.Image, config: PreprocessConfig) -> Image.Image:
    target_h, target_w = config.target_size
    if img.size == (target_w, target_h):
        return img
    resample = RESIZE_FILTERS[config.resize_filter]
    if not config.keep_aspect_ratio:
        return img.resize((target_w, target_h), resample)
    # Keras' centred crop to the target aspect ratio, in its integer arithmetic.
    width, height = img.size
    crop_h = min(height, (width * target_h) // target_w)
    crop_w = min(width, (height * target_w) // target_h)
    left = (width - crop_w) // 2
    top = (height - crop_h) // 2
    return img.resize((target_w, target_h), resample, box=(left, top, left + crop_w, top + crop_h))
