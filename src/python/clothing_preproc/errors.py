"""The library's errors: one tree, so callers catch `PreprocessingError` or a precise subclass.

    PreprocessingError               anything this library refuses
    ├── InputTooLarge                more bytes than `Limits.max_bytes`
    ├── TooManyPixels                width × height above `Limits.max_pixels` (decompression bombs)
    ├── NotAnImage                   empty input, or bytes no allowed image format recognises
    ├── UnreadableImage              a recognised format that fails to decode (truncated, corrupt)
    ├── UnsupportedImage             decodes, but its mode or shape cannot become RGB
    └── TensorCodecError             a TensorProto whose dtype, shape or data do not fit together

Messages are written for the person who sent the input: they say what was wrong and what the limit
is. None of them knows about HTTP; transports map them once (the gateway's `errors.py`).

Programming mistakes are not in the tree: a non-bytes argument is a TypeError, an invalid
`PreprocessConfig` or `Limits` a ValueError when it is built. Pillow still emits its own warnings
on some hostile input (DecompressionBombWarning for headers between 89 M and 179 M pixels, which
are then refused as TooManyPixels; UserWarning for corrupt TIFF/EXIF metadata): they are not
silenced here because `warnings.catch_warnings` is not thread-safe and the gateway decodes in
threads.
"""

from __future__ import annotations


class PreprocessingError(Exception):
    """Base class of every error this library raises on bad input."""


class InputTooLarge(PreprocessingError):
    """The encoded input has more bytes than allowed."""


class TooManyPixels(PreprocessingError):
    """The image's declared dimensions exceed the pixel limit (checked before decoding)."""


class NotAnImage(PreprocessingError):
    """Empty input, or not in any allowed image format."""


class UnreadableImage(PreprocessingError):
    """The image format was recognised but the data is truncated or corrupt."""


class UnsupportedImage(PreprocessingError):
    """The image decoded but cannot be turned into an RGB array (mode, frames, size)."""


class TensorCodecError(PreprocessingError):
    """A TensorProto cannot be converted to or from an array."""
