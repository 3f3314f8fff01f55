"""Turning HTTP requests into `ImageSource`s, with every size bounded before it is held.

Accepted forms:
- JSON: `{"url": "…"}` (one image) or `{"urls": ["…", …]}` (a batch);
- multipart/form-data: one file field per image (any field name);
- a raw image body (`Content-Type: image/*` or `application/octet-stream`).
"""

from __future__ import annotations

import json
from typing import Any

# Starlette parses multipart forms with python-multipart only if it is installed; importing it here
# makes a missing install fail at start-up, not on the first upload (and lets Pants see it).
import python_multipart
import python_multipart.exceptions
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.classify import ImageSource
from gateway.errors import BadRequest, PayloadTooLarge

_MAX_JSON_BYTES = 256 * 1024


async def read_sources(request: Request, *, max_images: int, max_image_bytes: int) -> list[ImageSource]:
    """The images a request carries, in order."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == "application/json":
        return _sources_from_json(await read_json(request), max_images)
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


async def read_json(request: Request) -> Any:
    data = await _read_body(request, _MAX_JSON_BYTES, "the JSON body")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None


def url_of(body: Any) -> str:
    """The course's request shape: `{"url": "…"}`."""
    if not isinstance(body, dict) or "url" not in body:
        raise BadRequest('send a JSON object with the image URL: {"url": "https://…"}')
    url = body["url"]
    if not isinstance(url, str):
        raise BadRequest('"url" must be a string')
    return url


def _sources_from_json(body: Any, max_images: int) -> list[ImageSource]:
    if isinstance(body, dict) and "urls" in body:
        urls = body["urls"]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise BadRequest('"urls" must be a list of strings')
        if len(urls) > max_images:
            raise BadRequest(f"{len(urls)} images in one request; the limit is {max_images}")
        return [ImageSource(url=u) for u in urls]
    return [ImageSource(url=url_of(body))]


async def _sources_from_form(request: Request, max_images: int, max_image_bytes: int) -> list[ImageSource]:
    try:
        return await _parse_form(request, max_images, max_image_bytes)
    except python_multipart.exceptions.FormParserError as e:
        # python-multipart's own parse errors (e.g. a body that does not start with the boundary)
        # are not Starlette's MultiPartException, which Starlette answers 400 itself; unmapped they
        # were 500s (found by src/python/reliability/fuzz_test.py).
        raise BadRequest(f"the multipart body is malformed: {e}") from None


async def _parse_form(request: Request, max_images: int, max_image_bytes: int) -> list[ImageSource]:
    async with request.form(max_files=max_images, max_fields=max_images + 8) as form:
        uploads = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not uploads:
            raise BadRequest("the form has no file; attach the image as a file field")
        sources = []
        for upload in uploads:
            if upload.size is not None and upload.size > max_image_bytes:
                name = upload.filename or "the upload"
                raise PayloadTooLarge(f"{name} is {upload.size} bytes; the limit is {max_image_bytes}")
            sources.append(ImageSource(data=await upload.read()))
        return sources


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
