"""Model signatures: what GetModelMetadata returns, packed and unpacked the way TF Serving does."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import any_pb2

from clothing_preproc.errors import TensorCodecError
from clothing_preproc.tensor import dtype_name
from clothing_protos import meta_graph_pb2, serving_pb2, tensor_pb2

# TF Serving's name for the message inside the metadata Any; ours lives in another proto package,
# so the Any is packed by hand with TF Serving's type URL.
SIGNATURE_DEF_MAP_TYPE_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
PREDICT_METHOD_NAME = "tensorflow/serving/predict"
DEFAULT_SIGNATURE = "serving_default"
# The course's names, kept by every export so that the course's clients work unchanged: the model's
# name in TF Serving, and the Keras input and output tensors of its Xception model.
COURSE_MODEL_NAME = "clothing-model"
COURSE_INPUT_NAME = "input_8"
COURSE_OUTPUT_NAME = "dense_7"
# The export's second signature: the same model behind uint8 RGB pixels, normalised in the graph
# exactly as preprocess_input does. A client sends a quarter of the bytes and skips normalising.
PIXELS_SIGNATURE = "pixels"
# Not a signature: asks `image_signature` to take PIXELS_SIGNATURE when the model has a usable one.
AUTO_SIGNATURE = "auto"


def pack_signature_def_map(signatures: serving_pb2.SignatureDefMap) -> any_pb2.Any:
    """An Any holding `signatures` under TF Serving's type URL."""
    return any_pb2.Any(type_url=SIGNATURE_DEF_MAP_TYPE_URL, value=signatures.SerializeToString())


def unpack_signature_def_map(value: any_pb2.Any) -> serving_pb2.SignatureDefMap:
    """The SignatureDefMap inside GetModelMetadata's `signature_def` Any."""
    if not value.type_url.endswith("/tensorflow.serving.SignatureDefMap"):
        raise TensorCodecError(f"metadata holds {value.type_url!r}, not a SignatureDefMap")
    return serving_pb2.SignatureDefMap.FromString(value.value)


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a signature: dtype name ("float32") and shape (-1 = any size)."""

    name: str
    dtype: str
    shape: tuple[int, ...] | None  # None: unknown rank

    @classmethod
    def from_tensor_info(cls, name: str, info: meta_graph_pb2.TensorInfo) -> TensorSpec:
        shape = None if info.tensor_shape.unknown_rank else tuple(d.size for d in info.tensor_shape.dim)
        return cls(name=name, dtype=dtype_name(info.dtype), shape=shape)


@dataclass(frozen=True)
class ImageSignature:
    """The part of a signature an image classifier client needs."""

    signature_name: str
    input: TensorSpec
    output: TensorSpec

    @property
    def takes_pixels(self) -> bool:
        """True if the input is uint8 pixels (normalised by the model), False if float32 (normalised
        by the client)."""
        return self.input.dtype == "uint8"

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(height, width) if the signature fixes them."""
        shape = self.input.shape
        if shape is None or len(shape) != 4 or shape[1] < 1 or shape[2] < 1:
            return None
        return shape[1], shape[2]


def image_signature(
    signatures: serving_pb2.SignatureDefMap,
    signature_name: str = DEFAULT_SIGNATURE,
    input_name: str | None = None,
    output_name: str | None = None,
) -> ImageSignature:
    """Pick the image input and the scores output of a signature.

    With no names given, the signature must have exactly one input (a batch of images: rank 4,
    3 channels; float32, or uint8 pixels the model normalises itself) and one output; names given
    override the discovery. `AUTO_SIGNATURE` takes PIXELS_SIGNATURE if the model has it with a
    uint8 image input (and the names given), else DEFAULT_SIGNATURE.
    """
    if signature_name == AUTO_SIGNATURE:
        try:
            pixels = _image_signature(signatures, PIXELS_SIGNATURE, input_name, output_name)
            if pixels.takes_pixels:
                return pixels
        except TensorCodecError:
            pass  # no usable pixels signature (missing, or not what the names ask for)
        signature_name = DEFAULT_SIGNATURE
    return _image_signature(signatures, signature_name, input_name, output_name)


def _image_signature(
    signatures: serving_pb2.SignatureDefMap,
    signature_name: str,
    input_name: str | None,
    output_name: str | None,
) -> ImageSignature:
    if signature_name not in signatures.signature_def:
        known = ", ".join(sorted(signatures.signature_def)) or "none"
        raise TensorCodecError(f'signature "{signature_name}" not found (the model has: {known})')
    sig = signatures.signature_def[signature_name]
    inp = _pick(sig.inputs, input_name, "input", signature_name)
    out = _pick(sig.outputs, output_name, "output", signature_name)
    spec = TensorSpec.from_tensor_info(inp, sig.inputs[inp])
    if sig.inputs[inp].dtype not in (tensor_pb2.DT_FLOAT, tensor_pb2.DT_UINT8):
        raise TensorCodecError(
            f'input "{inp}" is {spec.dtype}; an image input is float32 (or uint8 pixels)'
        )
    if spec.shape is not None and (len(spec.shape) != 4 or spec.shape[3] not in (-1, 3)):
        raise TensorCodecError(
            f'input "{inp}" has shape {list(spec.shape)}; an image input is (batch, height, width, 3)'
        )
    return ImageSignature(
        signature_name=signature_name,
        input=spec,
        output=TensorSpec.from_tensor_info(out, sig.outputs[out]),
    )


def _pick(
    tensors: object, wanted: str | None, kind: str, signature_name: str
) -> str:
    names = sorted(tensors)  # type: ignore[call-overload]
    if wanted is not None:
        if wanted not in names:
            raise TensorCodecError(
                f'{kind} "{wanted}" not in signature "{signature_name}" (it has: {", ".join(names)})'
            )
        return wanted
    if len(names) != 1:
        raise TensorCodecError(
            f'signature "{signature_name}" has {len(names)} {kind}s ({", ".join(names)}); '
            f"name the one to use"
        )
    return str(names[0])
