"""The model description file export writes beside a model (`assets.extra/clothing_model.json`).

It tells the gateway and the local server what TF Serving's metadata does not: the labels, the
preprocessing the model was trained with, and whether the model is a trained one or a demo.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clothing_preproc.labels import CLOTHING_LABELS
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_MODEL_NAME, COURSE_OUTPUT_NAME

DESCRIPTION_FILE = Path("assets.extra") / "clothing_model.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TensorDescription:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelDescription:
    model_name: str = COURSE_MODEL_NAME
    signature_name: str = "serving_default"
    method_name: str = "tensorflow/serving/predict"
    inputs: dict[str, TensorDescription] = field(
        default_factory=lambda: {COURSE_INPUT_NAME: TensorDescription("float32", (-1, 299, 299, 3))}
    )
    outputs: dict[str, TensorDescription] = field(
        default_factory=lambda: {COURSE_OUTPUT_NAME: TensorDescription("float32", (-1, 10))}
    )
    labels: tuple[str, ...] = CLOTHING_LABELS
    family: str = "xception"
    target_size: tuple[int, int] = (299, 299)
    trained: bool = True
    source: str = ""

    def to_json(self) -> str:
        data: dict[str, Any] = asdict(self)
        data["preprocessing"] = {"family": data.pop("family"), "target_size": list(data.pop("target_size"))}
        return json.dumps({"format": FORMAT_VERSION, **data}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelDescription:
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT_VERSION:
                raise ValueError(f"unknown description format {data.get('format')!r}")
            pre = data.get("preprocessing", {})
            return cls(
                model_name=str(data["model_name"]),
                signature_name=str(data.get("signature_name", "serving_default")),
                method_name=str(data.get("method_name", "tensorflow/serving/predict")),
                inputs={k: _tensor(v) for k, v in data["inputs"].items()},
                outputs={k: _tensor(v) for k, v in data["outputs"].items()},
                labels=tuple(str(x) for x in data["labels"]),
                family=str(pre.get("family", "xception")),
                target_size=(int(pre["target_size"][0]), int(pre["target_size"][1]))
                if "target_size" in pre
                else (299, 299),
                trained=bool(data.get("trained", True)),
                source=str(data.get("source", "")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ValueError(f"not a valid model description: {e}") from e

    def save(self, version_dir: str | Path) -> Path:
        path = Path(version_dir) / DESCRIPTION_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, version_dir: str | Path) -> ModelDescription:
        """Read the description of a model version folder; ValueError if missing or invalid."""
        path = Path(version_dir) / DESCRIPTION_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"cannot read {path}: {e.strerror}") from e
        return cls.from_json(text)


def _tensor(value: dict[str, Any]) -> TensorDescription:
    return TensorDescription(dtype=str(value["dtype"]), shape=tuple(int(x) for x in value["shape"]))
