"""The requests the system tests and the benchmark send, as `load.Send` functions."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from reliability.load import Send


def predict_url(url: str) -> Send:
    """The course's call: POST /predict {"url": …}."""

    async def send(client: httpx.AsyncClient, index: int) -> httpx.Response:
        return await client.post("/predict", json={"url": url})

    return send


def classify_upload(images: Sequence[bytes], content_type: str = "image/jpeg") -> Send:
    """POST /v1/classify with the image as the raw body, cycling through `images`."""

    async def send(client: httpx.AsyncClient, index: int) -> httpx.Response:
        return await client.post(
            "/v1/classify", content=images[index % len(images)], headers={"Content-Type": content_type}
        )

    return send


def alternate(*senders: Send) -> Send:
    """Request i goes out as `senders[i % len(senders)]`: a mix of request kinds at one rate."""

    async def send(client: httpx.AsyncClient, index: int) -> httpx.Response:
        return await senders[index % len(senders)](client, index // len(senders))

    return send
