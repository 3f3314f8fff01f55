"""The stack's flags: defaults, variables, one-line errors, and the README's table of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from clothing_preproc.signature import COURSE_MODEL_NAME
from clothing_settings import SettingError, table_in
from local_stack.settings import FLAGS_TABLE_HEADER, flags_table, parse_settings

README = Path("README.md")


def test_defaults_and_variables() -> None:
    s = parse_settings([], {"HOME": "/home/u", "XDG_CACHE_HOME": ""})
    assert (s.model_dir, s.tf_serving, s.model_name) == (None, None, COURSE_MODEL_NAME)
    assert (s.host, s.port, s.grpc_port, s.rest_port) == ("127.0.0.1", 9696, 8500, 8501)
    assert s.ready_timeout == 300.0
    assert s.cache_dir.parts[-2:] == ("clothing-classifier", "local-stack")
    s = parse_settings(
        ["--port", "8080"],
        {"CLOTHING_TF_SERVING": "tf:8500", "CLOTHING_MODEL_NAME": "shoes", "CLOTHING_CACHE_DIR": "/c"},
    )
    assert (s.tf_serving, s.model_name, s.cache_dir, s.port) == ("tf:8500", "shoes", Path("/c"), 8080)
    # A flag wins over its variable.
    assert parse_settings(["--model-name", "hats"], {"CLOTHING_MODEL_NAME": "shoes"}).model_name == "hats"


@pytest.mark.parametrize(
    ("argv", "environ", "line"),
    [
        (["--port", "70000"], {}, "argument --port: port 70000 is outside 0-65535"),
        (["--ready-timeout", "0"], {}, "argument --ready-timeout: must be more than 0 seconds, got 0"),
        (
            ["--tf-serving", "nohostport"],
            {},
            "argument --tf-serving: 'nohostport': expected HOST:PORT, e.g. localhost:8500",
        ),
        (
            ["--model-dir", "/m"],
            {"CLOTHING_TF_SERVING": "localhost:8500"},
            "give --model-dir or --tf-serving, not both: an existing TF Serving has its own model",
        ),
        (["--nope"], {}, "unrecognized arguments: --nope"),
    ],
)
def test_a_bad_flag_is_one_line(argv: list[str], environ: dict[str, str], line: str) -> None:
    with pytest.raises(SettingError) as caught:
        parse_settings(argv, environ)
    assert str(caught.value) == line


def test_the_readme_lists_every_flag_as_defined() -> None:
    expected = flags_table()
    assert table_in(README.read_text(encoding="utf-8"), FLAGS_TABLE_HEADER) == expected, (
        "README.md's table of the local stack's flags differs from local_stack/settings.py; "
        f"replace it with:\n{expected}"
    )
