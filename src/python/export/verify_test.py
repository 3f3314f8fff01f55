"""The verifier can fail: exports TF Serving would refuse or answer wrongly are caught."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from export.demo import build_demo_model
from export.errors import VerificationFailed
from export.exporter import export_model, verify_version
from export.verify import check_loads, verify_export
from export.warmup import WARMUP_FILE


def test_a_tf_saved_model_save_export_is_unservable(
    tiny_model: keras.Model, tmp_path: Path, images: np.ndarray
) -> None:
    # What the course did by hand; TF 2 loads it, TF Serving's session loader cannot run it
    # (tensorflow/serving#2226), and its names are not the course's either.
    tf.saved_model.save(tiny_model, str(tmp_path))

    with pytest.raises(VerificationFailed) as caught:
        verify_export(
            tmp_path,
            tiny_model.predict,
            images,
            input_name="inputs",
            output_name="output_0",
        )
    assert "Could not find variable" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_export_that_answers_differently_fails(tiny_model: keras.Model, tmp_path: Path) -> None:
    version_dir = export_model(tiny_model, tmp_path)
    other = build_demo_model("tiny", seed=1)  # same layers, other weights

    with pytest.raises(VerificationFailed, match="differ from the model's"):
        verify_version(version_dir, other)
    # The original passes, bit for bit.
    assert verify_version(version_dir, tiny_model).max_abs_diff == 0.0


def test_a_corrupt_warmup_file_fails(tiny_model: keras.Model, tmp_path: Path) -> None:
    version_dir = export_model(tiny_model, tmp_path)
    warmup = version_dir / WARMUP_FILE
    data = bytearray(warmup.read_bytes())
    data[100] ^= 0xFF  # inside the first record: its CRC no longer matches
    warmup.write_bytes(bytes(data))

    with pytest.raises(VerificationFailed, match="warmup"):
        check_loads(version_dir)


def test_a_directory_tf_serving_cannot_load_fails(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"garbage")

    with pytest.raises(VerificationFailed, match="TF Serving could not load"):
        check_loads(tmp_path)
