"""A gateway process whose DNS never answers for some names still serves everyone else at once.

Issue 17: name lookups ran in asyncio's default thread pool (6 threads on 2 cores), so 8 image URLs
whose DNS never answered made a legitimate fetch by name fail with 504. Here the gateway runs as a
real process with the operating system's resolver (getaddrinfo), in a mount namespace of its own
where /etc/resolv.conf names a fake DNS server on loopback: it answers names under `good.test` and
never answers anything under `hung.test`. Needs root and util-linux's `unshare` (CI runs as root).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import numpy as np
import pytest

from clothing_preproc import array_to_tensor_proto
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME
from clothing_protos import prediction_service_pb2_grpc, serving_pb2
from testing_support.image_host import ImageHost, Reply, image_bytes
from testing_support.ports import free_port
from testing_support.predict_only import PredictOnlyServicer
from testing_support.processes import RunningProcess, child_environment, python_module
from testing_support.sample_signatures import available_model_status, image_model_metadata

DNS_ADDRESS = "127.77.0.53"  # port 53: resolv.conf names no port
GOOD_DOMAIN = "good.test"
HUNG_DOMAIN = "hung.test"
THREADS = 6  # as few as asyncio's default pool had on two cores
PER_DOMAIN = 2
DNS_TIMEOUT = 2.0
HUNG_URLS = 40  # more than asyncio's default pool has on any machine (32 at most)


class FakeDns:
    """UDP DNS on loopback: A 127.0.0.1 for names under GOOD_DOMAIN (no data for other types),
    NXDOMAIN for other names, no answer at all under HUNG_DOMAIN (those queries are recorded)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((DNS_ADDRESS, 53))
        self.sock.settimeout(0.2)
        self.hung_queries: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, client = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            answer = self._answer(query)
            if answer is not None:
                self.sock.sendto(answer, client)

    def _answer(self, query: bytes) -> bytes | None:
        labels, at = [], 12
        while query[at]:
            labels.append(query[at + 1 : at + 1 + query[at]].decode("ascii").lower())
            at += 1 + query[at]
        name = ".".join(labels)
        qtype = struct.unpack("!H", query[at + 1 : at + 3])[0]
        question = query[12 : at + 5]
        if name == HUNG_DOMAIN or name.endswith("." + HUNG_DOMAIN):
            self.hung_queries.append(name)
            return None
        good = name.endswith("." + GOOD_DOMAIN)
        rcode = 0 if good else 3
        answers = b""
        if good and qtype == 1:
            answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + socket.inet_aton("127.0.0.1")
        flags = 0x8180 | rcode  # a response, recursion desired and available
        header = query[:2] + struct.pack("!HHHHH", flags, 1, 1 if answers else 0, 0, 0)
        return header + question + answers

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


class FakeServing(PredictOnlyServicer):
    """TF Serving's three calls the gateway makes, for a model with the course's signature."""

    def Predict(self, request: serving_pb2.PredictRequest, context: object) -> serving_pb2.PredictResponse:
        batch = request.inputs[COURSE_INPUT_NAME].tensor_shape.dim[0].size
        response = serving_pb2.PredictResponse()
        logits = np.zeros((batch, 10), np.float32)
        response.outputs[COURSE_OUTPUT_NAME].CopyFrom(array_to_tensor_proto(logits))
        return response

    def GetModelMetadata(
        self, request: serving_pb2.GetModelMetadataRequest, context: object
    ) -> serving_pb2.GetModelMetadataResponse:
        return image_model_metadata(request.model_spec.name)


class FakeStatus(prediction_service_pb2_grpc.ModelServiceServicer):
    def GetModelStatus(
        self, request: serving_pb2.GetModelStatusRequest, context: object
    ) -> serving_pb2.GetModelStatusResponse:
        return available_model_status()


@pytest.fixture(scope="module")
def fake_dns() -> Iterator[FakeDns]:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and util-linux's unshare (CI runs as root)")
    dns = FakeDns()
    yield dns
    dns.close()


@pytest.fixture(scope="module")
def tf_serving() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(FakeServing(), server)
    prediction_service_pb2_grpc.add_ModelServiceServicer_to_server(FakeStatus(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture(scope="module")
def image_server() -> Iterator[ImageHost]:
    host = ImageHost()
    host.routes["/shirt.jpg"] = Reply(200, image_bytes(), {"Content-Type": "image/jpeg"})
    yield host
    host.close()


@pytest.fixture(scope="module")
def gateway(
    fake_dns: FakeDns, tf_serving: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("dns")
    resolv = workdir / "resolv.conf"
    resolv.write_text(f"nameserver {DNS_ADDRESS}\n", encoding="ascii")
    port = free_port()
    env = {
        "TF_SERVING_HOST": tf_serving,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
        "GATEWAY_FETCH_CONNECT_TIMEOUT": "5",
        "GATEWAY_DNS_THREADS": str(THREADS),
        "GATEWAY_DNS_TIMEOUT": str(DNS_TIMEOUT),
        "GATEWAY_DNS_MAX_PER_DOMAIN": str(PER_DOMAIN),
        "GATEWAY_LOG_LEVEL": "warning",
    }
    # The gateway alone sees the fake resolv.conf: a bind mount in a mount namespace of its own.
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    argv = ["unshare", "--mount", "sh", "-c", script, str(resolv), *python_module("gateway")]
    process = RunningProcess("gateway", argv, child_environment(env), workdir / "gateway.log")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.alive(), process.log_tail()
            assert time.monotonic() < deadline, "gateway not ready:\n" + process.log_tail()
            time.sleep(0.1)
        yield url
    finally:
        # Lookups still blocked in getaddrinfo (glibc gives up after 10 s here) must not hold up
        # the exit: their threads are abandoned.
        started = time.monotonic()
        code = process.stop()
        took = time.monotonic() - started
        # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
        assert code in (0, -signal.SIGTERM), process.log_tail()
        assert took < 5, f"the gateway took {took:.1f} s to exit"


# One client for every request: building one per request costs more CPU than the requests.
_CLIENT = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=HUNG_URLS + 4))


def _predict(gateway: str, image_url: str) -> tuple[int, dict[str, object], float]:
    started = time.monotonic()
    response = _CLIENT.post(f"{gateway}/predict", json={"url": image_url})
    return response.status_code, response.json(), time.monotonic() - started


def test_hung_dns_for_some_names_costs_only_their_requests(
    gateway: str, fake_dns: FakeDns, image_server: ImageHost
) -> None:
    # A new name for every legitimate fetch: a new connection, so a new lookup (a kept-alive
    # connection to a host already resolved would need none).
    names = (f"shop{i}.{GOOD_DOMAIN}" for i in range(100))

    def good() -> str:
        return image_server.url("/shirt.jpg", next(names))

    status, body, _ = _predict(gateway, good())
    assert status == 200, body
    with ThreadPoolExecutor(HUNG_URLS) as pool:
        hung = [
            pool.submit(_predict, gateway, f"http://img{i}.{HUNG_DOMAIN}:{image_server.port}/x.jpg")
            for i in range(HUNG_URLS)
        ]
        # Every hung request in flight: the resolver has seen some of their names, and the rest
        # have had time to arrive.
        deadline = time.monotonic() + 10
        while len(set(fake_dns.hung_queries)) < PER_DOMAIN:
            assert time.monotonic() < deadline, "no hung lookup reached the fake DNS server"
            time.sleep(0.02)
        time.sleep(0.5)
        # While every hung lookup is pending, and after their requests have given up (their
        # threads still blocked in getaddrinfo), a fetch by name is answered at once.
        for _ in range(3):
            status, body, took = _predict(gateway, good())
            assert (status, took < 1.0) == (200, True), (status, body, took)
        answers = [f.result() for f in hung]
    for status, body, took in answers:
        assert status == 504, body
        assert body["error"]["code"] == "image_host_timeout"  # type: ignore[index]
        assert took < DNS_TIMEOUT + 2
    for _ in range(3):
        status, body, took = _predict(gateway, good())
        assert (status, took < 1.0) == (200, True), (status, body, took)
    # At most PER_DOMAIN of the hung names ever reached the resolver: the others waited their turn
    # without taking a thread, and gave up at the lookup timeout.
    assert 0 < len(set(fake_dns.hung_queries)) <= PER_DOMAIN, sorted(set(fake_dns.hung_queries))
