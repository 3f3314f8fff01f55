"""Classify, Regress and MultiInference: tf.Examples run through classify and regress signatures.

TF Serving's rules (its classifier, regressor and multi-inference runners), in its order and
words: the signature is looked up by name (empty: serving_default) and must have one input,
`inputs`, and the outputs its method needs (`classes` and/or `scores`; `outputs`). The examples
are serialized and fed to that input as one DT_STRING batch (an input of another dtype gets
TensorFlow's dtype error); what the graph makes of them is TensorFlow's business. The outputs are then held
to the shapes and dtypes a result needs: classification `[batch, classes]` (scores float,
classes string), regression `[batch]` or `[batch, 1]` float, one row per example.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf import text_format

from clothing_protos import input_pb2, meta_graph_pb2, tensor_pb2
from model_server.errors import InvalidArgument, Unimplemented
from model_server.saved_model import SavedModel
from model_server.signatures import CLASSIFY_METHOD, DEFAULT_SIGNATURE, REGRESS_METHOD, tf_type_name

# tensorflow/python/saved_model/signature_constants.py
CLASSIFY_INPUTS = "inputs"
CLASSIFY_OUTPUT_CLASSES = "classes"
CLASSIFY_OUTPUT_SCORES = "scores"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"

# What a classification is: (label, score) per class, one list per example.
Classifications = list[list[tuple[str, float]]]


class Method(enum.Enum):
    CLASSIFY = CLASSIFY_METHOD
    REGRESS = REGRESS_METHOD


@dataclass(frozen=True)
class Task:
    """One signature to run on the examples: its graph input and the outputs to fetch."""

    signature_name: str
    method: Method
    input_tensor: str
    input_dtype: int
    classes_tensor: str | None = None
    scores_tensor: str | None = None
    outputs_tensor: str | None = None

    @property
    def fetch(self) -> tuple[str, ...]:
        names = (self.classes_tensor, self.scores_tensor, self.outputs_tensor)
        return tuple(n for n in names if n is not None)


@dataclass(frozen=True)
class TaskResult:
    signature_name: str
    method: Method
    classifications: Classifications | None = None
    regressions: list[float] | None = None


def serialized_examples(input_: input_pb2.Input) -> npt.NDArray[Any]:
    """The request's examples as a DT_STRING batch, each with the context's features added.

    TF Serving joins the context's bytes and each example's: parsed together, the example's own
    value for a feature both have wins, as protobuf merges maps.
    """
    kind = input_.WhichOneof("kind")
    if kind == "example_list":
        items = [e.SerializeToString() for e in input_.example_list.examples]
    elif kind == "example_list_with_context":
        context = input_.example_list_with_context.context.SerializeToString()
        items = [context + e.SerializeToString() for e in input_.example_list_with_context.examples]
    else:
        items = []
    if not items:
        raise InvalidArgument("Input is empty.")
    batch = np.empty(len(items), dtype=object)
    batch[:] = items
    return batch


def signature_name(requested: str) -> str:
    return requested or DEFAULT_SIGNATURE


def _debug_string(signature: meta_graph_pb2.SignatureDef) -> str:
    return text_format.MessageToString(signature)


def classification_task(name: str, signature: meta_graph_pb2.SignatureDef) -> Task:
    if len(signature.inputs) != 1:
        raise InvalidArgument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise InvalidArgument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if CLASSIFY_INPUTS not in signature.inputs:
        raise InvalidArgument(f"No classification inputs found in SignatureDef: {_debug_string(signature)}")
    classes = signature.outputs.get(CLASSIFY_OUTPUT_CLASSES)
    scores = signature.outputs.get(CLASSIFY_OUTPUT_SCORES)
    if classes is None and scores is None:
        raise InvalidArgument(
            "Expected classification signature outputs to contain at least one of "
            f'"{CLASSIFY_OUTPUT_CLASSES}" or "{CLASSIFY_OUTPUT_SCORES}". '
            f"Signature was: {_debug_string(signature)}"
        )
    return Task(
        signature_name=name,
        method=Method.CLASSIFY,
        input_tensor=signature.inputs[CLASSIFY_INPUTS].name,
        input_dtype=int(signature.inputs[CLASSIFY_INPUTS].dtype),
        classes_tensor=classes.name if classes is not None else None,
        scores_tensor=scores.name if scores is not None else None,
    )


def regression_task(name: str, signature: meta_graph_pb2.SignatureDef) -> Task:
    if len(signature.inputs) != 1:
        raise InvalidArgument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise InvalidArgument("Expected one output Tensor.")
    if REGRESS_INPUTS not in signature.inputs:
        raise InvalidArgument(f"No regression inputs found in SignatureDef: {_debug_string(signature)}")
    if REGRESS_OUTPUTS not in signature.outputs:
        raise InvalidArgument(f"No regression outputs found in SignatureDef: {_debug_string(signature)}")
    return Task(
        signature_name=name,
        method=Method.REGRESS,
        input_tensor=signature.inputs[REGRESS_INPUTS].name,
        input_dtype=int(signature.inputs[REGRESS_INPUTS].dtype),
        outputs_tensor=signature.outputs[REGRESS_OUTPUTS].name,
    )


def single_task(
    method: Method, requested_signature: str, signatures: Mapping[str, meta_graph_pb2.SignatureDef]
) -> Task:
    """The task for a Classify or Regress request, or TF Serving's error for its signature."""
    name = signature_name(requested_signature)
    signature = signatures.get(name)
    if signature is None:
        raise InvalidArgument(f"No signature was found with the name: {name}")
    if method is Method.CLASSIFY:
        return classification_task(name, signature)
    return regression_task(name, signature)


def multi_tasks(
    tasks: Sequence[tuple[str, str, str]], signatures: Mapping[str, meta_graph_pb2.SignatureDef]
) -> list[Task]:
    """The tasks of a MultiInference request, given as (model name, signature name, method name).

    One model, each signature once, every signature reading the same graph input.
    """
    if not tasks:
        raise InvalidArgument("MultiInferenceRequest has no tasks.")
    model = ""
    seen: set[str] = set()
    out: list[Task] = []
    for model_name, requested, method_name in tasks:
        if not model_name:
            raise InvalidArgument("Found ModelSpec with an empty model name.")
        if not model:
            model = model_name
        elif model_name != model:
            raise InvalidArgument(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        name = signature_name(requested)
        if name in seen:
            raise InvalidArgument(f"Duplicate evaluation of signature: {name}")
        seen.add(name)
        signature = signatures.get(name)
        if signature is None:
            raise InvalidArgument(f"Requested signature not found in model graph: {name}")
        if method_name == CLASSIFY_METHOD:
            task = classification_task(name, signature)
        elif method_name == REGRESS_METHOD:
            task = regression_task(name, signature)
        else:
            raise Unimplemented(f"Unsupported signature method_name: {method_name}")
        if out and task.input_tensor != out[0].input_tensor:
            raise InvalidArgument("Input tensor must be the same for all Signatures.")
        out.append(task)
    return out


def check_input_dtype(task: Task) -> None:
    """The examples are a string batch; TensorFlow's session refuses them for any other input
    (in these words, which TF Serving passes on)."""
    if task.input_dtype != tensor_pb2.DT_STRING:
        raise InvalidArgument(f"Expects arg[0] to be {tf_type_name(task.input_dtype)} but string is provided")


def run_tasks(model: SavedModel, tasks: Sequence[Task], input_: input_pb2.Input) -> list[TaskResult]:
    """Run the tasks' signatures on the request's examples in one graph run; one result per task."""
    check_input_dtype(tasks[0])
    examples = serialized_examples(input_)
    fetch = list(dict.fromkeys(name for task in tasks for name in task.fetch))
    values = model.run_tensors({tasks[0].input_tensor: examples}, fetch)
    outputs = dict(zip(fetch, values, strict=True))
    return [task_result(task, len(examples), outputs) for task in tasks]


def _shape_text(array: npt.NDArray[Any]) -> str:
    # TensorShape::DebugString
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def _dtype_name(array: npt.NDArray[Any]) -> str:
    names = {
        np.dtype(np.float32): "DT_FLOAT",
        np.dtype(np.float64): "DT_DOUBLE",
        np.dtype(np.int32): "DT_INT32",
        np.dtype(np.int64): "DT_INT64",
        np.dtype(np.bool_): "DT_BOOL",
        np.dtype(object): "DT_STRING",
    }
    return names.get(array.dtype, f"DT_{array.dtype.name.upper()}")


def task_result(task: Task, num_examples: int, outputs: Mapping[str, npt.NDArray[Any]]) -> TaskResult:
    """A task's result from the graph's outputs (by tensor name), checked as TF Serving checks them."""
    if task.method is Method.CLASSIFY:
        classes = outputs[task.classes_tensor] if task.classes_tensor is not None else None
        scores = outputs[task.scores_tensor] if task.scores_tensor is not None else None
        classifications = _classifications(num_examples, classes, scores)
        return TaskResult(task.signature_name, task.method, classifications=classifications)
    assert task.outputs_tensor is not None
    regressions = _regressions(num_examples, outputs[task.outputs_tensor])
    return TaskResult(task.signature_name, task.method, regressions=regressions)


def _classifications(
    num_examples: int, classes: npt.NDArray[Any] | None, scores: npt.NDArray[Any] | None
) -> Classifications:
    if classes is not None:
        if classes.ndim != 2:
            raise InvalidArgument(
                f"Expected Tensor shape: [batch_size num_classes] but got {_shape_text(classes)}"
            )
        if classes.dtype != object:
            raise InvalidArgument(f"Expected classes Tensor of DT_STRING. Got: {_dtype_name(classes)}")
        if classes.shape[0] != num_examples:
            raise InvalidArgument(
                f"Expected classes output batch size of {num_examples}. Got: {classes.shape[0]}"
            )
    if scores is not None:
        if scores.ndim != 2:
            raise InvalidArgument(
                f"Expected Tensor shape: [batch_size num_classes] but got {_shape_text(scores)}"
            )
        if scores.dtype != np.float32:
            raise InvalidArgument(f"Expected scores Tensor of DT_FLOAT. Got: {_dtype_name(scores)}")
        if scores.shape[0] != num_examples:
            raise InvalidArgument(
                f"Expected scores output batch size of {num_examples}. Got: {scores.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise InvalidArgument(
            "Tensors class and score should match in dim_size(1). "
            f"Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    width = (classes if classes is not None else scores).shape[1]  # type: ignore[union-attr]
    out: Classifications = []
    for i in range(num_examples):
        row = []
        for c in range(width):
            label = _label(classes[i, c]) if classes is not None else ""
            score = float(scores[i, c]) if scores is not None else 0.0
            row.append((label, score))
        out.append(row)
    return out


def _label(value: Any) -> str:
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return raw.decode("utf-8", errors="replace")


def _regressions(num_examples: int, output: npt.NDArray[Any]) -> list[float]:
    if not (output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)):
        raise InvalidArgument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{_shape_text(output)}"
        )
    if output.shape[0] != num_examples:
        raise InvalidArgument(
            f"Input batch size did not match output batch size: {num_examples} vs. {output.shape[0]}"
        )
    if output.dtype != np.float32:
        raise InvalidArgument(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_name(output)}")
    return [float(v) for v in output.reshape(-1)]
