"""The `pixels` signature's in-graph normalisation equals preprocess_input for every uint8 value."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from clothing_preproc import FAMILY_MODES, preprocess_input
from export.pixels import normalise_pixels

# One family per mode: the mode decides the arithmetic.
FAMILIES = sorted({mode: family for family, mode in FAMILY_MODES.items()}.values())


def _every_value() -> np.ndarray:
    """(1, 16, 16, 3) uint8 holding all 256 values in each channel, a different value per channel
    at each pixel (so a channel flip that went wrong would show)."""
    values = np.arange(256, dtype=np.int64).reshape(16, 16)
    return np.stack([(values + 85 * c) % 256 for c in range(3)], axis=-1).astype(np.uint8)[np.newaxis]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_graph_normalises_every_value_exactly_as_preprocess_input(family: str) -> None:
    pixels = _every_value()
    # As TF Serving runs it: a traced graph (Grappler's rewrites included), not op by op.
    graph = tf.function(lambda x: normalise_pixels(x, family))
    got = graph(tf.constant(pixels)).numpy()
    expected = np.ascontiguousarray(preprocess_input(pixels.astype(np.float32), family))
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    # Bit for bit: compare the float32 patterns, not values within a tolerance.
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_a_plain_division_by_a_constant_would_not_be_exact() -> None:
    # Why pixels.py divides with DivNoNan: in a graph, Grappler turns x / 127.5 into
    # x * (1 / 127.5), a different float32 result for some values. If TensorFlow stops doing that,
    # this fails and the workaround can go.
    pixels = _every_value()
    plain = tf.function(lambda x: tf.cast(x, tf.float32) / 127.5 - 1.0)(tf.constant(pixels)).numpy()
    expected = preprocess_input(pixels.astype(np.float32), "xception")
    assert not np.array_equal(plain.view(np.uint32), expected.view(np.uint32))


def test_an_unknown_family_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown preprocessing family 'vit'"):
        normalise_pixels(tf.constant(_every_value()), "vit")
