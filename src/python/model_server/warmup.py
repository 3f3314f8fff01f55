"""Warmup records: `assets.extra/tf_serving_warmup_requests`, replayed before a version is served.

The file is a TFRecord of PredictionLog messages, as TF Serving reads it: predict, classify,
regress and multi-inference logs; at most 1000 records (TF Serving's limit). A record that fails
fails the load, as in TF Serving.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from clothing_protos import serving_pb2
from model_server.errors import FailedPrecondition, InvalidArgument

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


# The records TF Serving replays: one request of each API.
REPLAYED_LOG_TYPES = ("predict_log", "classify_log", "regress_log", "multi_inference_log")


def read_warmup_logs(version_dir: Path) -> list[serving_pb2.PredictionLog]:
    """The records of a version's warmup file (none if there is no file)."""
    path = version_dir / WARMUP_FILE
    if not path.is_file():
        return []
    logs: list[serving_pb2.PredictionLog] = []
    try:
        for count, record in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator(), 1):
            if count > MAX_WARMUP_RECORDS:
                raise InvalidArgument(
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
                )
            log = serving_pb2.PredictionLog.FromString(record)
            if log.WhichOneof("log_type") not in REPLAYED_LOG_TYPES:
                raise InvalidArgument(f"Unsupported log_type for warmup: {log.WhichOneof('log_type')}")
            logs.append(log)
    except tf.errors.OpError as e:
        raise FailedPrecondition(f"cannot read warmup file {path}: {e.message}") from e
    except ValueError as e:  # DecodeError: a record that is not a PredictionLog
        raise FailedPrecondition(f"warmup file {path} holds a record that is not a PredictionLog") from e
    return logs
