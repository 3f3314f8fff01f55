"""The decode options' settings and per-request parsing (the live behaviour: decode_options_api_test.py)."""

from __future__ import annotations

import pytest

from clothing_preproc import PreprocessConfig
from clothing_settings import SettingError
from gateway.decode_options import DecodeOptions, Decoding
from gateway.errors import BadRequest
from gateway.openapi import openapi_schema
from gateway.settings import ServingTarget, parse_settings


def test_the_defaults_are_keras_exact_and_clients_may_set_orientation_and_background() -> None:
    options = parse_settings([], {}).decoding
    assert options.defaults == Decoding(draft=False, exif_orientation=False, background=None)
    assert options.per_request == ("exif_orientation", "background")
    # With the defaults the library's config is unchanged: Keras' path.
    assert options.defaults.apply(PreprocessConfig()) == PreprocessConfig()


def test_the_operator_sets_the_defaults_and_what_clients_may_change() -> None:
    options = parse_settings(
        [],
        {
            "GATEWAY_DRAFT_DECODE": "true",
            "GATEWAY_EXIF_ORIENTATION": "1",
            "GATEWAY_ALPHA_BACKGROUND": "255, 255, 255",
            "GATEWAY_REQUEST_OPTIONS": "draft, background",
        },
    ).decoding
    assert options.defaults == Decoding(draft=True, exif_orientation=True, background=(255, 255, 255))
    assert options.per_request == ("draft", "background")
    assert parse_settings([], {"GATEWAY_ALPHA_BACKGROUND": "#10A0fF"}).decoding.defaults.background == (
        16,
        160,
        255,
    )
    assert parse_settings([], {"GATEWAY_REQUEST_OPTIONS": "all"}).decoding.per_request == (
        "draft",
        "exif_orientation",
        "background",
    )
    assert parse_settings([], {"GATEWAY_REQUEST_OPTIONS": "none"}).decoding.per_request == ()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_DRAFT_DECODE", "yes please"),
        ("GATEWAY_EXIF_ORIENTATION", "2"),
        ("GATEWAY_ALPHA_BACKGROUND", "white"),
        ("GATEWAY_ALPHA_BACKGROUND", "256,0,0"),
        ("GATEWAY_ALPHA_BACKGROUND", "#fffff"),
        ("GATEWAY_REQUEST_OPTIONS", "draft,rotate"),
        ("GATEWAY_REQUEST_OPTIONS", "all,draft"),
    ],
)
def test_a_bad_value_is_refused_at_start_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingError) as caught:
        parse_settings([], {name: value})
    assert caught.value.setting == name
    assert name in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_request_sets_what_it_may() -> None:
    options = DecodeOptions()
    assert options.for_request({}) == Decoding()
    assert options.for_request({"exif_orientation": "true", "background": "ffffff"}) == Decoding(
        exif_orientation=True, background=(255, 255, 255)
    )
    assert options.for_request({"background": "#000000"}).background == (0, 0, 0)
    # An operator's default can be turned off per request, with the option allowed.
    on = DecodeOptions(defaults=Decoding(exif_orientation=True, background=(1, 2, 3)))
    assert on.for_request({"exif_orientation": "0", "background": "none"}) == Decoding()
    # KServe v2's parameters object, typed JSON values.
    assert options.for_request({}, {"exif_orientation": True, "binary_data_output": True}) == Decoding(
        exif_orientation=True
    )


@pytest.mark.parametrize(
    ("query", "parameters", "named"),
    [
        ({"draft": "true"}, None, "draft"),  # not allowed by default: the operator's CPU
        ({}, {"draft": False}, "draft"),
        ({"exif_orientation": "yes"}, None, "exif_orientation"),
        ({"background": "white"}, None, "background"),
        ({}, {"exif_orientation": "maybe"}, "exif_orientation"),
        ({}, {"background": 16777215}, "background"),
        ({"background": "ffffff"}, {"background": "ffffff"}, "background"),
    ],
)
def test_a_refused_option_is_a_bad_request_naming_it(
    query: dict[str, str], parameters: dict[str, object] | None, named: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        DecodeOptions().for_request(query, parameters)
    assert caught.value.message.startswith(named)


def test_with_none_allowed_every_option_is_refused() -> None:
    options = DecodeOptions(per_request=())
    for name, value in (("draft", "false"), ("exif_orientation", "false"), ("background", "none")):
        with pytest.raises(BadRequest, match=f"^{name} cannot be set per request.*clients may set: none"):
            options.for_request({name: value})


def test_the_report_names_every_option_and_the_preprocessing() -> None:
    decoding = Decoding(draft=True, exif_orientation=False, background=(255, 128, 0))
    config = decoding.apply(PreprocessConfig(target_size=(224, 200), family="resnet50"))
    assert (config.draft, config.exif_orientation, config.background) == (True, False, (255, 128, 0))
    assert decoding.report(config) == {
        "draft": True,
        "exif_orientation": False,
        "background": "#ff8000",
        "family": "resnet50",
        "size": [224, 200],
    }
    assert Decoding().header_value(PreprocessConfig()) == (
        "draft=false, exif_orientation=false, background=none, family=xception, size=299x299"
    )
    assert decoding.v2_parameters(config) == {
        "draft": True,
        "exif_orientation": False,
        "background": "#ff8000",
        "family": "resnet50",
        "size": "224x200",
    }


def test_the_schema_lists_only_the_options_clients_may_set() -> None:
    def query_names(options: DecodeOptions, path: str) -> set[str]:
        schema = openapi_schema(ServingTarget(), options)
        (operation,) = schema["paths"][path].values()
        return {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}

    for path in ("/predict", "/v1/classify", "/v1/classify/batch", "/v1/models/{name}:predict",
                 "/v2/models/{name}/infer"):  # fmt: skip
        assert {"exif_orientation", "background"} <= query_names(DecodeOptions(), path), path
        assert "draft" not in query_names(DecodeOptions(), path), path
        assert "draft" in query_names(DecodeOptions(per_request=("draft",)), path), path
