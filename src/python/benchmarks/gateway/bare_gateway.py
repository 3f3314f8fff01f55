"""The bound: the least CPU a gateway built like this one spends on the course's request here.

`POST /predict {"url": …}` and nothing else: hand-parsed HTTP on asyncio streams, the image
fetched with a hand-written kept-alive GET, this gateway's decode and encoding in one thread per
CPU, one grpc.aio Predict. No checks, limits or metrics: a yardstick, never a server to expose.
`--fetcher gateway` and `--server starlette` put back this gateway's Fetcher and its Starlette
under uvicorn, one at a time.

    python -m benchmarks.gateway.bare_gateway --port 9700 --tf-serving 127.0.0.1:8500 \
        --model-name clothing-model
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import grpc
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clothing_preproc import (
    AUTO_SIGNATURE,
    CLOTHING_LABELS,
    ImageSignature,
    PreprocessConfig,
    array_to_tensor_proto,
    decode_image,
    image_signature,
    tensor_proto_to_array,
    unpack_signature_def_map,
)
from clothing_protos import prediction_service_pb2_grpc, serving_pb2
from gateway.errors import GatewayError
from gateway.fetch import Fetcher, FetchPolicy
from gateway.serving import PREDICT_PATH
from memory_reuse import keep_freed_memory

_END_OF_HEAD = b"\r\n\r\n"


class HttpError(Exception):
    """The peer broke the little HTTP/1.1 this module speaks."""


def _head(raw: bytes) -> tuple[str, dict[str, str]]:
    """The start line and the headers (lower-cased names) of an HTTP/1.1 head."""
    lines = raw.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _length(headers: dict[str, str]) -> int:
    text = headers.get("content-length", "")
    if not text.isdigit():
        raise HttpError("no Content-Length (this bound reads nothing else)")
    return int(text)


class ImageFetcher:
    """GET over kept-alive connections, one idle list per host; a host that says close is obeyed."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    async def fetch(self, url: str) -> bytes:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise HttpError(f"only http:// URLs with a host: {url}")
        key = (parts.hostname, parts.port or 80)
        idle = self._idle.setdefault(key, [])
        reader, writer = idle.pop() if idle else await asyncio.open_connection(*key)
        try:
            writer.write(f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
            status, headers = _head(await reader.readuntil(_END_OF_HEAD))
            body = await reader.readexactly(_length(headers))
        except BaseException:
            writer.close()
            raise
        if headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            idle.append((reader, writer))
        if status.split(" ", 2)[1:2] != ["200"]:
            raise HttpError(f"the image host answered {status}")
        return body


class BareGateway:
    def __init__(
        self, tf_serving: str, model_name: str, threads: int, fetch: Callable[[str], Awaitable[bytes]]
    ) -> None:
        self._model_name = model_name
        options = [("grpc.max_send_message_length", 64 << 20)]
        self._channel = grpc.aio.insecure_channel(tf_serving, options=options)
        self._predict = self._channel.unary_unary(
            PREDICT_PATH,
            request_serializer=None,
            response_deserializer=serving_pb2.PredictResponse.FromString,
        )
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode")
        self._fetch = fetch
        self._signature: ImageSignature | None = None
        self._config = PreprocessConfig()

    async def discover(self) -> None:
        """The model's `pixels` signature, which this gateway finds too (uint8 in, the model normalises)."""
        stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        request = serving_pb2.GetModelMetadataRequest(
            model_spec=serving_pb2.ModelSpec(name=self._model_name), metadata_field=["signature_def"]
        )
        response = await stub.GetModelMetadata(request, timeout=30)
        signatures = unpack_signature_def_map(response.metadata["signature_def"])
        self._signature = image_signature(signatures, AUTO_SIGNATURE)
        if not self._signature.takes_pixels:
            raise SystemExit("bare-gateway: the model has no pixels signature (export it with `export`)")
        if self._signature.image_size is not None:
            self._config = PreprocessConfig(target_size=self._signature.image_size)

    def _request(self, data: bytes) -> bytes:
        """Decode and encode in a pool thread, into the serialised PredictRequest."""
        assert self._signature is not None
        pixels = np.asarray(decode_image(data, self._config))[None, ...]
        request = serving_pb2.PredictRequest()
        request.model_spec.name = self._model_name
        request.model_spec.signature_name = self._signature.signature_name
        array_to_tensor_proto(pixels, into=request.inputs[self._signature.input.name])
        return request.SerializeToString()

    async def answer(self, body: bytes) -> bytes:
        assert self._signature is not None
        data = await self._fetch(json.loads(body)["url"])
        request = await asyncio.get_running_loop().run_in_executor(self._pool, self._request, data)
        response = await self._predict(request, timeout=20)
        logits = tensor_proto_to_array(response.outputs[self._signature.output.name])[0]
        return json.dumps(dict(zip(CLOTHING_LABELS, map(float, logits), strict=True))).encode()

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                start, headers = _head(await reader.readuntil(_END_OF_HEAD))
                body = await reader.readexactly(_length(headers))
                if start.split(" ", 2)[:2] != ["POST", "/predict"]:
                    status, answer = "404 Not Found", b'{"error": "only POST /predict"}'
                else:
                    try:
                        status, answer = "200 OK", await self.answer(body)
                    except _FAILURES as e:
                        status, answer = "502 Bad Gateway", json.dumps({"error": str(e)}).encode()
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(answer)}\r\n\r\n".encode() + answer
                )
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, HttpError):
            pass  # the client went away, or spoke something else: drop the connection
        finally:
            writer.close()


# What the bound answers 502 for: the image host or TF Serving failed.
_FAILURES = (HttpError, GatewayError, OSError, asyncio.IncompleteReadError, grpc.aio.AioRpcError)


async def serve(port: int, tf_serving: str, model_name: str, threads: int, fetcher: str, server: str) -> None:
    if fetcher == "gateway":
        # This gateway's fetcher, allowed to reach the benchmark's image host on loopback.
        fetch = Fetcher(FetchPolicy(allow_networks=(ipaddress.ip_network("127.0.0.0/8"),))).fetch
    else:
        fetch = ImageFetcher().fetch
    gateway = BareGateway(tf_serving, model_name, threads, fetch)
    await gateway.discover()
    if server == "starlette":
        await _serve_starlette(gateway, port)
        return
    listener = await asyncio.start_server(gateway.serve_connection, "127.0.0.1", port, backlog=1024)
    async with listener:
        await listener.serve_forever()


async def _serve_starlette(gateway: BareGateway, port: int) -> None:
    """One Starlette route under uvicorn with httptools, configured as this gateway's server."""

    async def predict(request: Request) -> Response:
        try:
            return Response(await gateway.answer(await request.body()), media_type="application/json")
        except _FAILURES as e:
            return Response(json.dumps({"error": str(e)}), 502, media_type="application/json")

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http="httptools", loop="none", lifespan="off",
        log_level="warning", server_header=False, backlog=1024,
    )  # fmt: skip
    await uvicorn.Server(config).serve()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bare-gateway", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 to serve POST /predict on")
    p.add_argument("--tf-serving", required=True, help="TF Serving's gRPC address, host:port")
    p.add_argument("--model-name", required=True, help="the model's name in TF Serving")
    p.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="decode threads (default: one per CPU)"
    )
    p.add_argument(
        "--fetcher",
        choices=("raw", "gateway"),
        default="raw",
        help="raw: a hand-written GET (default); gateway: this gateway's Fetcher",
    )
    p.add_argument(
        "--server",
        choices=("asyncio", "starlette"),
        default="asyncio",
        help="asyncio: hand-parsed HTTP on asyncio streams (default); starlette: Starlette under uvicorn",
    )
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be at least 1")
    # As this gateway does (GATEWAY_KEEP_FREED_MB): without it glibc faults freed pages in anew.
    keep_freed_memory(64 * 1024 * 1024)
    try:
        asyncio.run(
            serve(args.port, args.tf_serving, args.model_name, args.threads, args.fetcher, args.server)
        )
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
