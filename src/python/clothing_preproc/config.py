"""The two settings objects: what to refuse (`Limits`) and how to preprocess (`PreprocessConfig`).

Both are frozen and validated when built, so a program builds them once at start-up and a bad
setting fails there, not on the first request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from clothing_preproc.normalize import Mode, family_mode

# keras.utils' names for Pillow's resampling filters.
RESIZE_FILTERS: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "hamming": Image.Resampling.HAMMING,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
}

# Pillow's own bomb check warns from 89 M pixels and refuses from 2× that; the default here sits
# well below, so Pillow's never decides for us.
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
# The formats people upload photos in. Pillow reads many more (PPM, TGA, ICO, …); each is more
# parser for hostile input to reach, so they are opt-in through `Limits.formats`.
DEFAULT_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
MAX_TARGET_SIDE = 8192


@dataclass(frozen=True)
class Limits:
    """Bounds on untrusted input, checked before any pixel is decoded."""

    # Encoded size. A 12-megapixel phone JPEG is 3-8 MB.
    max_bytes: int = DEFAULT_MAX_BYTES
    # Width × height from the header. 50 M admits 48-megapixel phone photos while bounding the
    # decoded RGB buffer to 150 MB.
    max_pixels: int = DEFAULT_MAX_PIXELS
    # Pillow format names to try (its JPEG reader also opens MPO, the multi-picture JPEG of phones).
    formats: tuple[str, ...] = DEFAULT_FORMATS

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {self.max_bytes}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be at least 1, got {self.max_pixels}")
        if not self.formats:
            raise ValueError("formats must name at least one image format")
        Image.init()
        unknown = [f for f in self.formats if f not in Image.OPEN]
        if unknown:
            raise ValueError(
                f"Pillow cannot read {', '.join(unknown)}; it reads {', '.join(sorted(Image.OPEN))}"
            )


@dataclass(frozen=True)
class PreprocessConfig:
    """How to turn an image into model input. The defaults are the course model's training path.

    With the options below left off, the result is bit-identical to `keras.utils.load_img(…,
    target_size=target_size, interpolation=resize_filter)` + `img_to_array` +
    `keras.applications.<family>.preprocess_input`.
    """

    # (height, width), as Keras' target_size.
    target_size: tuple[int, int] = (299, 299)
    # A keras.applications family name (`FAMILY_MODES`): picks the normalisation.
    family: str = "xception"
    # A keras.utils interpolation name (`RESIZE_FILTERS`); Keras' default is "nearest".
    resize_filter: str = "nearest"
    # Options beyond the Keras reference. All off: each changes the pixels the model sees, by the
    # amounts measured in docs/benchmarks.md.
    # Rotate/flip by the EXIF Orientation tag, as phones' photo viewers show the picture.
    exif_orientation: bool = False
    # RGB colour to composite transparent images onto; None drops alpha as Keras does.
    background: tuple[int, int, int] | None = None
    # Let libjpeg decode large JPEGs at 1/2, 1/4 or 1/8 scale, still at least the target size.
    draft: bool = False
    limits: Limits = field(default_factory=Limits)
    # Keras' `load_img(keep_aspect_ratio=True)`: centre-crop to the target's aspect ratio first.
    keep_aspect_ratio: bool = False

    def __post_init__(self) -> None:
        family_mode(self.family)
        if self.resize_filter not in RESIZE_FILTERS:
            raise ValueError(
                f"unknown resize filter {self.resize_filter!r}; one of {', '.join(sorted(RESIZE_FILTERS))}"
            )
        if len(self.target_size) != 2:
            raise ValueError(f"target size must be (height, width), got {self.target_size}")
        h, w = self.target_size
        if not (1 <= h <= MAX_TARGET_SIDE and 1 <= w <= MAX_TARGET_SIDE):
            raise ValueError(f"target size {self.target_size} out of range 1..{MAX_TARGET_SIDE}")
        if self.background is not None and (
            len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background)
        ):
            raise ValueError(f"background must be an (r, g, b) colour of 0..255, got {self.background}")

    @property
    def mode(self) -> Mode:
        """The normalisation mode of `family`: "tf", "caffe", "torch" or "none"."""
        return family_mode(self.family)


# The defaults, shared: both objects are immutable.
DEFAULT_LIMITS = Limits()
DEFAULT_CONFIG = PreprocessConfig()
