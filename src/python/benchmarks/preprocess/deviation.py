"""How far each option beyond the Keras reference moves the model input, and the model's answer.

The model is a small seeded CNN built here (random weights, the clothing model's 299×299×3 → 10
interface), not the trained Xception: no trained weights can be downloaded on this machine. Its
top-1 agreement says how often the option changes the argmax of a model that looks at the
whole picture; a trained model's margins differ, so treat it as an indication.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from clothing_preproc import PreprocessConfig, preprocess_batch
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME


@dataclass(frozen=True)
class Deviation:
    """One option against the reference over a set of images."""

    option: str
    images: str
    max_abs_pixel: float  # in 0..255 units, the largest change of any value
    changed_pct: float  # share of values (pixels × channels) that differ at all
    top1_agreement_pct: float
    mean_abs_logit: float
    mean_margin: float  # the reference's top-1 minus top-2 logit: what a change must beat to flip


def seeded_model(seed: int = 0) -> object:
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((299, 299, 3), name=COURSE_INPUT_NAME)
    x = keras.layers.Conv2D(16, 5, strides=4, activation="relu")(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(64, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, name=COURSE_OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs)


def logits(model: object, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    out = model.predict(batch, batch_size=8, verbose=0)  # type: ignore[attr-defined]
    return np.asarray(out, dtype=np.float32)


def compare(
    model: object,
    option: str,
    images_label: str,
    images: Sequence[bytes],
    reference: PreprocessConfig,
    variant: PreprocessConfig,
) -> Deviation:
    """The option's input and logits against the reference's, image by image."""
    ref = preprocess_batch(images, reference)
    var = preprocess_batch(images, variant)
    # Xception's [-1, 1] back to 0..255 steps, so the figure reads as pixel levels.
    diff = np.abs(ref.astype(np.float64) - var.astype(np.float64)) * 127.5
    ref_logits = logits(model, ref)
    var_logits = logits(model, var)
    agree = np.argmax(ref_logits, axis=1) == np.argmax(var_logits, axis=1)
    return Deviation(
        option=option,
        images=images_label,
        max_abs_pixel=float(diff.max()),
        changed_pct=float((diff > 0).mean() * 100),
        top1_agreement_pct=float(agree.mean() * 100),
        mean_abs_logit=float(np.abs(ref_logits - var_logits).mean()),
        mean_margin=float(np.mean(np.diff(np.sort(ref_logits, axis=1)[:, -2:], axis=1))),
    )
