"""TF Serving's command line, the image's environment and the two config files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clothing_preproc.signature import COURSE_MODEL_NAME
from clothing_settings import SettingError, table_in
from model_server.config_files import BatchingParameters, VersionPolicy
from model_server.settings import IGNORED_FLAGS, build_parser, parse_settings


def test_tf_serving_command_line_and_defaults() -> None:
    s = parse_settings(
        [
            "--port=8500",
            "--rest_api_port=8501",
            f"--model_name={COURSE_MODEL_NAME}",
            f"--model_base_path=/models/{COURSE_MODEL_NAME}",
        ],
        {},
    )
    assert (s.grpc_port, s.rest_api_port, s.bind_address) == (8500, 8501, "0.0.0.0")
    (model,) = s.models
    assert (model.name, model.base_path, model.policy) == (
        COURSE_MODEL_NAME,
        Path(f"/models/{COURSE_MODEL_NAME}"),
        VersionPolicy(),
    )
    assert s.batching is None
    assert s.enable_model_warmup
    assert not s.tensor_content_responses
    assert s.file_system_poll_wait_seconds == 1.0


def test_the_images_environment_names_the_model() -> None:
    s = parse_settings([], {"MODEL_NAME": COURSE_MODEL_NAME, "MODEL_BASE_PATH": "/models"})
    expected = [(COURSE_MODEL_NAME, Path(f"/models/{COURSE_MODEL_NAME}"))]
    assert [(m.name, m.base_path) for m in s.models] == expected
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
    s = parse_settings(
        ["--model_config_file", str(config), "--allow_version_labels_for_unavailable_models"], {}
    )
    assert s.allow_version_labels_for_unavailable_models
    a, b, c = s.models
    assert a.policy.choose({1, 2, 5}) == {5}
    assert b.policy.choose({1, 2, 3}) == {1, 3}
    assert b.version_labels == {"stable": 1, "canary": 3}
    assert c.policy.choose({1, 2, 5}) == {2, 5}


def test_a_model_config_file_overrides_the_single_model_flags(tmp_path: Path) -> None:
    # TF Serving ignores --model_name and --model_base_path when --model_config_file is given, so
    # an image whose entrypoint names one model can be started with a config of several versions.
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'b' base_path: '/m/b' } }")
    s = parse_settings(
        ["--model_name=a", "--model_base_path=/m/a", f"--model_config_file={config}"], {"MODEL_NAME": "x"}
    )
    assert [(m.name, str(m.base_path)) for m in s.models] == [("b", "/m/b")]


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
            # TF Serving checks labels before loading anything: at start no version is AVAILABLE.
            ["--model_config_file", "{c}"],
            {"c": "model_config_list { config { name: 'm' base_path: '/m' "
                  "version_labels { key: 'stable' value: 1 } } }"},
            "Request to assign label to version 1 of model m, which is not currently available for "
            "inference (at start no version is; start with --allow_version_labels_for_unavailable_models "
            "to label versions in the first model config)",
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
    with pytest.raises(SettingError) as caught:
        parse_settings(argv, {})
    assert str(caught.value) == message.replace("{c}", str(path))


# Every flag of `tensorflow_model_server --help` in TF Serving 2.21 (main.cc), each with a value
# TF Serving takes; none may stop the server from starting.
TF_SERVING_FLAGS = {
    "port": "8500", "grpc_socket_path": "/tmp/s.sock", "rest_api_port": "8501",
    "rest_api_num_threads": "8", "rest_api_timeout_in_ms": "5000", "rest_api_enable_cors_support": "true",
    "enable_batching": "true", "allow_version_labels_for_unavailable_models": "true",
    "batching_parameters_file": None, "enable_per_model_batching_parameters": "false",
    "model_config_file": None, "model_config_file_poll_wait_seconds": "1", "model_name": None,
    "model_base_path": None, "num_load_threads": "2", "num_unload_threads": "2",
    "max_num_load_retries": "5", "load_retry_interval_micros": "60000000",
    "file_system_poll_wait_seconds": "1", "flush_filesystem_caches": "true",
    "tensorflow_session_parallelism": "2", "tensorflow_session_config_file": "/tmp/session.config",
    "tensorflow_intra_op_parallelism": "2", "tensorflow_inter_op_parallelism": "2",
    "use_alts_credentials": "false", "ssl_config_file": "/tmp/ssl.config",
    "platform_config_file": "/tmp/platform.config", "per_process_gpu_memory_fraction": "0.5",
    "saved_model_tags": "serve", "grpc_channel_arguments": "grpc.max_connection_age_ms=2000",
    "grpc_max_threads": "16", "enable_model_warmup": "true", "num_request_iterations_for_warmup": "2",
    "version": None, "monitoring_config_file": None, "remove_unused_fields_from_bundle_metagraph": "true",
    "prefer_tflite_model": "true", "num_tflite_pools": "2", "num_tflite_interpreters_per_pool": "1",
    "enable_signature_method_name_check": "false", "xla_cpu_compilation_enabled": "false",
    "xla_gpu_compilation_enabled": "false", "enable_profiler": "true",
    "thread_pool_factory_config_file": "/tmp/pool.config", "mixed_precision": "bfloat16",
    "skip_initialize_tpu": "true", "enable_grpc_healthcheck_service": "true",
    "enable_serialization_as_tensor_content": "true",
}


def test_every_tf_serving_flag_is_accepted(tmp_path: Path) -> None:
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    argv = [f"--{name}={value}" for name, value in TF_SERVING_FLAGS.items() if value is not None]
    argv += ["--model_base_path=/m", f"--monitoring_config_file={monitoring}"]
    s = parse_settings(argv, {})
    assert set(s.ignored_flags) == set(IGNORED_FLAGS)
    assert set(IGNORED_FLAGS) < set(TF_SERVING_FLAGS)
    assert s.prometheus_path == "/monitoring/prometheus/metrics"  # TF Serving's default path
    assert s.grpc_channel_arguments == (("grpc.max_connection_age_ms", 2000),)
    assert s.grpc_socket_path == "/tmp/s.sock"
    # Not given: nothing announced.
    assert parse_settings(["--model_base_path=/m"], {}).ignored_flags == ()


def test_channel_arguments_in_tf_servings_form() -> None:
    from model_server.settings import parse_channel_arguments

    assert parse_channel_arguments("grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb") == (
        ("grpc.max_connection_age_ms", 2000),
        ("grpc.lb_policy_name", "grpclb"),
    )
    # Beyond 32 bits TF Serving passes the value as a string.
    assert parse_channel_arguments("a=4294967296,") == (("a", "4294967296"),)
    assert parse_channel_arguments("") == ()


def test_session_parallelism_sets_both_pools_unless_they_are_given() -> None:
    s = parse_settings(["--model_base_path=/m", "--tensorflow_session_parallelism=3"], {})
    assert (s.intra_op_parallelism, s.inter_op_parallelism) == (3, 3)
    s = parse_settings(
        [
            "--model_base_path=/m",
            "--tensorflow_session_parallelism=3",
            "--tensorflow_inter_op_parallelism=1",
        ],
        {},
    )
    assert (s.intra_op_parallelism, s.inter_op_parallelism) == (3, 1)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('prometheus_config: { enable: true, path: "/metrics/here" }', "/metrics/here"),
        ("prometheus_config { enable: false }", None),
        ("", None),
    ],
)
def test_monitoring_config(tmp_path: Path, text: str, path: str | None) -> None:
    config = tmp_path / "monitoring.config"
    config.write_text(text)
    s = parse_settings(["--model_base_path=/m", f"--monitoring_config_file={config}"], {})
    assert s.prometheus_path == path


def test_a_bad_monitoring_config_is_reported_in_tf_servings_words(tmp_path: Path) -> None:
    config = tmp_path / "monitoring.config"
    config.write_text("prometheus_config { enabled: true }")
    with pytest.raises(SettingError) as caught:
        parse_settings(["--model_base_path=/m", f"--monitoring_config_file={config}"], {})
    assert str(caught.value).startswith(
        f"{config}: Error parsing text-format tensorflow.serving.MonitoringConfig: 1:"
    )


def test_the_readme_lists_every_flag_with_its_default() -> None:
    readme = Path("src/python/model_server/README.md").read_text(encoding="utf-8")
    table = table_in(readme, ["flag", "default", "meaning"])
    documented: dict[str, str] = {}
    for row in table.splitlines()[2:]:
        flags, default, _ = (cell.strip() for cell in row.strip("|").split(" | ", 2))
        for flag in re.findall(r"`(--\w+)`", flags):
            documented[flag] = default.replace("`", "").replace("*", "")
    actions = {
        action.option_strings[0]: action
        for action in build_parser()._actions
        if action.option_strings and action.dest not in IGNORED_FLAGS and action.dest != "help"
    }
    assert set(documented) == set(actions), "README.md's flag table and the parser differ"
    for flag, action in actions.items():
        default = action.default
        if isinstance(default, bool):
            shown = str(default).lower()
        elif isinstance(default, int | float) and default >= 1 << 20:
            shown = f"{default / (1 << 20):g} MiB"
        elif isinstance(default, int | float):
            shown = f"{default:g}"
        else:
            continue  # None or a computed default: the README says it in words
        assert documented[flag] == shown, f"{flag}: the README says {documented[flag]}, the parser {shown}"
