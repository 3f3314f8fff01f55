"""TF Serving's warmup file: `assets.extra/tf_serving_warmup_requests`, a TFRecord of PredictionLog.

TF Serving replays these requests when it loads a version, before marking it AVAILABLE, so the
first real requests do not pay for graph optimisation and memory allocation. The records are the
project's own protos (same field numbers as TF Serving's), one single-image request each, the way
the gateway sends them: float32 images to `serving_default`, uint8 pixels to `pixels`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from clothing_preproc import array_to_tensor_proto
from clothing_protos import serving_pb2

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
# TF Serving reads at most this many records.
MAX_RECORDS = 1000


def warmup_log(
    image: npt.NDArray[Any], model_name: str, signature_name: str, input_name: str
) -> serving_pb2.PredictionLog:
    """One Predict request for a (height, width, 3) image (float32 or uint8), as a batch of one."""
    request = serving_pb2.PredictRequest(
        model_spec=serving_pb2.ModelSpec(name=model_name, signature_name=signature_name)
    )
    request.inputs[input_name].CopyFrom(array_to_tensor_proto(image[np.newaxis]))
    return serving_pb2.PredictionLog(predict_log=serving_pb2.PredictLog(request=request))


def write_warmup(version_dir: Path, logs: list[serving_pb2.PredictionLog]) -> Path:
    """Write the records into `version_dir`; returns the file's path."""
    if len(logs) > MAX_RECORDS:
        raise ValueError(f"TF Serving reads at most {MAX_RECORDS} warmup records, not {len(logs)}")
    path = version_dir / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path


def read_warmup(version_dir: Path) -> list[serving_pb2.PredictionLog]:
    """The records of a version's warmup file (none if it has no such file)."""
    path = version_dir / WARMUP_FILE
    if not path.is_file():
        return []
    return [
        serving_pb2.PredictionLog.FromString(record.numpy()) for record in tf.data.TFRecordDataset(str(path))
    ]
