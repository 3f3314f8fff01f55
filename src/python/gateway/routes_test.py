"""The model block of the classification answers: what the page reads to warn about the demo model."""

from __future__ import annotations

from clothing_preproc import ModelDescription
from clothing_preproc.signature import COURSE_MODEL_NAME
from gateway.classify import Classification
from gateway.metrics import Metrics
from gateway.routes import Api
from gateway.settings import ServingTarget

RESULT = Classification(results=(), model_name=COURSE_MODEL_NAME, model_version=1, signature_name="pixels")


def _model_block(description: ModelDescription | None) -> object:
    return Api(ServingTarget(), Metrics(), {}, description)._model(RESULT)["model"]


def test_the_untrained_demo_model_is_said_to_be_untrained() -> None:
    block = _model_block(ModelDescription(trained=False, source="demo:tiny:seed=0"))
    assert block == {"name": COURSE_MODEL_NAME, "version": 1, "signature": "pixels", "trained": False}


def test_a_trained_model_is_said_to_be_trained() -> None:
    assert _model_block(ModelDescription(trained=True)) == {
        "name": COURSE_MODEL_NAME,
        "version": 1,
        "signature": "pixels",
        "trained": True,
    }


def test_without_the_description_the_gateway_says_nothing_of_training() -> None:
    assert _model_block(None) == {"name": COURSE_MODEL_NAME, "version": 1, "signature": "pixels"}
