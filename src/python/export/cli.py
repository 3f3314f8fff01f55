"""The `export` command: a Keras model file (or the demo model) -> a TF Serving model directory.

    export [export] MODEL --base DIR [--name clothing-model] [options]   .keras, .h5, SavedModel dir
    export demo --base DIR [--kind tiny|xception] [options]              the seeded, untrained demo model
    export show VERSION_DIR [--check]                                    print an export's signature

`export` is the default subcommand: a first argument that names no subcommand is the model, so
`export model.h5 --base models` works as it always did. A model file literally named `show` or
`demo` is exported as `export ./show …` or `export export show …`.

Progress goes to stderr, the result to stdout. A bad flag is one line on stderr and exit status 2;
an export that fails is one line and exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from clothing_preproc.signature import COURSE_INPUT_NAME, COURSE_MODEL_NAME, COURSE_OUTPUT_NAME
from clothing_settings import SettingError, SettingsParser
from clothing_settings.validators import non_negative_float, positive_int, whole_number
from export.errors import BadOption, ExportError, one_line
from tensorflow_noise import import_tensorflow_quietly

COMMANDS = ("export", "demo", "show")
DEFAULT_COMMAND = "export"
DEMO_KINDS = ("tiny", "xception")


@dataclass(frozen=True)
class ExportSettings:
    """Everything one `export` run needs, parsed once from the command line."""

    command: str  # "export", "demo" or "show"
    path: Path | None  # the model file (export), the version directory (show)
    base: Path | None
    name: str = COURSE_MODEL_NAME
    version: int | None = None
    overwrite: bool = False
    input_name: str = COURSE_INPUT_NAME
    output_name: str = COURSE_OUTPUT_NAME
    labels_file: Path | None = None
    family: str | None = None
    target_size: tuple[int, int] | None = None
    sample_images: tuple[Path, ...] = ()
    warmup: bool = True
    verify: bool = True
    tolerance: float = 0.0
    kind: str = "tiny"
    seed: int = 0
    check: bool = False


def main(
    argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run the command; returns the exit status (0 ok, 1 export failed, 2 bad usage, 130 Ctrl-C)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        settings = parse_settings(list(sys.argv[1:] if argv is None else argv), os.environ)
    except SystemExit as e:  # --help, already printed by argparse
        return int(e.code or 0)
    except SettingError as e:
        print(f"export: error: {e}", file=err)
        return 2
    _quiet_tensorflow()
    try:
        if settings.command == "show":
            return _show(settings, out, err)
        return _export(settings, out, err)
    except ExportError as e:
        print(f"export: error: {e}", file=err)
        return 1
    except KeyboardInterrupt:
        print("export: interrupted; no version was written", file=err)
        return 130
    except Exception as e:  # - the promise is one readable line, never a traceback
        print(f"export: unexpected error ({type(e).__name__}): {one_line(e)}", file=err)
        return 1


def parse_settings(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> ExportSettings:
    """The settings of one run from its command line; `SettingError` says what is wrong, `--help`
    prints and exits 0 (SystemExit). The export reads no environment variables."""
    args = list(argv)
    if not args or args[0] not in COMMANDS:
        # The default subcommand: `export model.h5 …`, `export --help`.
        args.insert(0, DEFAULT_COMMAND)
    ns = parser().parse_args(args)
    if ns.command == "show":
        return ExportSettings(command="show", path=ns.version_dir, base=None, check=ns.check)
    common = {
        "base": ns.base,
        "name": ns.name,
        "version": ns.version,
        "overwrite": ns.overwrite,
        "verify": ns.verify,
    }
    if ns.command == "demo":
        return ExportSettings(command="demo", path=None, kind=ns.kind, seed=ns.seed, **common)
    return ExportSettings(
        command="export",
        path=ns.model,
        input_name=ns.input_name,
        output_name=ns.output_name,
        labels_file=ns.labels,
        family=ns.family,
        target_size=ns.target_size,
        sample_images=tuple(ns.sample_images),
        warmup=ns.warmup,
        tolerance=ns.tolerance,
        **common,
    )


def parser() -> argparse.ArgumentParser:
    top = SettingsParser(
        prog="export",
        description="Export a Keras image classifier for TF Serving, export the demo model, or show an "
        "export. The default command is `export`.",
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="{export,demo,show}")
    model = commands.add_parser(
        "export",
        prog="export [export]",
        help="a Keras model file -> <base>/<name>/<version>/ (the default command)",
        description="Export a Keras image classifier for TF Serving as <base>/<name>/<version>/ "
        "(saved_model.pb, variables/, assets.extra/), then load it the way TF Serving does and "
        "check its outputs against the model's. Other commands: 'export demo --help' (the "
        "untrained demo model), 'export show --help' (print an export's signature). A model file "
        "named show or demo: 'export ./show …' or 'export export show …'.",
    )
    model.add_argument(
        "model",
        type=Path,
        help="a .keras file, a .h5 file written by Keras 3 or by Keras 2 / tf.keras (like the course's "
        "xception_v4_large_08_0.894.h5), or a SavedModel directory to re-export",
    )
    _add_output_flags(model)
    _add_model_flags(model)
    demo = commands.add_parser(
        "demo",
        prog="export demo",
        help="the seeded, untrained demo model, exported like a real one",
        description="Build the seeded, UNTRAINED demo model with the clothing model's interface "
        "((batch, 299, 299, 3) float32 -> (batch, 10) logits) and export it like a real model. "
        "Its scores mean nothing; its description says trained=false.",
    )
    demo.add_argument(
        "--kind",
        choices=DEMO_KINDS,
        default="tiny",
        help="tiny: a small CNN, ~1 ms per image; xception: keras.applications.Xception (no weights) "
        "nested in the course's head, real size and speed (default: tiny)",
    )
    demo.add_argument("--seed", type=whole_number, default=0, help="random seed of the weights (default: 0)")
    _add_output_flags(demo)
    show = commands.add_parser(
        "show",
        prog="export show",
        help="print an export's signature and description",
        description="Print an export's serving signature as `saved_model_cli show --all` does, and its "
        "model description.",
    )
    show.add_argument("version_dir", type=Path, help="a version directory, <base>/<name>/<version>")
    show.add_argument(
        "--check",
        action="store_true",
        help="also load it the way TF Serving does and replay its warmup records",
    )
    return top


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    """Where an export goes, and whether it is verified: for a model file and the demo alike."""
    parser.add_argument(
        "--base",
        type=Path,
        required=True,
        help="the directory holding the models (the parent of TF Serving's --model_base_path)",
    )
    parser.add_argument(
        "--name",
        default=COURSE_MODEL_NAME,
        help=f"model name: the directory under --base (default: {COURSE_MODEL_NAME})",
    )
    parser.add_argument(
        "--version",
        type=positive_int,
        help="version number: the directory under <base>/<name> (default: highest existing + 1)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the version if it exists (default: refuse)"
    )
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip loading the export as TF Serving does and comparing it with the model",
    )


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    """What a model file's export is told about the model."""
    parser.add_argument(
        "--input-name",
        default=COURSE_INPUT_NAME,
        help=f"the signature's input name (default: {COURSE_INPUT_NAME}, the course's)",
    )
    parser.add_argument(
        "--output-name",
        default=COURSE_OUTPUT_NAME,
        help=f"the signature's output name (default: {COURSE_OUTPUT_NAME}, the course's)",
    )
    parser.add_argument(
        "--labels",
        type=Path,
        help="file with the class labels in output order: a JSON list or one per line "
        "(default: the course's ten clothing classes, or those of a re-exported SavedModel)",
    )
    parser.add_argument(
        "--family",
        help="keras.applications family whose preprocess_input the model was trained with, e.g. xception, "
        "resnet50, efficientnet (default: xception)",
    )
    parser.add_argument(
        "--target-size",
        type=_size,
        metavar="HxW",
        help="image size the model was trained on, e.g. 299x299 (default: the model's input size; "
        "required if the model accepts any size)",
    )
    parser.add_argument(
        "--sample-images",
        type=Path,
        nargs="+",
        default=[],
        metavar="IMAGE",
        help="images for the warmup records (two per image: one per signature) and the verification "
        "(default: three generated images)",
    )
    parser.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="do not write assets.extra/tf_serving_warmup_requests",
    )
    parser.add_argument(
        "--tolerance",
        type=non_negative_float,
        default=0.0,
        help="largest absolute difference allowed between the export's and the model's scores "
        "(default: 0, bit-identical)",
    )


def _export(settings: ExportSettings, out: TextIO, err: TextIO) -> int:
    from clothing_preproc import load_labels
    from export.demo import export_demo_model
    from export.exporter import export_model
    from export.progress import Progress
    from export.samples import read_images
    from export.source import load_source

    assert settings.base is not None
    progress = Progress(stream=err)
    if settings.command == "demo":
        version_dir = export_demo_model(
            settings.base,
            settings.kind,
            settings.seed,
            settings.name,
            settings.version,
            overwrite=settings.overwrite,
            verify=settings.verify,
            progress=progress,
        )
    else:
        assert settings.path is not None
        labels = None
        if settings.labels_file is not None:
            try:
                labels = load_labels(settings.labels_file)
            except ValueError as e:  # names the file and the problem
                raise BadOption(f"labels: {e}") from None
        images = read_images(settings.sample_images)
        with progress.step("load", f"loading {settings.path}"):
            source = load_source(settings.path)
        version_dir = export_model(
            source,
            settings.base,
            settings.name,
            settings.version,
            overwrite=settings.overwrite,
            input_name=settings.input_name,
            output_name=settings.output_name,
            labels=labels,
            family=settings.family,
            target_size=settings.target_size,
            sample_images=images,
            warmup=settings.warmup,
            verify=settings.verify,
            tolerance=settings.tolerance,
            progress=progress,
        )
    _print_export(version_dir, out)
    if not settings.verify:
        print("NOT VERIFIED (--no-verify): TF Serving may still refuse this export", file=out)
    print(f"exported {version_dir} ({progress.summary()})", file=out)
    return 0


def _show(settings: ExportSettings, out: TextIO, err: TextIO) -> int:
    from export.progress import Progress
    from export.verify import check_loads

    assert settings.path is not None
    _print_export(settings.path, out, require_description=False)
    if settings.check:
        progress = Progress(stream=err)
        with progress.step("check", "loading it as TF Serving does and replaying its warmup records"):
            replayed = check_loads(settings.path)
        print(
            f"loads as TF Serving loads it; {replayed} warmup records replayed ({progress.summary()})",
            file=out,
        )
    return 0


def _print_export(version_dir: Path, out: TextIO, require_description: bool = True) -> None:
    from clothing_preproc import ModelDescription
    from export.show import show_signature

    print(show_signature(version_dir), file=out)
    try:
        description = ModelDescription.load(version_dir)
    except ValueError as e:
        if require_description:
            raise
        print(f"\nno model description: {e}", file=out)
        return
    print(
        f"\nlabels: {', '.join(description.labels)}\n"
        f"preprocessing: {description.family}, {description.target_size[0]}x{description.target_size[1]}\n"
        f"source: {description.source or 'unknown'}",
        file=out,
    )
    if not description.trained:
        print("UNTRAINED demo model: its scores are meaningless (trained=false in the description)", file=out)


def _quiet_tensorflow() -> None:
    # TensorFlow's start-up noise (CUDA probes, oneDNN notes) drowns the progress lines; the heavy
    # modules are imported lazily above, so TensorFlow is not loaded yet. TF_CPP_MIN_LOG_LEVEL=0
    # or 1 asks for all of it.
    import_tensorflow_quietly()
    # The TF1 loader the verification uses is deprecated and says so on every call.
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH, e.g. 299x299") from None
    if not (1 <= height <= 8192 and 1 <= width <= 8192):
        raise argparse.ArgumentTypeError(f"{text!r} is out of range (1 to 8192 pixels a side)")
    return height, width


if __name__ == "__main__":
    sys.exit(main())
