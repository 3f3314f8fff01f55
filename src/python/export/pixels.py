"""The export's `pixels` signature: uint8 RGB in, `preprocess_input` done inside the graph.

A client sending pixels sends 1 byte per value instead of 4 (268 kB instead of 1 MB for one
299×299 image) and does no float work; TF Serving casts and normalises with the same float32
operations, in the same order, as `keras.applications.<family>.preprocess_input` (and
clothing_preproc's `preprocess_input`), so the model sees the very same numbers. Each step is an
element-wise IEEE operation on a value that started as one of 256 integers, which is why
`pixels_test.py` can prove it for every value, and the export verification checks the whole model.

The divisions are `DivNoNan`, not `RealDiv`: Grappler rewrites a `RealDiv` by a constant into a
multiplication by the reciprocal, which is off in the last bit for 111 of the 256 values in the
"tf" mode (measured in pixels_test.py's development). `DivNoNan` by a non-zero constant divides
exactly, as Eigen's `x / y`, and is left alone.
"""

from __future__ import annotations

import tensorflow as tf

from clothing_preproc import family_mode
from clothing_preproc.normalize import CAFFE_MEAN_BGR, ONE, TF_SCALE, TORCH_MEAN, TORCH_SCALE, TORCH_STD


def normalise_pixels(pixels: tf.Tensor, family: str) -> tf.Tensor:
    """`preprocess_input(pixels.astype(float32), family)` as graph ops on a (…, 3) uint8 tensor."""
    mode = family_mode(family)
    x = tf.cast(pixels, tf.float32)
    if mode == "tf":
        return tf.math.subtract(_divide(x, TF_SCALE), tf.constant(ONE))
    if mode == "torch":
        x = _divide(x, TORCH_SCALE)
        x = tf.math.subtract(x, tf.constant(TORCH_MEAN))
        return _divide(x, TORCH_STD)
    if mode == "caffe":
        return tf.math.subtract(tf.reverse(x, axis=[-1]), tf.constant(CAFFE_MEAN_BGR))
    return x


def _divide(x: tf.Tensor, divisor: object) -> tf.Tensor:
    """x / divisor (float32 constants) in float32, exactly rounded (see the module's note on DivNoNan)."""
    return tf.math.divide_no_nan(x, tf.constant(divisor))
