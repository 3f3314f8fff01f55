"""The KServe Python SDK's own clients against the gateway in front of the real model server: its
REST client over the v2 (Open Inference) protocol and over v1 (TF Serving's REST API), and its gRPC
client over `inference.GRPCInferenceService`. Each gets the gateway's own route's numbers for the
same image, equal as float32."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
import pytest
from kserve import (  # type: ignore[import-untyped]
    InferenceGRPCClient,
    InferenceRESTClient,
    InferInput,
    InferRequest,
    RESTConfig,
)

from interop_clients.stack import IMAGES, MODEL_NAME, Stack


def _request(binary: bool) -> InferRequest:
    image = InferInput("image", [len(IMAGES)], "BYTES")
    # JSON strings cannot hold raw bytes: without binary data the elements are base64 text.
    data = IMAGES if binary else [base64.b64encode(i) for i in IMAGES]
    image.set_data_from_numpy(np.array(data, dtype=np.object_), binary_data=binary)
    return InferRequest(model_name=MODEL_NAME, infer_inputs=[image], request_id="kserve-1")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary-data"])
def test_rest_client_v2_gets_the_gateways_numbers(stack: Stack, binary: bool) -> None:
    async def call() -> Any:
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0)) as client:
            assert await client.is_server_ready(stack.url)
            assert await client.is_model_ready(stack.url, MODEL_NAME)
            return await client.infer(stack.url, _request(binary), model_name=MODEL_NAME)

    response = asyncio.run(call())
    logits = response.get_output_by_name("logits").as_numpy()
    assert logits.dtype == np.float32
    assert logits.shape == (len(IMAGES), 10)
    for row, image in zip(logits, IMAGES, strict=True):
        assert row.tolist() == stack.own_logits(image).tolist()
    labels = response.get_output_by_name("labels").as_numpy()
    assert len(labels) == 10
    assert response.id == "kserve-1"


def test_rest_client_v1_gets_the_gateways_numbers(stack: Stack) -> None:
    body = {"instances": [{"b64": base64.b64encode(i).decode()} for i in IMAGES]}

    async def call() -> Any:
        async with InferenceRESTClient(RESTConfig(protocol="v1", retries=0)) as client:
            return await client.infer(stack.url, body, model_name=MODEL_NAME)

    answer = asyncio.run(call())
    assert isinstance(answer, dict)
    predictions = answer["predictions"]
    assert len(predictions) == len(IMAGES)
    for prediction, image in zip(predictions, IMAGES, strict=True):
        assert np.array(prediction["logits"], np.float32).tolist() == stack.own_logits(image).tolist()
        assert sum(prediction["scores"]) == pytest.approx(1.0, rel=1e-6)


def test_grpc_client_v2_gets_the_gateways_numbers(stack: Stack) -> None:
    async def call() -> Any:
        client = InferenceGRPCClient(stack.grpc_address, timeout=60, retries=0)
        try:
            assert await client.is_server_live()
            assert await client.is_server_ready()
            assert await client.is_model_ready(MODEL_NAME)
            return await client.infer(_request(binary=True))
        finally:
            await client.close()

    response = asyncio.run(call())
    logits = response.get_output_by_name("logits").as_numpy()
    assert logits.dtype == np.float32
    for row, image in zip(logits, IMAGES, strict=True):
        assert row.tolist() == stack.own_logits(image).tolist()
