"""A version directory's serving signature, printed as `saved_model_cli show --all` prints it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from clothing_preproc import DEFAULT_SIGNATURE, TensorDescription
from export.errors import ModelFileError

SAVED_MODEL_FILE = "saved_model.pb"


def read_signatures(version_dir: str | Path, tag: str = "serve") -> dict[str, Any]:
    """The SignatureDefs of the MetaGraph tagged `tag`, read from saved_model.pb (no loading)."""
    path = Path(version_dir) / SAVED_MODEL_FILE
    try:
        saved = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    except OSError as e:
        raise ModelFileError(f"cannot read {path}: {e.strerror}") from None
    except Exception as e:  # - protobuf's DecodeError and friends
        raise ModelFileError(f"{path} is not a SavedModel ({type(e).__name__})") from None
    for meta_graph in saved.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ModelFileError(f"{path} has no MetaGraph tagged {tag!r}")


def tensor_descriptions(tensors: Any) -> dict[str, TensorDescription]:
    """A signature's inputs or outputs as the model description writes them (-1: any size)."""
    return {
        alias: TensorDescription(
            dtype=_dtype_name(info.dtype), shape=tuple(int(d.size) for d in info.tensor_shape.dim)
        )
        for alias, info in sorted(tensors.items())
    }


def show_signature(version_dir: str | Path, signature_name: str | None = None) -> str:
    """The text `saved_model_cli show --dir DIR --all` prints for one signature, or for every
    serving signature (`serving_default` first) when no name is given."""
    signatures = read_signatures(version_dir)
    if signature_name is None:
        served = (n for n in signatures if not n.startswith("__"))  # not __saved_model_init_op
        names = sorted(served, key=lambda n: (n != DEFAULT_SIGNATURE, n))
    elif signature_name in signatures:
        names = [signature_name]
    else:
        raise ModelFileError(f'{version_dir} has no signature "{signature_name}"')
    lines = ["MetaGraphDef with tag-set: 'serve' contains the following SignatureDefs:"]
    for name in names:
        sig = signatures[name]
        lines += [
            "",
            f"signature_def['{name}']:",
            "  The given SavedModel SignatureDef contains the following input(s):",
        ]
        lines += _tensor_lines("inputs", sig.inputs)
        lines.append("  The given SavedModel SignatureDef contains the following output(s):")
        lines += _tensor_lines("outputs", sig.outputs)
        lines.append(f"  Method name is: {sig.method_name}")
    return "\n".join(lines)


def _tensor_lines(kind: str, tensors: Any) -> list[str]:
    lines = []
    for alias, info in sorted(tensors.items()):
        if info.tensor_shape.unknown_rank:
            shape = "unknown_rank"
        else:
            dims = [str(d.size) for d in info.tensor_shape.dim]
            shape = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
        lines += [
            f"    {kind}['{alias}'] tensor_info:",
            f"        dtype: {types_pb2.DataType.Name(info.dtype)}",
            f"        shape: {shape}",
            f"        name: {info.name}",
        ]
    return lines


def _dtype_name(dtype: int) -> str:
    # DT_FLOAT -> "float32", as numpy and the model description spell it.
    return str(tf.dtypes.as_dtype(dtype).name)
