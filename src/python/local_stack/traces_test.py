"""The local stack's --traces-endpoint, as a user runs it: `python -m local_stack` with the flag, an
OTLP/HTTP receiver on loopback standing in for the collector, one image classified, its trace read
back from the receiver."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from clothing_settings import SettingError
from local_stack.settings import parse_settings
from testing_support.image_host import image_bytes
from testing_support.otlp_receiver import OtlpReceiver
from testing_support.ports import free_port
from testing_support.stack_program import StackProcess

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


def test_one_flag_sends_every_requests_trace_to_the_collector(tmp_path: Path) -> None:
    port, grpc_port, rest_port = free_port(), free_port(), free_port()
    with OtlpReceiver() as receiver:
        stack = StackProcess(
            [f"--port={port}", f"--grpc-port={grpc_port}", f"--rest-port={rest_port}",
             f"--cache-dir={tmp_path / 'cache'}", f"--traces-endpoint={receiver.url}"]
        )  # fmt: skip
        try:
            stack.wait_for("ready in", 600)
            assert f"traces: every request's spans to {receiver.url}" in stack.text()
            answer = httpx.post(
                f"http://127.0.0.1:{port}/v1/classify",
                content=image_bytes("JPEG", (320, 240)),
                headers={"Content-Type": "image/jpeg", "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
            names = ("POST /v1/classify", "queue", "decode", "preprocess", "predict")
            spans = receiver.wait_for(
                lambda got: set(names) <= {s.name for s in got if s.trace_id == CLIENT_TRACE}
            )
        finally:
            code = stack.stop()
    assert code == 0, stack.text()[-4000:]
    mine = {s.name: s for s in spans if s.trace_id == CLIENT_TRACE}
    server = mine["POST /v1/classify"]
    assert (server.parent_span_id, server.service_name) == (CLIENT_SPAN, "clothing-gateway")
    assert server.attributes["gateway.request_id"] == answer.headers["x-request-id"]
    # The demo model, through its pixels signature, answered by the local model server.
    predict = mine["predict"]
    assert predict.parent_span_id == server.span_id
    assert (predict.attributes["model.name"], predict.attributes["model.version"]) == ("clothing-model", 1)
    assert predict.attributes["model.signature"] == "pixels"


def test_the_flag_and_its_variable() -> None:
    assert parse_settings([], {}).traces_endpoint is None
    given = parse_settings(["--traces-endpoint", "http://localhost:4318"], {})
    assert given.traces_endpoint == "http://localhost:4318"
    from_variable = parse_settings([], {"CLOTHING_TRACES_ENDPOINT": "https://otel.example/v1/traces"})
    assert from_variable.traces_endpoint == "https://otel.example/v1/traces"


@pytest.mark.parametrize("url", ["localhost:4318", "grpc://localhost:4317", "http://:4318"])
def test_a_bad_endpoint_is_one_line(url: str) -> None:
    with pytest.raises(SettingError) as caught:
        parse_settings(["--traces-endpoint", url], {})
    assert str(caught.value) == (
        f"argument --traces-endpoint: {url!r}: expected an http:// or https:// URL, e.g. http://localhost:4318"
    )
