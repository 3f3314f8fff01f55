"""Deterministic, untrained models with the clothing model's interface, so that everything runs and
is tested without downloading weights.

Both take a (batch, 299, 299, 3) float32 image batch (preprocessed the Xception way) and return
(batch, 10) logits, like the course's `xception_v4_large_08_0.894.h5`:

- "tiny": a small CNN, about a millisecond per image; what the local stack and most tests serve.
- "xception": `keras.applications.Xception(weights=None)` nested inside the outer model with the
  course's head (GlobalAveragePooling2D, Dense(100, relu), Dropout(0.2), Dense(10)), the same
  structure as the course model, so exports and servers see a real-sized graph (≈ 21 M weights).

Their scores mean nothing: the export marks them untrained in the model description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import keras

from clothing_preproc.signature import COURSE_MODEL_NAME
from export.exporter import export_model
from export.progress import Progress

DemoKind = Literal["tiny", "xception"]
DEMO_KINDS: tuple[str, ...] = get_args(DemoKind)

IMAGE_SHAPE = (299, 299, 3)
CLASSES = 10


def build_demo_model(kind: str = "tiny", seed: int = 0) -> keras.Model:
    """A seeded, untrained model: (None, 299, 299, 3) float32 -> (None, 10) logits.

    The same `kind` and `seed` give the same weights in every process (with the same Keras).
    """
    if kind == "tiny":
        return _tiny(seed)
    if kind == "xception":
        return _xception(seed)
    raise ValueError(f"unknown demo model kind {kind!r}; one of {', '.join(DEMO_KINDS)}")


def _tiny(seed: int) -> keras.Model:
    # Every initializer gets its own seed, so the weights do not depend on Keras' global random
    # state (nor change it): building the tiny model has no side effects.
    def init(offset: int) -> keras.initializers.Initializer:
        return keras.initializers.GlorotUniform(seed=seed * 1000 + offset)

    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="float32", name="image")
    x = keras.layers.Conv2D(8, 5, strides=4, activation="relu", kernel_initializer=init(1), name="conv1")(
        inputs
    )
    x = keras.layers.MaxPooling2D(3, name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", kernel_initializer=init(2), name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool2")(x)
    # Bias initialised too, so an all-zero image does not map to all-zero logits.
    outputs = keras.layers.Dense(
        CLASSES,
        kernel_initializer=init(3),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=seed * 1000 + 4),
        name="logits",
    )(x)
    return keras.Model(inputs, outputs, name="tiny_clothing_demo")


def _xception(seed: int) -> keras.Model:
    # keras.applications.Xception has no initializer arguments: its weights come from Keras'
    # global random state, which is therefore seeded here (this also seeds Python's and numpy's).
    keras.utils.set_random_seed(seed)
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=IMAGE_SHAPE)
    base.trainable = False
    inputs = keras.Input(shape=IMAGE_SHAPE, dtype="float32", name="image")
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pooling")(x)
    x = keras.layers.Dense(100, activation="relu", name="inner")(x)
    x = keras.layers.Dropout(0.2, name="dropout")(x)
    # An untrained Xception's features are nearly equal for every image; a random bias at least
    # makes the classes' scores differ, as a trained model's do.
    outputs = keras.layers.Dense(
        CLASSES, bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=seed), name="logits"
    )(x)
    return keras.Model(inputs, outputs, name="xception_clothing_demo")


def export_demo_model(
    base: str | Path,
    kind: str = "tiny",
    seed: int = 0,
    name: str = COURSE_MODEL_NAME,
    version: int | None = None,
    *,
    overwrite: bool = False,
    verify: bool = True,
    progress: Progress | None = None,
) -> Path:
    """Build the demo model and export it (marked untrained) under the course's names.

    Returns the version directory, `<base>/<name>/<version>/`.
    """
    progress = progress or Progress()
    with progress.step("build", f"building the untrained {kind} demo model (seed {seed})"):
        model = build_demo_model(kind, seed)
    return export_model(
        model,
        base,
        name,
        version,
        overwrite=overwrite,
        trained=False,
        source=f"demo:{kind}:seed={seed}",
        verify=verify,
        progress=progress,
    )
