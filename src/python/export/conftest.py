"""Models and model files shared by the export tests: small, built once per test process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tf_keras

from export.demo import build_demo_model


@pytest.fixture(scope="session")
def tiny_model() -> keras.Model:
    return build_demo_model("tiny", seed=0)


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    """A (2, 299, 299, 3) float32 batch in the Xception input range."""
    return np.random.default_rng(11).uniform(-1.0, 1.0, size=(2, 299, 299, 3)).astype(np.float32)


def build_keras2_model(seed: int = 0) -> Any:
    """A Keras 2 (tf_keras) model shaped like the course's: a nested base model with
    SeparableConv2D and BatchNormalization, then GAP, Dense(100), Dropout, Dense(10) logits;
    every weight random, so a wrong load or export shows in the outputs."""
    layers = tf_keras.layers
    base_in = layers.Input((299, 299, 3))
    x = layers.SeparableConv2D(8, 3, strides=4, use_bias=False)(base_in)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    base = tf_keras.Model(base_in, x, name="xception_like")
    base.trainable = False
    inputs = layers.Input((299, 299, 3))
    y = base(inputs, training=False)
    y = layers.GlobalAveragePooling2D()(y)
    y = layers.Dense(100, activation="relu")(y)
    y = layers.Dropout(0.2)(y)
    outputs = layers.Dense(10)(y)
    model = tf_keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    model.set_weights(
        [
            rng.uniform(0.5, 1.5, size=w.shape).astype(np.float32)
            if "moving_variance" in v.name
            else rng.normal(0.0, 0.3, size=w.shape).astype(np.float32)
            for v, w in zip(model.weights, model.get_weights(), strict=True)
        ]
    )
    return model


@pytest.fixture(scope="session")
def keras2_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `.h5` file written by Keras 2 (the tf_keras package), like the course's model file."""
    path = tmp_path_factory.mktemp("keras2") / "course_like.h5"
    build_keras2_model().save(path)
    return path
