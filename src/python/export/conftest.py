"""Models and model files shared by the export tests: small, built once per test process."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from export.demo import build_demo_model
from testing_support.sample_models import build_keras2_model


@pytest.fixture(scope="session")
def tiny_model() -> keras.Model:
    return build_demo_model("tiny", seed=0)


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """A (2, 299, 299, 3) float32 batch in the Xception input range."""
    return np.random.default_rng(11).uniform(-1.0, 1.0, size=(2, 299, 299, 3)).astype(np.float32)


@pytest.fixture(scope="session")
def keras2_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `.h5` file written by Keras 2 (the tf_keras package), like the course's model file."""
    path = tmp_path_factory.mktemp("keras2") / "course_like.h5"
    build_keras2_model().save(path)
    return path
