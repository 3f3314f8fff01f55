from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from clothing_preproc import CLOTHING_LABELS
from gateway.main import main
from gateway.settings import ENVIRONMENT, Settings, SettingsError


def test_an_empty_environment_gives_the_course_defaults() -> None:
    s = Settings.from_environ({})
    assert s.tf_serving_host == "localhost:8500"
    assert s.model_name == "clothing-model"
    assert s.signature_name == "auto"  # the pixels signature if the model has one
    assert s.port == 9696
    assert s.predict_timeout == 20.0
    assert s.labels == CLOTHING_LABELS
    assert s.preprocessing.family == "xception"
    assert s.preprocessing.target_size == (299, 299)
    assert s.fetch_allow_networks == ()
    assert s == Settings(), "the dataclass defaults and the documented defaults agree"


def test_variables_override_the_defaults() -> None:
    s = Settings.from_environ(
        {
            "TF_SERVING_HOST": "tf-serving.default.svc:8500",
            "GATEWAY_MODEL_NAME": "shoes",
            "GATEWAY_INPUT_NAME": "image",
            "GATEWAY_LABELS": "a, b ,c",
            "GATEWAY_PREPROCESSING": "resnet50",
            "GATEWAY_IMAGE_SIZE": "224",
            "GATEWAY_FETCH_ALLOW_NETWORKS": "127.0.0.0/8, fd00::/8",
            "GATEWAY_GRPC_LOAD_BALANCING": "round_robin",
            "GATEWAY_MAX_IMAGE_BYTES": "1000",
            "GATEWAY_PREPROCESS_THREADS": "3",
        }
    )
    assert s.tf_serving_host == "tf-serving.default.svc:8500"
    assert s.model_name == "shoes"
    assert (s.input_name, s.output_name) == ("image", None)
    assert s.labels == ("a", "b", "c")
    assert s.preprocessing.family == "resnet50"
    assert s.preprocessing.target_size == (224, 224)
    assert s.limits.max_bytes == 1000
    assert s.fetch_allow_networks == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
    assert s.grpc_load_balancing == "round_robin"
    assert (s.threads, s.active) == (3, 6), "work slots default to twice the decode threads"
    assert Settings.from_environ({"GATEWAY_MAX_ACTIVE": "1"}).active == 1


def test_labels_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\n")
    assert Settings.from_environ({"GATEWAY_LABELS_FILE": str(path)}).labels == ("cat", "dog")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_PORT", "http"),
        ("GATEWAY_PORT", "70000"),
        ("GATEWAY_PREDICT_TIMEOUT", "-1"),
        ("GATEWAY_PREDICT_TIMEOUT", "soon"),
        ("GATEWAY_PREPROCESSING", "alexnet"),
        ("GATEWAY_LABELS", "a,a"),
        ("GATEWAY_LABELS_FILE", "/nonexistent/labels.txt"),
        ("GATEWAY_FETCH_ALLOW_NETWORKS", "everything"),
        ("GATEWAY_GRPC_LOAD_BALANCING", "random"),
        ("GATEWAY_MAX_CONCURRENCY", "0"),
        ("TF_SERVING_HOST", "a b"),
        ("GATEWAY_LOG_LEVEL", "loud"),
        ("GATEWAY_KEEP_FREED_MB", "-1"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_environ({name: value})


def test_help_lists_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name, _, _ in ENVIRONMENT:
        assert name in out


def test_a_bad_setting_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "nine")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "gateway: GATEWAY_PORT='nine' is not a whole number"
