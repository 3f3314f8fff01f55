"""The demo models: the clothing model's interface, deterministic, and servable end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clothing_preproc import ModelDescription
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME
from export.demo import build_demo_model, export_demo_model
from export.verify import serving_session


def test_tiny_has_the_clothing_interface_and_is_seeded(images: np.ndarray) -> None:
    model = build_demo_model("tiny", seed=0)

    assert tuple(model.inputs[0].shape) == (None, 299, 299, 3)
    assert model.inputs[0].dtype == "float32"
    assert tuple(model.outputs[0].shape) == (None, 10)
    again = build_demo_model("tiny", seed=0).predict(images, verbose=0)
    other = build_demo_model("tiny", seed=1).predict(images, verbose=0)
    scores = model.predict(images, verbose=0)
    assert np.array_equal(scores, again)
    assert not np.array_equal(scores, other)
    # Different images get different scores, or the demo would be useless to look at.
    assert not np.array_equal(scores[0], scores[1])


def test_xception_is_the_course_structure_and_serves(tmp_path: Path, images: np.ndarray) -> None:
    # The one test with the full Xception (~21 M weights, seconds to export and verify).
    version_dir = export_demo_model(tmp_path, kind="xception", seed=0)

    model = build_demo_model("xception", seed=0)
    assert [type(layer).__name__ for layer in model.layers] == [
        "InputLayer",
        "Functional",  # the Xception base, nested as in the course's model
        "GlobalAveragePooling2D",
        "Dense",
        "Dropout",
        "Dense",
    ]
    assert any(type(layer).__name__ == "SeparableConv2D" for layer in model.layers[1].layers)
    with serving_session(version_dir) as served:
        scores = served.predict({COURSE_INPUT_NAME: images[:1]})[COURSE_OUTPUT_NAME]
    # The same seed in a fresh build gives the exported weights back.
    assert np.array_equal(scores, model.predict(images[:1], verbose=0))
    description = ModelDescription.load(version_dir)
    assert description.trained is False
    assert description.source == "demo:xception:seed=0"


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="tiny, xception"):
        build_demo_model("resnet")
