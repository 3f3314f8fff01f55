from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from clothing_preproc import CLOTHING_LABELS, ModelDescription
from clothing_preproc.signature import COURSE_MODEL_NAME
from clothing_settings import SettingError, table_in
from gateway.main import main
from gateway.settings import (
    ENVIRONMENT_TABLE_HEADER,
    VARIABLES,
    Admission,
    Settings,
    environment_table,
    parse_settings,
)

README = Path("README.md")


def test_an_empty_environment_gives_the_course_defaults() -> None:
    s = parse_settings([], {})
    assert s.serving.address == "localhost:8500"
    assert s.serving.model_name == COURSE_MODEL_NAME
    assert s.serving.signature_name == "auto"  # the pixels signature if the model has one
    assert s.listener.port == 9696
    assert s.listener.metrics_port == 0  # /metrics on the gateway's port
    assert s.serving.timeout == 20.0
    assert s.serving.labels == CLOTHING_LABELS
    assert s.serving.preprocessing.family == "xception"
    assert s.serving.preprocessing.target_size == (299, 299)
    assert s.fetch.allow_networks == ()
    assert s == Settings()


def test_every_documented_default_is_the_default() -> None:
    # Each default as the README and --help show it, given as the variable's value, changes nothing.
    for variable in VARIABLES:
        shown = variable.default()
        if shown == "(empty)" or variable.shown is not None:
            continue
        given = shown.strip("`")
        assert parse_settings([], {variable.name: given}) == Settings(), variable.name
    labels = next(v for v in VARIABLES if v.name == "GATEWAY_LABELS")
    assert parse_settings([], {labels.name: str(labels.value(Settings()))}) == Settings()


def test_variables_override_the_defaults() -> None:
    s = parse_settings(
        [],
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
            "GATEWAY_METRICS_PORT": "9697",
            "GATEWAY_LOG_LEVEL": "DEBUG",
        },
    )
    assert s.serving.address == "tf-serving.default.svc:8500"
    assert s.serving.model_name == "shoes"
    assert (s.serving.input_name, s.serving.output_name) == ("image", None)
    assert s.serving.labels == ("a", "b", "c")
    assert s.serving.preprocessing.family == "resnet50"
    assert s.serving.preprocessing.target_size == (224, 224)
    assert s.serving.limits.max_bytes == 1000
    assert s.fetch.allow_networks == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
    assert s.serving.load_balancing == "round_robin"
    assert (s.listener.metrics_port, s.listener.log_level) == (9697, "debug")
    assert (s.admission.threads, s.admission.work_slots) == (3, 6), "work slots: twice the decode threads"
    assert parse_settings([], {"GATEWAY_MAX_ACTIVE": "1"}).admission == Admission(max_active=1)


def test_labels_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\n")
    assert parse_settings([], {"GATEWAY_LABELS_FILE": str(path)}).serving.labels == ("cat", "dog")


def test_the_model_description_says_whether_the_model_is_trained(tmp_path: Path) -> None:
    path = tmp_path / "clothing_model.json"
    path.write_text(ModelDescription(trained=False).to_json())
    served = parse_settings([], {"GATEWAY_MODEL_DESCRIPTION": str(path)}).serving
    assert served.description is not None
    assert served.description.trained is False
    assert parse_settings([], {}).serving.description is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_PORT", "http"),
        ("GATEWAY_PORT", "70000"),
        ("GATEWAY_METRICS_PORT", "9696"),  # the gateway's own port
        ("GATEWAY_PREDICT_TIMEOUT", "-1"),
        ("GATEWAY_PREDICT_TIMEOUT", "soon"),
        ("GATEWAY_PREPROCESSING", "alexnet"),
        ("GATEWAY_LABELS", "a,a"),
        ("GATEWAY_LABELS_FILE", "/nonexistent/labels.txt"),
        ("GATEWAY_MODEL_DESCRIPTION", "/nonexistent/clothing_model.json"),
        ("GATEWAY_MODEL_DESCRIPTION", "/proc/self/cmdline"),  # not a description
        ("GATEWAY_FETCH_ALLOW_NETWORKS", "everything"),
        ("GATEWAY_GRPC_LOAD_BALANCING", "random"),
        ("GATEWAY_MAX_CONCURRENCY", "0"),
        ("TF_SERVING_HOST", "a b"),
        ("GATEWAY_LOG_LEVEL", "loud"),
        ("GATEWAY_KEEP_FREED_MB", "-1"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingError) as caught:
        parse_settings([], {name: value})
    assert caught.value.setting == name
    assert name in str(caught.value)
    assert "\n" not in str(caught.value)


class _Recording(Mapping[str, str]):
    """An empty environment that notes every variable asked for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_every_variable_read_is_documented_and_every_documented_one_is_read() -> None:
    environ = _Recording()
    parse_settings([], environ)
    assert environ.asked == {v.name for v in VARIABLES}


def test_the_readme_lists_every_variable_as_defined() -> None:
    expected = environment_table()
    assert table_in(README.read_text(encoding="utf-8"), ENVIRONMENT_TABLE_HEADER) == expected, (
        "README.md's table of the gateway's variables differs from gateway/settings.py; "
        f"replace it with:\n{expected}"
    )


def test_help_lists_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for variable in VARIABLES:
        assert variable.name in out


def test_a_bad_setting_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "nine")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "gateway: GATEWAY_PORT='nine' is not a whole number"
