"""The shared conventions: a bad setting is one line naming it; argparse's words become one too."""

from __future__ import annotations

import argparse
import re

import pytest

from clothing_settings import SettingError, SettingsParser, markdown_table, table_in
from clothing_settings import validators as v


def test_a_setting_error_names_the_setting_in_one_line() -> None:
    assert str(SettingError("GATEWAY_PORT", "GATEWAY_PORT='x' is not a whole number")) == (
        "GATEWAY_PORT='x' is not a whole number"
    )
    error = SettingError("--labels", "labels.txt: cannot read\nthe labels file")
    assert str(error) == "--labels: labels.txt: cannot read the labels file"
    assert (error.setting, error.problem) == ("--labels", "labels.txt: cannot read the labels file")


def parser() -> SettingsParser:
    p = SettingsParser(prog="prog")
    p.add_argument("--port", type=v.port, default=8500)
    p.add_argument("--grace", type=v.seconds, default=1.0)
    p.add_argument("model")
    return p


@pytest.mark.parametrize(
    ("argv", "setting", "line"),
    [
        (["m", "--port", "70000"], "--port", "argument --port: port 70000 is outside 0-65535"),
        (["m", "--port", "http"], "--port", "argument --port: not a port number: 'http'"),
        (["m", "--grace", "0"], "--grace", "argument --grace: must be more than 0 seconds, got 0"),
        (["m", "--grace", "nan"], "--grace", "argument --grace: not a number: 'nan'"),
        (["m", "--nope"], "--nope", "unrecognized arguments: --nope"),
        ([], "model", "the following arguments are required: model"),
    ],
)
def test_usage_errors_are_setting_errors(argv: list[str], setting: str, line: str) -> None:
    with pytest.raises(SettingError) as caught:
        parser().parse_args(argv)
    assert (caught.value.setting, str(caught.value)) == (setting, line)


def test_help_still_prints_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parser().parse_args(["--help"])
    assert caught.value.code == 0
    assert "--port" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("validator", "text", "value"),
    [
        (v.positive_int, "3", 3),
        (v.non_negative_int, "0", 0),
        (v.port, "0", 0),
        (v.non_negative_float, "0.5", 0.5),
        (v.seconds, "2.5", 2.5),
        (v.flag_bool, "TRUE", True),
        (v.flag_bool, "no", False),
        (v.host_port, "localhost:8500", "localhost:8500"),
        (v.http_url, "http://localhost:4318", "http://localhost:4318"),
        (v.http_url, "https://otel.example/v1/traces", "https://otel.example/v1/traces"),
    ],
)
def test_validators_take_good_values(validator: object, text: str, value: object) -> None:
    assert callable(validator)
    assert validator(text) == value


@pytest.mark.parametrize(
    ("validator", "text", "problem"),
    [
        (v.positive_int, "0", "must be at least 1, got 0"),
        (v.positive_int, "one", "not a whole number: 'one'"),
        (v.non_negative_int, "-1", "must not be negative, got -1"),
        (v.port, "65536", "port 65536 is outside 0-65535"),
        (v.non_negative_float, "-0.1", "must not be negative, got -0.1"),
        (v.seconds, "inf", "must be more than 0 seconds, got inf"),
        (v.flag_bool, "maybe", "expected true or false, got 'maybe'"),
        (v.host_port, "localhost", "'localhost': expected HOST:PORT, e.g. localhost:8500"),
        (v.host_port, "a b:1", "'a b:1': expected HOST:PORT, e.g. localhost:8500"),
        *(
            (v.http_url, url, f"{url!r}: expected an http:// or https:// URL, e.g. http://localhost:4318")
            for url in ("localhost:4318", "ftp://h/x", "http://h:99999", "http:///v1/traces", "http://a b")
        ),
    ],
)
def test_validators_say_what_is_wrong(validator: object, text: str, problem: str) -> None:
    assert callable(validator)
    with pytest.raises(argparse.ArgumentTypeError, match=f"^{re.escape(problem)}$"):
        validator(text)


def test_a_table_is_found_in_a_document() -> None:
    table = markdown_table(["name", "default"], [["`A`", "1"], ["`B`", "a|b"]])
    assert table == "| name | default |\n|---|---|\n| `A` | 1 |\n| `B` | a\\|b |\n"
    document = f"# Title\n\ntext\n\n{table}\nmore text\n"
    assert table_in(document, ["name", "default"]) == table
    assert table_in(document, ["other"]) == ""
