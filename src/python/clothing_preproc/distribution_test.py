"""The built wheel, installed into a clean virtualenv and used from outside the repo.

Pants builds `src:clothing-preproc` and puts the wheel and sdist into this test's sandbox
(`runtime_package_dependencies`). pip fetches numpy, Pillow and protobuf from the configured index.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import textwrap
import venv
from pathlib import Path

import pytest
from mypy import api as mypy_api

USER_SCRIPT = textwrap.dedent(
    """
    import io, json, sys
    from importlib import metadata, resources

    import numpy as np
    from PIL import Image

    import clothing_preproc as cp

    img = Image.new("RGB", (64, 48), (255, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    x = cp.preprocess_image(buf.getvalue(), cp.PreprocessConfig(target_size=(8, 8)))
    request = cp.array_to_tensor_proto(x[None])
    back = cp.tensor_proto_to_array(type(request).FromString(request.SerializeToString()))
    try:
        cp.preprocess_image(b"nope")
        refused = None
    except cp.NotAnImage as e:
        refused = str(e)
    print(json.dumps({
        "module": cp.__file__,
        "pixel": x[0, 0].tolist(),
        "round_trip": bool(np.array_equal(back[0], x)),
        "refused": refused,
        "api": sorted(cp.__all__),
        "requires": sorted(metadata.requires("clothing-preproc") or []),
        "typed": resources.files("clothing_preproc").joinpath("py.typed").is_file(),
        "labels": list(cp.top_k([0.0] * 9 + [5.0], k=1)[0][:1]),
    }))
    """
)

TYPED_USER = textwrap.dedent(
    """
    import numpy as np
    from clothing_preproc import PreprocessConfig, array_to_tensor_proto, preprocess_image

    def classify(data: bytes) -> int:
        x = preprocess_image(data, PreprocessConfig(family="resnet50"))
        proto = array_to_tensor_proto(x[None])
        return len(proto.tensor_content)

    wrong_array: str = preprocess_image(b"")
    wrong_bytes: str = array_to_tensor_proto(np.zeros(3)).tensor_content
    """
)


def built(pattern: str) -> Path:
    found = sorted(Path.cwd().glob(pattern))  # Pants puts packages at the sandbox root
    assert len(found) == 1, f"expected one {pattern} from `pants package src:clothing-preproc`, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    python = root / "bin" / "python"
    subprocess.run(
        [
            str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            str(built("clothing_preproc-*.whl")),
        ],
        check=True,
        timeout=600,
    )
    return python


def test_the_wheel_works_outside_the_repo(clean_venv: Path, tmp_path: Path) -> None:
    # Run from an empty directory with a clean environment: nothing of the repo is importable.
    run = subprocess.run(
        [str(clean_venv), "-I", "-c", USER_SCRIPT], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    result = json.loads(run.stdout)
    assert str(clean_venv.parent.parent) in result["module"]
    assert result["pixel"] == [1.0, -1.0, -1.0]  # pure red, normalised for Xception
    assert result["round_trip"]
    assert result["refused"].startswith("not an image in a supported format")
    assert {"preprocess_image", "array_to_tensor_proto", "PreprocessingError"} <= set(result["api"])
    assert [r.split(" ")[0].split("<")[0].split(">")[0] for r in result["requires"]] == [
        "Pillow",
        "numpy",
        "protobuf",
    ]
    assert result["typed"]
    assert result["labels"] == ["t-shirt"]


def test_users_type_check_against_the_installed_wheel(clean_venv: Path, tmp_path: Path) -> None:
    script = tmp_path / "user.py"
    script.write_text(TYPED_USER, encoding="utf-8")
    out, err, status = mypy_api.run(
        [
            "--strict",
            "--cache-dir", str(tmp_path / "cache"),
            "--python-executable", str(clean_venv),
            str(script),
        ]
    )
    # Both deliberate mistakes are found, so the library's annotations and the protobuf stubs it
    # ships reach the user (without them both lines would be Any and pass); nothing else is reported.
    assert status == 1, out + err
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 2, out
    assert 'user.py:10: error: Incompatible types in assignment (expression has type "ndarray' in errors[0]
    assert 'user.py:11: error: Incompatible types in assignment (expression has type "bytes"' in errors[1]

def test_the_sdist_holds_the_sources_and_generated_protos() -> None:
    with tarfile.open(built("clothing-preproc-*.tar.gz")) as sdist:
        names = {Path(*Path(n).parts[1:]).as_posix() for n in sdist.getnames()}
    assert {"PKG-INFO", "setup.py", "clothing_preproc/__init__.py", "clothing_preproc/py.typed",
            "clothing_protos/tensor_pb2.py", "clothing_protos/tensor_pb2.pyi"} <= names
    assert not [n for n in names if n.endswith("_test.py") or "sample_images" in n]

