"""Turning HTTP requests into `ImageSource`s, with every size bounded before it is held.

Accepted forms:
- JSON: `{"url": "…"}` or `{"b64": "…"}` (one image); `{"urls": ["…", …]}` or
  `{"images": [{"url": "…"}, {"b64": "…"}, …]}` (a batch, forms mixed freely);
- multipart/form-data: one file field per image (any field name);
- a raw image body (`Content-Type: image/*` or `application/octet-stream`).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

# Starlette parses multipart forms with python-multipart only if it is installed; importing it here
# makes a missing install fail at start-up, not on the first upload (and lets Pants see it).
import python_multipart
import python_multipart.exceptions
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.base64_images import text_limit
from gateway.classify import ImageSource
from gateway.errors import BadRequest, PayloadTooLarge, UrlNotAllowed
from gateway.fetch import check_url

# The query options of the classify routes (routes.py reads them; openapi.py documents them).
TOP_K_DEFAULT = 3
TOP_K_MAX = 1000
LOGITS_VALUES = ("true", "false", "1", "0")

_MAX_JSON_BYTES = 256 * 1024
# A form's non-file fields, each, and its headers and fields besides the images, in all.
_MAX_FIELD_BYTES = 64 * 1024
_FORM_OVERHEAD = 1024 * 1024
# The requests nest two levels deep and carry no integers; these leave room and stay far below
# what makes the parser fail (about 1,000 levels; 4,300 digits).
_MAX_JSON_DEPTH = 32
_MAX_JSON_INT_DIGITS = 100
# A string, or an unterminated one up to the end: every quote starts a match that never fails, so
# the scan stays linear whatever the body (no retries from later quotes).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
# RFC 3986: a scheme, then ':'.
_ABSOLUTE_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


async def read_sources(request: Request, *, max_images: int, max_image_bytes: int) -> list[ImageSource]:
    """The images a request carries, in order."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "application/json":
        body = await read_json(request, json_limit(max_images, max_image_bytes))
        return _sources_from_json(body, max_images)
    if content_type == "multipart/form-data":
        return await _sources_from_form(request, max_images, max_image_bytes)
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        return [ImageSource(data=await _read_body(request, max_image_bytes, "the image"))]
    raise BadRequest(
        "send JSON ({\"url\": …}), multipart/form-data with image files, or an image body "
        f"(Content-Type image/*); got {content_type or 'no Content-Type'}"
    )


async def _read_body(request: Request, limit: int, what: str) -> bytes:
    """The body, refused (413) as soon as it is known to exceed `limit`.

    The app-wide BodyLimit is sized for the largest request (a full batch of uploads); a JSON
    body or a single image has a much smaller limit, enforced here while the bytes arrive so a
    client cannot make the gateway buffer more than that.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"{what} is {int(declared)} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"{what} is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def json_limit(max_images: int, max_image_bytes: int) -> int:
    """Largest JSON body of a request of `max_images` images: each may be base64 text."""
    return max_images * text_limit(max_image_bytes) + _MAX_JSON_BYTES


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The body, refused (413) as soon as it is known to exceed `limit`."""
    return await _read_body(request, limit, what)


async def read_json(request: Request, limit: int = _MAX_JSON_BYTES) -> Any:
    return parse_json(await _read_body(request, limit, "the JSON body"))


def parse_json(data: bytes) -> Any:
    """The JSON document in `data`, refusing (400) nesting and integers the requests never need.

    The standard parser recurses once per level (RecursionError near 1,000 levels) and refuses
    integers over 4,300 digits with a ValueError: both would otherwise surface as 500s. The depth
    is checked before parsing; integers are checked as the parser meets them.
    """
    # A body with no more brackets than the limit cannot nest deeper than it. Counting them is a
    # memchr pass; the string-aware scan is a regular expression over every byte, milliseconds for
    # a base64 image, so it runs only when the count leaves the question open.
    brackets = data.count(b"[") + data.count(b"{")
    depth = _nesting_depth(data) if brackets > _MAX_JSON_DEPTH else brackets
    if depth > _MAX_JSON_DEPTH:
        raise BadRequest(f"the JSON body is nested {depth} levels deep; the limit is {_MAX_JSON_DEPTH}")
    try:
        return json.loads(data, parse_int=_bounded_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_JSON_INT_DIGITS:
        raise BadRequest(f"the JSON body has an integer over {_MAX_JSON_INT_DIGITS} digits long")
    return int(text)


def _nesting_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in `data`, strings skipped (regex speed, no recursion).

    Invalid JSON may be counted wrongly here; the parser refuses it anyway.
    """
    brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", data))
    if not brackets:
        return 0
    steps = np.frombuffer(brackets, dtype=np.uint8)
    return int(np.cumsum(np.where((steps == ord("[")) | (steps == ord("{")), 1, -1)).max())


def url_of(body: Any) -> str:
    """The course's request shape: `{"url": "…"}`."""
    if not isinstance(body, dict) or "url" not in body:
        raise BadRequest('send a JSON object with the image URL: {"url": "https://…"}')
    url = body["url"]
    if not isinstance(url, str):
        raise BadRequest('"url" must be a string')
    return url


def source_of(body: Any, where: str = "the body") -> ImageSource:
    """One image as JSON: `{"url": "…"}` or `{"b64": "…"}` (base64 checked when it is decoded)."""
    if isinstance(body, dict) and "b64" in body:
        if "url" in body:
            raise BadRequest(f'{where} has both "url" and "b64"; send one')
        b64 = body["b64"]
        if not isinstance(b64, str):
            raise BadRequest(f'{where}: "b64" must be a string of base64')
        if not b64.strip():
            # Malformed, like a URL that is no URL: the request's error, not one image's.
            raise BadRequest(f'{where}: "b64" is empty')
        return ImageSource(b64=b64)
    if where == "the body":
        return ImageSource(url=url_of(body))
    if not isinstance(body, dict) or not isinstance(body.get("url"), str):
        raise BadRequest(f'{where} must be {{"url": "…"}} or {{"b64": "…"}}')
    return ImageSource(url=_checked_url(body["url"], where))


def _checked_url(u: str, where: str) -> str:
    # What is not a URL at all makes the request malformed; a URL that is refused or fails is
    # answered in its own slot of a batch.
    try:
        check_url(u)
    except UrlNotAllowed:
        pass
    except BadRequest as e:
        raise BadRequest(f"{where}: {e.message}") from None
    if not _ABSOLUTE_URL.match(u.strip()):
        raise BadRequest(f"{where} is not an absolute URL (scheme://host/…)")
    return u


def _sources_from_json(body: Any, max_images: int) -> list[ImageSource]:
    if isinstance(body, dict) and "images" in body:
        images = body["images"]
        if not isinstance(images, list):
            raise BadRequest('"images" must be a list of {"url": …} or {"b64": …} objects')
        if len(images) > max_images:
            raise BadRequest(f"{len(images)} images in one request; the limit is {max_images}")
        return [source_of(item, f'"images" item {i + 1}') for i, item in enumerate(images)]
    if isinstance(body, dict) and "urls" in body:
        urls = body["urls"]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise BadRequest('"urls" must be a list of strings')
        if len(urls) > max_images:
            raise BadRequest(f"{len(urls)} images in one request; the limit is {max_images}")
        return [ImageSource(url=_checked_url(u, f'"urls" item {i + 1}')) for i, u in enumerate(urls)]
    return [source_of(body)]


async def _sources_from_form(request: Request, max_images: int, max_image_bytes: int) -> list[ImageSource]:
    # Headers and the non-file fields the form may carry besides the images.
    limit = max_images * max_image_bytes + _FORM_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the form is {int(declared)} bytes; the limit is {limit}")
    parser = _BoundedMultiPartParser(
        request.headers,
        _limited(request.stream(), limit, "the form"),
        max_files=max_images,
        max_fields=8,
        max_file_bytes=max_image_bytes,
    )
    try:
        form = await parser.parse()
    except _UploadTooLarge as e:
        raise PayloadTooLarge(e.message) from None
    except MultiPartException as e:
        raise BadRequest(f"the multipart body is malformed: {e.message}") from None
    except python_multipart.exceptions.FormParserError as e:
        # python-multipart's own parse errors (e.g. a body that does not start with the boundary)
        # are not Starlette's MultiPartException; unmapped they were 500s (found by
        # src/python/reliability/fuzz_test.py).
        raise BadRequest(f"the multipart body is malformed: {e}") from None
    try:
        uploads = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not uploads:
            raise BadRequest("the form has no file; attach the image as a file field")
        return [ImageSource(data=await upload.read(), form="upload") for upload in uploads]
    finally:
        await form.close()


async def _limited(stream: AsyncIterator[bytes], limit: int, what: str) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"{what} is over the limit of {limit} bytes")
        yield chunk


class _UploadTooLarge(MultiPartException):
    """An uploaded file past the image byte limit (a MultiPartException, so the parser closes the
    files it opened before passing it on)."""


class _BoundedMultiPartParser(MultiPartParser):
    """Starlette's multipart parser, stopping at the first file over `max_file_bytes`.

    Starlette bounds the non-file fields only; a file would be spooled to disk whatever its size,
    and the whole body read, before the gateway could look at its size.
    """

    def __init__(
        self,
        headers: Headers,
        stream: AsyncIterator[bytes],
        *,
        max_files: int,
        max_fields: int,
        max_file_bytes: int,
    ) -> None:
        super().__init__(
            headers,
            stream,  # type: ignore[arg-type]  # iterated with `async for` only
            max_files=max_files,
            max_fields=max_fields,
            max_part_size=_MAX_FIELD_BYTES,
        )
        self._max_file_bytes = max_file_bytes
        self._file_bytes = 0

    def on_part_begin(self) -> None:
        super().on_part_begin()
        self._file_bytes = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is not None:
            self._file_bytes += end - start
            if self._file_bytes > self._max_file_bytes:
                name = self._current_part.file.filename or "the upload"
                raise _UploadTooLarge(f"{name} is over the limit of {self._max_file_bytes} bytes")
        super().on_part_data(data, start, end)


class BodyLimit:
    """ASGI middleware: refuse request bodies over `max_bytes` (413) before they are buffered.

    Checks Content-Length up front and counts the bytes of chunked bodies as they arrive, so a
    client cannot fill memory or the multipart parser's temporary files.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        received = 0

        # Raised from receive(), i.e. inside the endpoint reading the body, so the app's error
        # handler answers it like any other error.
        async def limited_receive() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise PayloadTooLarge(
                    f"the request body is {int(declared)} bytes; the limit is {self.max_bytes}"
                )
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(f"the request body is over the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)
