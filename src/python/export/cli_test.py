"""The `export` command as a user runs it: output, exit status, one-line errors."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import keras
import pytest

from clothing_preproc import ModelDescription
from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_MODEL_NAME, COURSE_OUTPUT_NAME
from export.cli import main, parse_settings


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_demo_prints_the_signature_and_says_untrained(tmp_path: Path) -> None:
    code, out, err = run("demo", "--base", str(tmp_path))

    assert code == 0, err
    assert "signature_def['serving_default']:" in out
    assert f"inputs['{COURSE_INPUT_NAME}'] tensor_info:" in out
    assert "shape: (-1, 299, 299, 3)" in out
    assert f"outputs['{COURSE_OUTPUT_NAME}'] tensor_info:" in out
    assert "Method name is: tensorflow/serving/predict" in out
    assert "UNTRAINED" in out
    assert f"exported {tmp_path / COURSE_MODEL_NAME / '1'}" in out
    # Progress for each slow step, then timings.
    for step in ("build:", "trace:", "save:", "verify:"):
        assert step in err
    assert "bit-identical" in err
    assert ModelDescription.load(tmp_path / COURSE_MODEL_NAME / "1").trained is False


def test_a_model_file_exports_under_the_chosen_name(tmp_path: Path, tiny_model: keras.Model) -> None:
    model_file = tmp_path / "model.keras"
    tiny_model.save(model_file)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"c{i}" for i in range(10)))

    code, out, err = run(
        str(model_file), "--base", str(tmp_path / "m"), "--name", "shop", "--labels", str(labels)
    )

    assert code == 0, err
    assert "loading" in err
    assert "labels: c0, c1," in out
    assert "UNTRAINED" not in out
    description = ModelDescription.load(tmp_path / "m" / "shop" / "1")
    assert description.trained is True
    assert description.labels[0] == "c0"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["absent.h5"], "absent.h5: no such file or directory"),
        (["--labels", "no-labels.txt", "model.h5"], "no-labels.txt: cannot read the labels file"),
    ],
)
def test_errors_are_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(*args, "--base", str(tmp_path))

    # Progress lines may come first; the error is the last line, and the only one.
    assert code == 1
    last = err.splitlines()[-1]
    assert last.startswith("export: error: ")
    assert message in last
    assert err.count("error") == 1
    assert "Traceback" not in err


def test_an_existing_version_is_refused(tmp_path: Path) -> None:
    assert run("demo", "--base", str(tmp_path), "--no-verify")[0] == 0

    code, _, err = run("demo", "--base", str(tmp_path), "--version", "1")

    assert code == 1
    assert "exists" in err
    assert "--overwrite" in err


def test_show_prints_an_export_and_checks_it(tmp_path: Path) -> None:
    assert run("demo", "--base", str(tmp_path))[0] == 0

    code, out, err = run("show", str(tmp_path / COURSE_MODEL_NAME / "1"), "--check")

    assert code == 0, err
    assert f"outputs['{COURSE_OUTPUT_NAME}'] tensor_info:" in out
    # Both signatures: float32 images, and uint8 pixels normalised in the graph.
    assert "signature_def['serving_default']:" in out
    assert "signature_def['pixels']:" in out
    assert "dtype: DT_UINT8" in out
    assert "warmup records replayed" in out


@pytest.mark.parametrize(
    ("argv", "command", "path"),
    [
        (["model.h5", "--base", "m"], "export", Path("model.h5")),
        (["--base", "m", "model.h5"], "export", Path("model.h5")),
        (["export", "model.h5", "--base", "m"], "export", Path("model.h5")),
        # A model file named like a subcommand: a path that is not the bare word, or `export` first.
        (["./show", "--base", "m"], "export", Path("show")),
        (["export", "show", "--base", "m"], "export", Path("show")),
        (["export", "demo", "--base", "m"], "export", Path("demo")),
        (["show", f"m/{COURSE_MODEL_NAME}/1"], "show", Path(f"m/{COURSE_MODEL_NAME}/1")),
        (["demo", "--base", "m", "--kind", "xception"], "demo", None),
    ],
)
def test_subcommands_keep_todays_spellings(argv: list[str], command: str, path: Path | None) -> None:
    settings = parse_settings(argv, {})
    assert (settings.command, settings.path) == (command, path)


def test_a_model_named_like_a_subcommand_is_exported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("demo", "--base", str(tmp_path / "demo"), "--no-verify")[0] == 0
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tmp_path / "demo" / COURSE_MODEL_NAME / "1", tmp_path / "show")  # a SavedModel

    code, out, err = run("./show", "--base", "out", "--no-verify")
    assert code == 0, err
    assert f"exported {Path('out') / COURSE_MODEL_NAME / '1'}" in out

    code, out, err = run("export", "show", "--base", "out", "--no-verify")
    assert code == 0, err
    assert f"exported {Path('out') / COURSE_MODEL_NAME / '2'}" in out


@pytest.mark.parametrize("command", [[], ["export"], ["demo"], ["show"]])
def test_help_explains_every_flag(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    text = capsys.readouterr().out
    flags = {
        ("export",): ["--base", "--name", "--input-name", "--tolerance"],
        (): ["--base", "--name", "--version", "--overwrite", "--input-name", "--output-name", "--labels",
             "--family", "--target-size", "--sample-images", "--no-warmup", "--no-verify", "--tolerance"],
        ("demo",): ["--kind", "--seed", "--base", "--no-verify"],
        ("show",): ["--check"],
    }[tuple(command)]
    for flag in flags:
        assert flag in text


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["demo", "--base", "x", "--version", "zero"], "argument --version: not a whole number: 'zero'"),
        (["demo", "--base", "x", "--labels", "l.txt"], "unrecognized arguments: --labels l.txt"),
        (["model.h5"], "the following arguments are required: --base"),
        (["show"], "the following arguments are required: version_dir"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err == f"export: error: {line}\n"
