"""TF Serving's REST JSON: predict, classify and regress bodies in, results out, with its messages.

Request: `{"signature_name": …, "instances": [...]}` (row format: one item per example, or one
object per example with a key per input) or `{"inputs": …}` (columnar: one value, or an object
with a key per input), never both; `{"b64": "…"}` for binary strings. Input dtypes come from the
signature, as in TF Serving, so a JSON value of the wrong kind is the request's error.
Response: `predictions` for row requests, `outputs` for columnar ones; float32 numbers are written
with the fewest digits that read back as the same float32, as TF Serving does (0.1, not
0.10000000149011612).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from clothing_preproc import numpy_dtype
from clothing_preproc.errors import TensorCodecError
from clothing_protos import example_pb2, input_pb2, tensor_pb2
from model_server.errors import InvalidArgument, Unimplemented
from model_server.signatures import Signature, TensorBinding, tf_type_name

_MAX_SHOWN = 200  # characters of a JSON value quoted in an error message
# numpy's limit on dimensions; a JSON value nested deeper is refused before it is converted.
MAX_JSON_RANK = 64


class Format(enum.Enum):
    ROW = "instances"
    COLUMNAR = "inputs"


@dataclass(frozen=True)
class ParsedPredict:
    signature_name: str
    format: Format
    inputs: dict[str, npt.NDArray[Any]]


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, separators=(",", ":"), default=str)
    except RecursionError:
        return "(nested too deeply to show)"
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "…"


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def parse_predict_body(body: bytes, signature_for: Callable[[str], Signature]) -> ParsedPredict:
    """Parse a `:predict` body against the signature it names (looked up by `signature_for`)."""
    doc = _load_object(body)
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise InvalidArgument(
            f"JSON Value: {_shown(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    signature = signature_for(name)
    bindings = signature.inputs
    if not bindings:
        raise InvalidArgument(f"Failed to get input map for signature: {name or 'DEFAULT'}")
    if "instances" in doc and "inputs" in doc:
        raise InvalidArgument(
            f"JSON Value: {_shown(doc)} Not formatted correctly expecting only one of 'inputs' or "
            "'instances' keys to exist "
        )
    try:
        if "instances" in doc:
            return ParsedPredict(name, Format.ROW, _from_instances(doc, bindings))
        if "inputs" in doc:
            return ParsedPredict(name, Format.COLUMNAR, _from_inputs(doc["inputs"], bindings))
    except RecursionError:
        # Only inputs of unknown rank are walked without a depth check first (`_check_rank`).
        raise InvalidArgument("JSON Value is nested too deeply for the signature's inputs") from None
    raise InvalidArgument("Missing 'inputs' or 'instances' key")


def _from_instances(
    doc: dict[str, Any], bindings: Mapping[str, TensorBinding]
) -> dict[str, npt.NDArray[Any]]:
    instances = doc["instances"]
    if not isinstance(instances, list):
        raise InvalidArgument(f"JSON Value: {_shown(doc)} Excepting 'instances' to be an list/array")
    if not instances:
        raise InvalidArgument(f"JSON Value: {_shown(doc)} No values in 'instances' array")
    objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not objects:
        if len(bindings) > 1:
            raise InvalidArgument(
                "instances is a plain list, but expecting list of objects as multiple input tensors "
                "required as per tensorinfo_map"
            )
        for index, item in enumerate(instances):
            if isinstance(item, dict) and not _is_b64(item):
                raise InvalidArgument(f"Expecting value/list but got object at item {index} of input list")
        (alias, binding), = bindings.items()
        return {alias: _to_array(instances, binding, row_items=True)}
    names = set(bindings)
    for index, item in enumerate(instances):
        if not isinstance(item, dict) or _is_b64(item):
            raise InvalidArgument(f"Expecting object but got list at item {index} of input list")
        for key in item:
            if key not in bindings:
                raise InvalidArgument(
                    f"Failed to process element: {index} key: {key} of 'instances' list. Error: "
                    f"INVALID_ARGUMENT: JSON object: does not have named input: {key}"
                )
        if set(item) != names:
            raise InvalidArgument(
                f"Failed to process element: {index} of 'instances' list. JSON object: {_shown(item)} "
                f"must only have keys: {','.join(sorted(names))}"
            )
    return {
        alias: _to_array([item[alias] for item in instances], binding, row_items=True)
        for alias, binding in bindings.items()
    }


def _from_inputs(value: Any, bindings: Mapping[str, TensorBinding]) -> dict[str, npt.NDArray[Any]]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(bindings) > 1:
            raise InvalidArgument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        (alias, binding), = bindings.items()
        return {alias: _to_array(value, binding)}
    out: dict[str, npt.NDArray[Any]] = {}
    for alias, binding in bindings.items():
        if alias not in value:
            raise InvalidArgument(f"Missing named input: {alias} in 'inputs' object.")
        out[alias] = _to_array(value[alias], binding)
    return out


def _to_array(value: Any, binding: TensorBinding, row_items: bool = False) -> npt.NDArray[Any]:
    _check_rank(value, binding)
    dtype = binding.dtype
    if dtype == tensor_pb2.DT_STRING:
        return _string_array(value)
    try:
        target = numpy_dtype(dtype)
    except TensorCodecError:
        raise Unimplemented(
            f"Conversion of JSON Value: {_shown(value)} to type: {tf_type_name(dtype)}"
        ) from None
    # Every leaf must be a JSON number (true/false for bool) before numpy sees the value: one
    # string among numbers would make np.asarray build a unicode array as wide as the longest
    # string for every element (a 1 MB body could ask for gigabytes).
    bad = _first_misfit(value, lambda v: _json_number_fits(v, target.kind))
    if bad is not _ALL_FIT:
        raise InvalidArgument(
            f"JSON Value: {_shown(bad)} Type: {_json_type(bad)} is not of expected type: "
            f"{tf_type_name(dtype)}"
        )
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError, TypeError):
        array = np.asarray(None, dtype=object)
    if array.dtype == object:
        irregular = _irregular(value)
        if irregular:
            raise InvalidArgument(irregular)
    if not _kind_fits(array.dtype.kind, target.kind):
        bad = _first_leaf(value, lambda v: _leaf_fits(v, target.kind))
        raise InvalidArgument(
            f"JSON Value: {_shown(bad)} Type: {_json_type(bad)} is not of expected type: "
            f"{tf_type_name(dtype)}"
        )
    if target.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            cast = array.astype(target)
        lost = np.isfinite(array) & ~np.isfinite(cast)
        if lost.any():
            raise InvalidArgument(
                f"Cannot convert JSON value: {float(array[lost].flat[0])!r} to {tf_type_name(dtype)} "
                "without loss of precision."
            )
        return cast
    if target.kind in "iu" and array.size:
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            bad = array[(array < info.min) | (array > info.max)].flat[0]
            raise InvalidArgument(
                f"JSON Value: {int(bad)} Type: Number is not of expected type: {tf_type_name(dtype)}"
            )
    return array.astype(target)


def _check_rank(value: Any, binding: TensorBinding) -> None:
    """Refuse a value nested deeper than a tensor can be, or than the input's placeholder takes,
    before building anything.

    The JSON's depth is read along its first items (no recursion, no copy), so a deeply nested
    document is refused with the shape message the array would have got, not walked or converted.
    Other inputs take any rank: the graph decides, as in TF Serving.
    """
    shape = _shape(value)
    want = binding.fed_shape
    if want is not None and len(shape) != len(want):
        raise InvalidArgument(
            f"input tensor {binding.alias} has shape {_shape_text(shape)}, but the model's input "
            f"takes {_shape_text(want)} (-1 = any size)"
        )
    if len(shape) > MAX_JSON_RANK:
        raise InvalidArgument(
            f"input tensor {binding.alias} is nested {len(shape)} lists deep; a JSON input may have "
            f"at most {MAX_JSON_RANK} dimensions"
        )


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _kind_fits(kind: str, target_kind: str) -> bool:
    if target_kind == "f":
        return kind in "iuf"
    if target_kind in "iu":
        return kind in "iu"
    if target_kind == "b":
        return kind == "b"
    return kind == target_kind


def _json_number_fits(value: Any, target_kind: str) -> bool:
    """A JSON leaf of the kind a numeric input takes (its range is checked once it is an array)."""
    if target_kind == "b":
        return isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _leaf_fits(value: Any, target_kind: str) -> bool:
    if isinstance(value, list | dict) or value is None:
        return False
    return _kind_fits(np.asarray(value).dtype.kind, target_kind)


_ALL_FIT = object()


def _first_misfit(value: Any, ok: Callable[[Any], bool]) -> Any:
    """The first leaf `ok` refuses, in document order, or `_ALL_FIT`."""
    # A stack popped from its end keeps this linear in the number of values.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif not ok(item):
            return item
    return _ALL_FIT


def _first_leaf(value: Any, ok: Callable[[Any], bool]) -> Any:
    bad = _first_misfit(value, ok)
    return value if bad is _ALL_FIT else bad


def _irregular(value: Any) -> str:
    """TF Serving's message for a nested list whose lists differ in length, or '' if regular."""
    expected = _shape(value)

    def walk(v: Any, level: int) -> str:
        if isinstance(v, list):
            if level >= len(expected):
                return f"Encountered list at unexpected level: {level} expected < {len(expected)}"
            if len(v) != expected[level]:
                return (
                    f"Encountered list at unexpected size: {len(v)} at level: {level} "
                    f"expected size: {expected[level]}"
                )
            for item in v:
                found = walk(item, level + 1)
                if found:
                    return found
            return ""
        if level != len(expected):
            return (
                f"JSON Value: {_shown(v)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {len(expected)}"
            )
        return ""

    return walk(value, 0)


def _string_array(value: Any) -> npt.NDArray[Any]:
    irregular = _irregular(value)
    if irregular:
        raise InvalidArgument(irregular)

    def convert(v: Any) -> Any:
        if isinstance(v, list):
            return [convert(x) for x in v]
        if isinstance(v, str):
            return v.encode("utf-8")
        if _is_b64(v):
            try:
                return base64.b64decode(v["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise InvalidArgument("Unable to base64 decode") from None
        raise InvalidArgument(
            f"JSON Value: {_shown(v)} Type: {_json_type(v)} is not of expected type: string"
        )

    converted = convert(value)
    out = np.empty(_shape(converted), dtype=object)
    _fill(out, converted)
    return out


def _shape(v: Any) -> tuple[int, ...]:
    dims: list[int] = []
    while isinstance(v, list):
        dims.append(len(v))
        if not v:
            break
        v = v[0]
    return tuple(dims)


def _fill(out: npt.NDArray[Any], converted: Any) -> None:
    if out.ndim == 0:
        out[()] = converted
        return
    flat: list[Any] = []
    stack = [converted]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    out.reshape(-1)[:] = flat


# --- classify and regress requests ------------------------------------------------------------

_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _load_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:
        # ValueError includes integers of more than 4,300 digits (Python's conversion limit).
        raise InvalidArgument(f"JSON Parse error: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"JSON Value: {_shown(doc)} Is not object")
    return doc


def parse_examples_body(body: bytes) -> tuple[str, input_pb2.Input]:
    """A `:classify` or `:regress` body: its signature name and its examples as an Input.

    `{"signature_name": …, "context": {feature: value}, "examples": [{feature: value}, …]}`; a
    value is a number, a string, `{"b64": …}`, true/false, or a flat list of one of these.
    """
    doc = _load_object(body)
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise InvalidArgument(
            f"JSON Value: {_shown(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    input_ = input_pb2.Input()
    has_context = "context" in doc
    if has_context:
        _fill_example(doc["context"], input_.example_list_with_context.context)
    if "examples" not in doc:
        # TF Serving says "classify" for :regress too.
        raise InvalidArgument(
            f"JSON Value: {_shown(doc)} When method is classify, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise InvalidArgument(f"JSON Value: {_shown(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise InvalidArgument(f"JSON Value: {_shown(doc)} 'examples' value is an empty array")
    target = input_.example_list_with_context.examples if has_context else input_.example_list.examples
    for item in examples:
        _fill_example(item, target.add())
    return name, input_


_FEATURE_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}


def _fill_example(value: Any, example: example_pb2.Example) -> None:
    if not isinstance(value, dict):
        raise InvalidArgument(f"Example must be JSON object but got JSON {_json_type(value)}")
    for name, content in value.items():
        feature = example.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)


def _add_feature_value(value: Any, name: str, feature: example_pb2.Feature) -> None:
    def kind(wanted: str) -> None:
        current = feature.WhichOneof("kind")
        if current is not None and current != wanted:
            raise InvalidArgument(
                f"Unexpected element type in feature: {name} expecting type: {_FEATURE_KIND_NAMES[current]}"
            )

    if value is None or isinstance(value, list) or (isinstance(value, dict) and not _is_b64(value)):
        raise InvalidArgument(f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}")
    if isinstance(value, bool):
        kind("int64_list")
        feature.int64_list.value.append(1 if value else 0)
    elif isinstance(value, dict):
        kind("bytes_list")
        try:
            feature.bytes_list.value.append(base64.b64decode(value["b64"], validate=True))
        except (binascii.Error, ValueError):
            raise InvalidArgument("Unable to base64 decode") from None
    elif isinstance(value, str):
        kind("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8"))
    elif isinstance(value, float):
        kind("float_list")
        if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
            raise InvalidArgument(f"Cannot convert JSON value: {value!r} to float without loss of precision.")
        feature.float_list.value.append(value)
    else:
        kind("int64_list")
        if _INT64_MAX < value <= _UINT64_MAX:
            raise InvalidArgument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise InvalidArgument(f"Feature: {name} has element with unexpected JSON type: Number")
        feature.int64_list.value.append(value)


# --- responses ---------------------------------------------------------------------------------


def _float32_json(value: float) -> float:
    # Shortest decimal that reads back as the same float32 (TF Serving's WriteDecimal).
    return float(str(np.float32(value)))


def classify_response_json(classifications: Sequence[Sequence[tuple[str, float]]]) -> bytes:
    """`{"results": [[[label, score], …] per example]}`."""
    rows = [[[label, _float32_json(score)] for label, score in row] for row in classifications]
    return _dumps({"results": rows})


def regress_response_json(values: Sequence[float]) -> bytes:
    """`{"results": [value per example]}`."""
    return _dumps({"results": [_float32_json(v) for v in values]})


def _json_values(alias: str, array: npt.NDArray[Any]) -> Any:
    if array.dtype == np.float32 or array.dtype == np.float16:
        # Shortest decimal that reads back as the same float32: TF Serving's WriteDecimal.
        return np.asarray(array.astype(str), dtype=np.float64).tolist()
    if array.dtype == object:
        def text(b: Any) -> Any:
            raw = b if isinstance(b, bytes) else str(b).encode("utf-8")
            if alias.endswith("_bytes"):
                return {"b64": base64.b64encode(raw).decode("ascii")}
            return raw.decode("utf-8", errors="replace")

        return np.vectorize(text, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def predict_response_json(outputs: Mapping[str, npt.NDArray[Any]], fmt: Format) -> bytes:
    """The response body for a row or columnar request."""
    if fmt is Format.COLUMNAR:
        if len(outputs) == 1:
            ((alias, array),) = outputs.items()
            body: dict[str, Any] = {"outputs": _json_values(alias, array)}
        else:
            body = {"outputs": {alias: _json_values(alias, array) for alias, array in outputs.items()}}
        return _dumps(body)
    batch: int | None = None
    for alias, array in outputs.items():
        if array.ndim == 0:
            raise InvalidArgument(f"Tensor name: {alias} has no shape information ")
        if batch is None:
            batch = array.shape[0]
        elif array.shape[0] != batch:
            raise InvalidArgument(
                f"Tensor name: {alias} has inconsistent batch size: {array.shape[0]} expecting: {batch}"
            )
    if len(outputs) == 1:
        ((alias, array),) = outputs.items()
        return _dumps({"predictions": _json_values(alias, array)})
    columns = {alias: _json_values(alias, array) for alias, array in outputs.items()}
    rows = [{alias: columns[alias][i] for alias in columns} for i in range(batch or 0)]
    return _dumps({"predictions": rows})


def _dumps(body: Any) -> bytes:
    # NaN and infinities are written as TF Serving writes them (NaN, Infinity, -Infinity).
    return json.dumps(body, separators=(",", ":"), allow_nan=True).encode("utf-8")
