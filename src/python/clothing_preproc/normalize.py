"""Pixel normalisation: `keras.applications.<family>.preprocess_input`, bit for bit.

Keras normalises a float32 array in place with float32 arithmetic, one operation at a time:

    "tf"     x /= 127.5; x -= 1.0                              -> [-1, 1]
    "torch"  x /= 255.0; x[..., c] -= mean[c]; x[..., c] /= std[c]  (ImageNet mean and std)
    "caffe"  x = x[..., ::-1]; x[..., c] -= mean_bgr[c]         (RGB -> BGR, ImageNet mean)
    "none"   x                                                 (the model rescales in its graph)

Every step is an element-wise IEEE float32 operation on a value that started as an integer in
0..255, so the result depends only on that integer and the step order. Reordering the arithmetic
does change bits (`x * (1 / 127.5) - 1` differs from Keras on 111 of the 256 values), so the steps
are kept; what `normalize_into` fuses is the uint8 -> float32 conversion into the first step and
the caffe channel flip into where it writes, which changes no value.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

Mode = Literal["tf", "caffe", "torch", "none"]

# keras.applications families -> the normalisation their preprocess_input applies (checked against
# each keras.applications module by keras_reference_test.py).
FAMILY_MODES: dict[str, Mode] = {
    "xception": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "nasnet": "tf",
    "resnet_v2": "tf",
    "resnet": "caffe",
    "resnet50": "caffe",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "densenet": "torch",
    # These models rescale inside the graph; their preprocess_input is the identity.
    "efficientnet": "none",
    "efficientnet_v2": "none",
    "convnext": "none",
    "mobilenet_v3": "none",
    "none": "none",
}

# Keras writes these as Python floats; NumPy applies a Python float to a float32 array as float32
# (NEP 50), so the float32 constants below are exactly the operands Keras' arithmetic uses (and the
# ones the export's in-graph normalisation, export/pixels.py, is built from).
_F32 = np.float32
TF_SCALE = _F32(127.5)
ONE = _F32(1.0)
TORCH_SCALE = _F32(255.0)
TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def family_mode(family: str) -> Mode:
    """The normalisation mode of a `keras.applications` family name; ValueError if unknown."""
    try:
        return FAMILY_MODES[family]
    except KeyError:
        raise ValueError(
            f"unknown preprocessing family {family!r}; one of {', '.join(sorted(FAMILY_MODES))}"
        ) from None


def preprocess_input(x: npt.NDArray[np.float32], family: str = "xception") -> npt.NDArray[np.float32]:
    """`keras.applications.<family>.preprocess_input` for channels-last float32, **in place**.

    Returns the normalised array: the same object, except for "caffe", whose channel flip is a
    reversed view of it, as in Keras (`np.ascontiguousarray` it before sending it anywhere).
    """
    if x.dtype != np.float32:
        raise TypeError(f"preprocess_input works on float32 arrays, got {x.dtype}")
    if x.ndim < 1 or x.shape[-1] != 3:
        raise ValueError(f"preprocess_input needs channels-last RGB (…, 3), got shape {x.shape}")
    mode = family_mode(family)
    if mode == "tf":
        x /= TF_SCALE
        x -= ONE
        return x
    if mode == "torch":
        x /= TORCH_SCALE
        x -= TORCH_MEAN
        x /= TORCH_STD
        return x
    if mode == "caffe":
        bgr = x[..., ::-1]
        bgr -= CAFFE_MEAN_BGR
        return bgr
    return x


def normalize_into(
    pixels: npt.NDArray[np.uint8], out: npt.NDArray[np.float32], family: str = "xception"
) -> npt.NDArray[np.float32]:
    """Write `preprocess_input(pixels.astype(float32), family)` into `out`, without temporaries.

    `pixels` is (…, 3) uint8 RGB and `out` a float32 array of the same shape (a slot of a batch,
    typically). Element for element equal to the Keras path, and `out` stays C-ordered even for
    "caffe". Returns `out`.
    """
    if pixels.dtype != np.uint8:
        raise TypeError(f"normalize_into reads uint8 pixels, got {pixels.dtype}")
    if out.dtype != np.float32 or out.shape != pixels.shape:
        raise ValueError(f"out must be float32 of shape {pixels.shape}, got {out.dtype} {out.shape}")
    if pixels.ndim < 1 or pixels.shape[-1] != 3:
        raise ValueError(f"normalize_into needs channels-last RGB (…, 3), got shape {pixels.shape}")
    mode = family_mode(family)
    # `dtype=np.float32` makes the ufunc convert each uint8 to float32 (exact) and compute in
    # float32; without it uint8 combined with a float scalar would be computed in float64.
    if mode == "tf":
        np.divide(pixels, TF_SCALE, out=out, dtype=np.float32)
        np.subtract(out, ONE, out=out)
    elif mode == "torch":
        np.divide(pixels, TORCH_SCALE, out=out, dtype=np.float32)
        np.subtract(out, TORCH_MEAN, out=out)
        np.divide(out, TORCH_STD, out=out)
    elif mode == "caffe":
        # One strided pass per channel is 3× faster than any whole-array pass through the
        # negative-stride view `pixels[..., ::-1]`.
        for c in range(3):
            np.subtract(pixels[..., 2 - c], CAFFE_MEAN_BGR[c], out=out[..., c], dtype=np.float32)
    else:
        np.copyto(out, pixels, casting="safe")
    return out
