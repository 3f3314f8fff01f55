"""Base64 image text -> bytes, bounded by the image byte limit before anything is decoded.

The text's length is checked against what `max_bytes` can encode to before a byte is decoded, so
a client cannot make the gateway decode (and hold) more than one image's worth; the decoded length
is checked once more (the last group of four characters may carry up to two bytes past the limit).

Accepted: the standard or the URL-safe alphabet (not both in one image), padding or none, MIME
line breaks (CR/LF/space/tab, at most two characters per 76 of base64, as `base64` and email
wrap it) and a `data:<type>;base64,` prefix (what a browser's FileReader gives).
"""

from __future__ import annotations

import binascii
import math
import re

from gateway.errors import BadRequest, PayloadTooLarge

_WHITESPACE = b" \t\r\n"
_DATA_URL = re.compile(rb"data:[^,]{0,200};base64,", re.IGNORECASE)
_URL_SAFE = bytes.maketrans(b"-_", b"+/")


def encoded_length(max_bytes: int) -> int:
    """Characters of unpadded-to-padded base64 that `max_bytes` bytes take: ceil(n/3)*4."""
    return math.ceil(max_bytes / 3) * 4


def text_limit(max_bytes: int) -> int:
    """Longest base64 text accepted for an image of `max_bytes`: its encoding, a CRLF per 76
    characters of it, and room for a data: URL prefix."""
    encoded = encoded_length(max_bytes)
    return encoded + 2 * math.ceil(encoded / 76) + 256


def decode_image_b64(text: str, max_bytes: int, what: str) -> bytes:
    """The bytes `text` encodes; 413 past `max_bytes`, 400 if it is not base64. `what` names the
    image in messages ("the image", "image 3")."""
    if len(text) > text_limit(max_bytes):
        raise PayloadTooLarge(
            f"{what} is {len(text)} characters of base64; at most {encoded_length(max_bytes)} "
            f"(the encoding of {max_bytes} bytes) are accepted"
        )
    # Everything below works on bytes: bytes.translate and binascii are single C passes, several
    # times cheaper than regular expressions over a str of a few hundred thousand characters.
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise BadRequest(f"{what} is not valid base64: it holds non-ASCII characters") from None
    prefix = _DATA_URL.match(raw)
    if prefix:
        raw = raw[prefix.end() :]
    compact = raw.translate(None, _WHITESPACE)
    if not compact:
        raise BadRequest(f"{what} is empty: b64 holds no base64 text")
    # Whitespace is bounded too: a body of blanks must not pass as a small image.
    if len(compact) > encoded_length(max_bytes) or len(raw) - len(compact) > len(raw) // 38 + 2:
        raise PayloadTooLarge(
            f"{what} is {len(compact)} characters of base64; at most {encoded_length(max_bytes)} "
            f"(the encoding of {max_bytes} bytes) are accepted"
        )
    if b"-" in compact or b"_" in compact:
        if b"+" in compact or b"/" in compact:
            raise BadRequest(f"{what} is not valid base64: it mixes the standard and URL-safe alphabets")
        compact = compact.translate(_URL_SAFE)
    if len(compact) % 4 == 1:
        raise BadRequest(f"{what} is not valid base64: its length ({len(compact)}) cannot be decoded")
    # binascii's strict mode still takes padding past a whole group ("QUJD=="): refused here.
    unpadded = compact.rstrip(b"=")
    if len(compact) - len(unpadded) > (-len(unpadded) % 4):
        raise BadRequest(f"{what} is not valid base64: more padding than its length needs")
    if len(unpadded) % 4:
        compact = unpadded + b"=" * (-len(unpadded) % 4)
    try:
        data = binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error as e:
        raise BadRequest(f"{what} is not valid base64: {e}") from None
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"{what} is {len(data)} bytes once decoded; the limit is {max_bytes}")
    return data
