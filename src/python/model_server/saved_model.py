"""One SavedModel version loaded the way TF Serving loads it, and run the way TF Serving runs it.

TF Serving (TF1 runtime) loads the `serve` MetaGraph into a fresh graph and session and calls
`Session::Run` with the signature's tensor names. Doing the same here — not `tf.saved_model.load`,
which is more forgiving — means an export that TF Serving cannot serve fails here too (for example
`tf.saved_model.save(keras_model)`: tensorflow/serving#2226, #2250).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy.typing as npt
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

from clothing_protos import meta_graph_pb2
from model_server.errors import Code, ServingError
from model_server.signatures import Signature, signature_map

log = logging.getLogger(__name__)

SERVE_TAG = "serve"

# What TensorFlow adds to a run-time error's cause: where in the graph it happened. The Python
# session adds "Detected at node X defined at (most recent call last):", the Python stack that
# built the node and "Node: 'X'"; the runtime adds "[[{{node X}}]]", "[[X]]" for a function's
# call site and "{{function_node F}}".
# None of it helps a client fix its request, and it maps the model's insides for anyone: clients
# get the cause, the server log gets everything.
_DETECTED_AT = re.compile(r"^Detected at node .* defined at \(most recent call last\):$")
_NODE_LINE = re.compile(r"^Node: '.*'$")
_NODE_ANNOTATION = re.compile(r"\s*\[\[[^\n]*?\]\]")
_FUNCTION_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*")
_NODE_NAME = re.compile(r"\{\{node [^}]*\}\}")


def client_message(message: str) -> str:
    """A TensorFlow error message without the graph's node names and the Python stack."""
    prefix = "Graph execution error:"
    if message.startswith(prefix):
        message = message[len(prefix) :]
    kept: list[str] = []
    in_stack = False
    for line in message.strip().splitlines():
        if _DETECTED_AT.match(line.strip()):
            in_stack = True
            continue
        if in_stack:
            # The stack's lines are indented (or "<stack traces unavailable>"); "Node: 'X'" ends it.
            if line.startswith((" ", "\t")) or line.strip() == "<stack traces unavailable>":
                continue
            in_stack = False
            if _NODE_LINE.match(line.strip()):
                continue
        if _NODE_LINE.match(line.strip()):
            continue
        kept.append(line)
    text = "\n".join(kept)
    text = _NODE_ANNOTATION.sub("", text)
    text = _FUNCTION_NODE.sub("", text)
    text = _NODE_NAME.sub("(a model operation)", text)
    return text.strip() or "The model failed to run this request"


def serving_error(error: BaseException) -> ServingError:
    """A TensorFlow exception as the status TF Serving would answer with, fit for a client."""
    if isinstance(error, ServingError):
        return error
    if isinstance(error, tf.errors.OpError):
        # The full message (node names, the graph's Python stack) stays in the server log.
        log.warning("TensorFlow error (%s): %s", Code(error.error_code).name, error.message)
        return ServingError(client_message(error.message), code=Code(error.error_code))
    if isinstance(error, OSError):
        return ServingError(str(error), code=Code.NOT_FOUND)
    return ServingError(f"{type(error).__name__}: {error}", code=Code.FAILED_PRECONDITION)


class SavedModel:
    """A version folder's `serve` MetaGraph in its own graph and session."""

    def __init__(
        self,
        session: Any,
        signature_defs: Mapping[str, meta_graph_pb2.SignatureDef],
        placeholder_shapes: Mapping[str, tuple[int, ...] | None] | None = None,
    ) -> None:
        self._session = session
        self.signature_defs = dict(signature_defs)
        self.signatures: dict[str, Signature] = signature_map(self.signature_defs, placeholder_shapes or {})
        self._callables: dict[tuple[tuple[str, ...], tuple[str, ...]], Callable[..., Any]] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path, intra_op_threads: int = 0, inter_op_threads: int = 0) -> SavedModel:
        """Load `path` (a version folder) or raise `ServingError` with TensorFlow's reason."""
        config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=intra_op_threads,
            inter_op_parallelism_threads=inter_op_threads,
        )
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph, config=config)
        try:
            with graph.as_default():
                meta_graph = tf.compat.v1.saved_model.loader.load(session, [SERVE_TAG], str(path))
        except Exception as e:  # TensorFlow raises many types here; each becomes a status
            session.close()
            raise serving_error(e) from e
        defs = {
            name: meta_graph_pb2.SignatureDef.FromString(sig.SerializeToString())
            for name, sig in meta_graph.signature_def.items()
        }
        return cls(session, defs, _placeholder_shapes(graph, defs))

    def run(
        self,
        signature: Signature,
        inputs: Mapping[str, npt.NDArray[Any]],
        fetch: Sequence[str],
    ) -> dict[str, npt.NDArray[Any]]:
        """Run `signature` on checked inputs; returns the `fetch` outputs by alias."""
        feed_aliases = tuple(sorted(inputs))
        run = self._callable(signature, feed_aliases, tuple(fetch))
        try:
            values = run(*(inputs[a] for a in feed_aliases))
        except Exception as e:  # a model failing at run time answers with TensorFlow's status
            raise serving_error(e) from e
        return dict(zip(fetch, values, strict=True))

    def run_tensors(
        self, feeds: Mapping[str, npt.NDArray[Any]], fetch: Sequence[str]
    ) -> list[npt.NDArray[Any]]:
        """Run graph tensors by name (Classify and Regress feed serialized examples this way)."""
        names = tuple(sorted(feeds))
        run = self._callable_for(names, tuple(fetch))
        try:
            return list(run(*(feeds[n] for n in names)))
        except Exception as e:
            raise serving_error(e) from e

    def _callable(
        self, signature: Signature, feeds: tuple[str, ...], fetch: tuple[str, ...]
    ) -> Callable[..., Any]:
        return self._callable_for(
            tuple(signature.inputs[a].tensor_name for a in feeds),
            tuple(signature.outputs[a].tensor_name for a in fetch),
        )

    def _callable_for(self, feeds: tuple[str, ...], fetch: tuple[str, ...]) -> Callable[..., Any]:
        # A callable made from CallableOptions runs in TensorFlow's C++ session as TF Serving's
        # Session::Run does: dtypes are checked, shapes are left to the graph's kernels (the
        # Python Session.run would refuse any feed whose shape differs from the tensor's static
        # one, e.g. [3] for half_plus_two's [-1,1] x). It also skips run()'s per-call parsing.
        key = (feeds, fetch)
        with self._lock:
            found = self._callables.get(key)
            if found is None:
                options = config_pb2.CallableOptions(feed=list(feeds), fetch=list(fetch))
                try:
                    found = self._session._make_callable_from_options(options)
                except Exception as e:  # e.g. a signature naming a tensor missing from the graph
                    raise serving_error(e) from e
                self._callables[key] = found
            return found

    def close(self) -> None:
        self._session.close()


# Ops whose declared shape is the model author's contract for a feed: the graph's kernels were
# chosen for it, and a oneDNN kernel given another rank aborts the whole process (a Conv2D fed a
# rank-3 image) instead of failing the call.
_PLACEHOLDER_OPS = frozenset({"Placeholder", "PlaceholderWithDefault"})


def _placeholder_shapes(
    graph: Any, defs: Mapping[str, meta_graph_pb2.SignatureDef]
) -> dict[str, tuple[int, ...] | None]:
    """The declared shape of every signature input that is a placeholder, by tensor name.

    Inputs computed inside the graph (half_plus_two's `x`, an Identity of parsed examples) are
    left out: their shape is whatever TensorFlow makes of the fed tensor, as in TF Serving.
    """
    shapes: dict[str, tuple[int, ...] | None] = {}
    for sig in defs.values():
        for info in sig.inputs.values():
            try:
                tensor = graph.get_tensor_by_name(info.name)
            except (KeyError, ValueError):
                continue  # reported when the signature is run
            if tensor.op.type not in _PLACEHOLDER_OPS:
                continue
            dims = tensor.shape.as_list() if tensor.shape.rank is not None else None
            shapes[info.name] = None if dims is None else tuple(-1 if d is None else int(d) for d in dims)
    return shapes
