"""Choosing the signature a client sends to: float32 images, or uint8 pixels when the model has them."""

from __future__ import annotations

import pytest

from clothing_preproc import (
    AUTO_SIGNATURE,
    DEFAULT_SIGNATURE,
    PIXELS_SIGNATURE,
    TensorCodecError,
    image_signature,
)
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_OUTPUT_NAME
from clothing_protos import meta_graph_pb2, serving_pb2, tensor_pb2
from testing_support.sample_signatures import image_signature_def


def _model(**signatures: meta_graph_pb2.SignatureDef) -> serving_pb2.SignatureDefMap:
    m = serving_pb2.SignatureDefMap()
    for name, sig in signatures.items():
        m.signature_def[name].CopyFrom(sig)
    return m


EXPORTED = _model(
    serving_default=image_signature_def(COURSE_INPUT_NAME),
    pixels=image_signature_def("pixels", dtype=tensor_pb2.DT_UINT8),
)


def test_auto_takes_the_pixels_signature_when_the_model_has_it() -> None:
    sig = image_signature(EXPORTED, AUTO_SIGNATURE)
    assert (sig.signature_name, sig.input.name, sig.input.dtype) == (PIXELS_SIGNATURE, "pixels", "uint8")
    assert sig.takes_pixels
    assert sig.output.name == COURSE_OUTPUT_NAME
    assert sig.image_size == (299, 299)


def test_auto_falls_back_to_the_default_signature() -> None:
    # A model exported elsewhere: only serving_default.
    only_float = _model(serving_default=image_signature_def(COURSE_INPUT_NAME))
    sig = image_signature(only_float, AUTO_SIGNATURE)
    assert (sig.signature_name, sig.input.name, sig.takes_pixels) == (
        DEFAULT_SIGNATURE,
        COURSE_INPUT_NAME,
        False,
    )
    # A "pixels" signature that does not take uint8 is not what the name promises: not used.
    odd = _model(
        serving_default=image_signature_def(COURSE_INPUT_NAME),
        pixels=image_signature_def("x", dtype=tensor_pb2.DT_FLOAT),
    )
    assert image_signature(odd, AUTO_SIGNATURE).signature_name == DEFAULT_SIGNATURE


def test_auto_respects_the_names_the_user_gave() -> None:
    # An input name only the float signature has: the pixels signature cannot be meant.
    sig = image_signature(EXPORTED, AUTO_SIGNATURE, input_name=COURSE_INPUT_NAME)
    assert sig.signature_name == DEFAULT_SIGNATURE
    # The output name is shared, so the pixels signature still fits.
    by_output = image_signature(EXPORTED, AUTO_SIGNATURE, output_name=COURSE_OUTPUT_NAME)
    assert by_output.signature_name == PIXELS_SIGNATURE


def test_a_named_signature_is_used_as_is() -> None:
    sig = image_signature(EXPORTED, DEFAULT_SIGNATURE)
    assert (sig.signature_name, sig.input.dtype, sig.takes_pixels) == (DEFAULT_SIGNATURE, "float32", False)
    known = r"\(the model has: pixels, serving_default\)"
    with pytest.raises(TensorCodecError, match=rf'signature "nope" not found {known}'):
        image_signature(EXPORTED, "nope")


def test_other_input_types_are_refused_with_the_reason() -> None:
    ints = _model(serving_default=image_signature_def(COURSE_INPUT_NAME, dtype=tensor_pb2.DT_INT32))
    wrong_dtype = f'input "{COURSE_INPUT_NAME}" is int32; an image input is float32'
    with pytest.raises(TensorCodecError, match=wrong_dtype):
        image_signature(ints, DEFAULT_SIGNATURE)
    with pytest.raises(TensorCodecError, match="int32"):
        image_signature(ints, AUTO_SIGNATURE)
