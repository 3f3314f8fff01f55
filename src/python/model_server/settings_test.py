"""TF Serving's command line, the image's environment and the two config files."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_server.config_files import BatchingParameters, VersionPolicy
from model_server.errors import ConfigError
from model_server.settings import parse_settings


def test_tf_serving_command_line_and_defaults() -> None:
    s = parse_settings(
        [
            "--port=8500",
            "--rest_api_port=8501",
            "--model_name=clothing-model",
            "--model_base_path=/models/clothing-model",
        ],
        {},
    )
    assert (s.grpc_port, s.rest_api_port, s.bind_address) == (8500, 8501, "0.0.0.0")
    (model,) = s.models
    assert (model.name, model.base_path, model.policy) == (
        "clothing-model",
        Path("/models/clothing-model"),
        VersionPolicy(),
    )
    assert s.batching is None
    assert s.enable_model_warmup
    assert not s.tensor_content_responses
    assert s.file_system_poll_wait_seconds == 1.0


def test_the_images_environment_names_the_model() -> None:
    s = parse_settings([], {"MODEL_NAME": "clothing-model", "MODEL_BASE_PATH": "/models"})
    assert [(m.name, m.base_path) for m in s.models] == [("clothing-model", Path("/models/clothing-model"))]
    # Flags win over the environment.
    s = parse_settings(["--model_name", "x", "--model_base_path", "/m/x"], {"MODEL_NAME": "y"})
    assert [(m.name, str(m.base_path)) for m in s.models] == [("x", "/m/x")]


def test_boolean_flags_take_tf_servings_spellings() -> None:
    base = ["--model_base_path", "/m"]
    assert parse_settings([*base, "--enable_batching"], {}).batching == BatchingParameters()
    assert parse_settings([*base, "--enable_batching=false"], {}).batching is None
    assert not parse_settings([*base, "--enable_model_warmup=false"], {}).enable_model_warmup
    assert parse_settings(
        [*base, "--enable_serialization_as_tensor_content=true"], {}
    ).tensor_content_responses


def test_model_config_file_with_policies_and_labels(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text("""
        model_config_list {
          config { name: 'a' base_path: '/m/a' model_platform: 'tensorflow' }
          config {
            name: 'b' base_path: '/m/b'
            model_version_policy { specific { versions: 1 versions: 3 } }
            version_labels { key: 'stable' value: 1 }
            version_labels { key: 'canary' value: 3 }
          }
          config { name: 'c' base_path: '/m/c' model_version_policy { latest { num_versions: 2 } } }
        }
    """)
    a, b, c = parse_settings(["--model_config_file", str(config)], {}).models
    assert a.policy.choose({1, 2, 5}) == {5}
    assert b.policy.choose({1, 2, 3}) == {1, 3}
    assert b.version_labels == {"stable": 1, "canary": 3}
    assert c.policy.choose({1, 2, 5}) == {2, 5}


def test_batching_parameters_file(tmp_path: Path) -> None:
    params = tmp_path / "batching.txt"
    params.write_text(
        "# comment\nmax_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n"
        "allowed_batch_sizes: 8\nallowed_batch_sizes: 16\npad_variable_length_inputs: true\n"
    )
    s = parse_settings(["--model_base_path", "/m", "--batching_parameters_file", str(params)], {})
    assert s.batching == BatchingParameters(
        max_batch_size=16, batch_timeout_micros=2000, allowed_batch_sizes=(8, 16)
    )


@pytest.mark.parametrize(
    ("argv", "files", "message"),
    [
        ([], {}, "no model to serve: give --model_base_path (or --model_config_file)"),
        (
            ["--model_base_path", "/m", "--port", "70000"],
            {},
            "argument --port: port 70000 is outside 0-65535",
        ),
        (
            ["--model_base_path", "/m", "--enable_batching=maybe"],
            {},
            "argument --enable_batching: expected true or false, got 'maybe'",
        ),
        (
            ["--model_base_path", "/m", "--port", "9000", "--rest_api_port", "9000"],
            {},
            "--port and --rest_api_port are both 9000",
        ),
        (["--model_base_path", "/m", "--nope"], {}, "unrecognized arguments: --nope"),
        (
            ["--model_config_file", "{c}", "--model_base_path", "/m"],
            {"c": "model_config_list {}"},
            "--model_config_file and --model_base_path cannot both be set",
        ),
        (["--model_config_file", "{c}"], {"c": "model_config_list {}"}, "{c}: no models configured"),
        (
            ["--model_config_file", "{c}"],
            {"c": "model_config_list { config { nme: 'x' } }"},
            "{c}: Error parsing text-format tensorflow.serving.ModelServerConfig: "
            '1:30: Message type "tensorflow.serving.ModelConfig" has no field named "nme".',
        ),
        (["--model_config_file", "{c}"], {}, "cannot read {c}: No such file or directory"),
        (
            ["--model_base_path", "/m", "--batching_parameters_file", "{c}"],
            {"c": "max_batch_size { value: 8 } allowed_batch_sizes: 4"},
            "final entry in allowed_batch_sizes must equal max_batch_size",
        ),
    ],
)
def test_bad_settings_say_what_is_wrong(
    tmp_path: Path, argv: list[str], files: dict[str, str], message: str
) -> None:
    path = tmp_path / "c.txt"
    if "c" in files:
        path.write_text(files["c"])
    argv = [a.replace("{c}", str(path)) for a in argv]
    with pytest.raises(ConfigError) as caught:
        parse_settings(argv, {})
    assert str(caught.value) == message.replace("{c}", str(path))
