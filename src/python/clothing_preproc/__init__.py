"""clothing_preproc: image bytes -> model input exactly as Keras computes it, safely.

Public API (everything else is internal):

- `PreprocessConfig`, `Limits`: how to preprocess and what input to refuse.
- `decode_image`, `image_to_array`, `preprocess_input`, `preprocess_image`, `preprocess_batch`,
  `preprocess_path`: the Keras-exact pipeline and its steps; `open_image` (header and limits
  only), `normalize_into` (uint8 pixels -> normalised float32 slot), `family_mode`.
- `array_to_tensor_proto`, `tensor_proto_to_array`: numpy <-> TensorProto without TensorFlow;
  `check_tensor_header` (a peer's tensor checked from its header fields before anything is
  allocated) and its bounds `DEFAULT_MAX_ELEMENTS`, `DEFAULT_MAX_BYTES`, `DEFAULT_MAX_FILL_BYTES`.
- `CLOTHING_LABELS`, `load_labels`, `scores_by_label`, `softmax`, `top_k`: labels and scores.
- `ModelDescription`: the description file export writes beside a model.
- `image_signature`, `pack_signature_def_map`, `unpack_signature_def_map`: model metadata.
- The error tree rooted at `PreprocessingError` (see `clothing_preproc.errors`).
"""

from clothing_preproc.config import RESIZE_FILTERS, Limits, PreprocessConfig
from clothing_preproc.decode import decode_image, open_image
from clothing_preproc.description import DESCRIPTION_FILE, ModelDescription, TensorDescription
from clothing_preproc.errors import (
    InputTooLarge,
    NotAnImage,
    PreprocessingError,
    TensorCodecError,
    TooManyPixels,
    UnreadableImage,
    UnsupportedImage,
)
from clothing_preproc.labels import CLOTHING_LABELS, load_labels, scores_by_label, softmax, top_k
from clothing_preproc.normalize import FAMILY_MODES, family_mode, normalize_into, preprocess_input
from clothing_preproc.preprocess import (
    image_to_array,
    preprocess_batch,
    preprocess_image,
    preprocess_path,
)
from clothing_preproc.signature import (
    AUTO_SIGNATURE,
    DEFAULT_SIGNATURE,
    PIXELS_SIGNATURE,
    PREDICT_METHOD_NAME,
    SIGNATURE_DEF_MAP_TYPE_URL,
    ImageSignature,
    TensorSpec,
    image_signature,
    pack_signature_def_map,
    unpack_signature_def_map,
)
from clothing_preproc.tensor import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ELEMENTS,
    DEFAULT_MAX_FILL_BYTES,
    TensorHeader,
    array_to_tensor_proto,
    check_tensor_header,
    dtype_name,
    numpy_dtype,
    tensor_proto_to_array,
    tensor_shape,
    tf_dtype,
)

__all__ = [
    "CLOTHING_LABELS",
    "AUTO_SIGNATURE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ELEMENTS",
    "DEFAULT_MAX_FILL_BYTES",
    "DEFAULT_SIGNATURE",
    "DESCRIPTION_FILE",
    "FAMILY_MODES",
    "PIXELS_SIGNATURE",
    "PREDICT_METHOD_NAME",
    "RESIZE_FILTERS",
    "SIGNATURE_DEF_MAP_TYPE_URL",
    "ImageSignature",
    "InputTooLarge",
    "Limits",
    "ModelDescription",
    "NotAnImage",
    "PreprocessConfig",
    "PreprocessingError",
    "TensorCodecError",
    "TensorDescription",
    "TensorHeader",
    "TensorSpec",
    "TooManyPixels",
    "UnreadableImage",
    "UnsupportedImage",
    "array_to_tensor_proto",
    "check_tensor_header",
    "decode_image",
    "dtype_name",
    "family_mode",
    "image_signature",
    "image_to_array",
    "load_labels",
    "normalize_into",
    "numpy_dtype",
    "open_image",
    "pack_signature_def_map",
    "preprocess_batch",
    "preprocess_image",
    "preprocess_input",
    "preprocess_path",
    "scores_by_label",
    "softmax",
    "tensor_proto_to_array",
    "tensor_shape",
    "tf_dtype",
    "top_k",
    "unpack_signature_def_map",
]
