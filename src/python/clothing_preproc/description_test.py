"""The model description file export writes and the gateway and model server read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clothing_preproc import CLOTHING_LABELS, DESCRIPTION_FILE, ModelDescription, TensorDescription
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_MODEL_NAME, COURSE_OUTPUT_NAME


def test_defaults_describe_the_course_model() -> None:
    data = json.loads(ModelDescription().to_json())
    assert data == {
        "format": 1,
        "model_name": COURSE_MODEL_NAME,
        "signature_name": "serving_default",
        "method_name": "tensorflow/serving/predict",
        "inputs": {COURSE_INPUT_NAME: {"dtype": "float32", "shape": [-1, 299, 299, 3]}},
        "outputs": {COURSE_OUTPUT_NAME: {"dtype": "float32", "shape": [-1, 10]}},
        "labels": list(CLOTHING_LABELS),
        "preprocessing": {"family": "xception", "target_size": [299, 299]},
        "trained": True,
        "source": "",
    }


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    description = ModelDescription(
        model_name="shoes",
        inputs={"image": TensorDescription("float32", (-1, 224, 224, 3))},
        outputs={"logits": TensorDescription("float32", (-1, 3))},
        labels=("boot", "sandal", "sneaker"),
        family="resnet50",
        target_size=(224, 224),
        trained=False,
        source="demo",
    )
    path = description.save(tmp_path / "1")
    assert path == tmp_path / "1" / DESCRIPTION_FILE
    assert ModelDescription.load(tmp_path / "1") == description


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        "not json",
        '{"format": 2}',
        '{"format": 1, "model_name": "m", "inputs": {"x": {"dtype": "float32"}}}',
    ],
)
def test_invalid_descriptions_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError, match="not a valid model description"):
        ModelDescription.from_json(text)


def test_a_missing_description_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        ModelDescription.load(tmp_path)
