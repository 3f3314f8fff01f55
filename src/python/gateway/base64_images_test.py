from __future__ import annotations

import base64
import os

import pytest

from gateway.base64_images import decode_image_b64, encoded_length, text_limit
from gateway.errors import BadRequest, PayloadTooLarge

DATA = os.urandom(1000)


@pytest.mark.parametrize(
    "text",
    [
        base64.b64encode(DATA).decode(),
        base64.b64encode(DATA).decode().rstrip("="),
        base64.urlsafe_b64encode(DATA).decode(),
        base64.encodebytes(DATA).decode(),  # MIME: a line break every 76 characters
        base64.encodebytes(DATA).decode().replace("\n", "\r\n"),
        "data:image/jpeg;base64," + base64.b64encode(DATA).decode(),
    ],
    ids=["standard", "unpadded", "url-safe", "mime-lines", "mime-crlf", "data-url"],
)
def test_the_usual_spellings_decode(text: str) -> None:
    assert decode_image_b64(text, 1000, "the image") == DATA


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 999, 1000, 1001, 20 * 1024 * 1024])
def test_the_text_bound_is_the_encoding_of_the_byte_limit(limit: int) -> None:
    assert encoded_length(limit) == len(base64.b64encode(b"\0" * min(limit, 5000))) or limit > 5000
    assert encoded_length(limit) == -(-limit // 3) * 4
    exact = base64.b64encode(b"\1" * limit).decode()
    assert len(exact) == encoded_length(limit)
    assert decode_image_b64(exact, limit, "the image") == b"\1" * limit


@pytest.mark.parametrize("over", [1, 2, 3, 4])
def test_one_byte_past_the_limit_is_413(over: int) -> None:
    # Whether the extra bytes fit in the last group of four (checked after decoding) or need more
    # characters (refused before decoding), the answer is the same.
    limit = 1000
    with pytest.raises(PayloadTooLarge):
        decode_image_b64(base64.b64encode(b"\1" * (limit + over)).decode(), limit, "the image")


def test_an_oversized_text_is_refused_before_it_is_decoded() -> None:
    # Not even base64: refused for its length alone, so nothing was decoded.
    with pytest.raises(PayloadTooLarge, match="characters of base64"):
        decode_image_b64("!" * (text_limit(1000) + 1), 1000, "image 3")
    with pytest.raises(PayloadTooLarge, match="characters of base64"):
        decode_image_b64("!" * (encoded_length(1000) + 4), 1000, "image 3")


def test_whitespace_cannot_stand_in_for_image_bytes() -> None:
    with pytest.raises(PayloadTooLarge):
        decode_image_b64("QUJD" + " " * 900, 1000, "the image")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("QUJD!!", "not valid base64"),
        ("QUJDR", "cannot be decoded"),
        ("QU=JD", "not valid base64"),
        ("ab+c-d", "mixes"),
        ("QUJDé", "not valid base64"),
        ("QUJD====", "not valid base64"),
    ],
)
def test_bad_base64_is_a_400_naming_the_image(text: str, words: str) -> None:
    with pytest.raises(BadRequest, match=words) as e:
        decode_image_b64(text, 1000, "image 2")
    assert e.value.message.startswith("image 2 ")
