"""Version choice and canary split, without a model server: parsing, stickiness, the split's share,
the settings' refusals, and the answers of the app's versioned routes when TF Serving is absent."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable

import httpx
import pytest

from clothing_settings import SettingError
from gateway import parse_settings
from gateway.errors import BadRequest, VersionNotFound, describe
from gateway.settings import Rollout
from gateway.versions import LATEST, CanarySplit, ModelChoice, client_bucket, not_served, requested_choice
from testing_support.in_process_gateway import RunningGateway
from testing_support.ports import closed_port_address


def choice_of(path: dict[str, str] | None = None, **query: str | list[str]) -> ModelChoice | None:
    values = {k: v if isinstance(v, list) else [v] for k, v in query.items()}
    return requested_choice(path or {}, values)


def test_a_request_pins_a_version_or_a_label_by_query_or_path() -> None:
    assert choice_of() is None
    assert choice_of(version="2") == ModelChoice(version=2)
    assert choice_of(label="canary") == ModelChoice(label="canary")
    assert choice_of({"version": "7"}) == ModelChoice(version=7)
    assert choice_of({"label": "v2-rc.1"}) == ModelChoice(label="v2-rc.1")
    assert choice_of(version="0") == ModelChoice(version=0)
    assert choice_of(version=str(2**63 - 1)) == ModelChoice(version=2**63 - 1)


@pytest.mark.parametrize(
    ("path", "query", "words"),
    [
        ({}, {"version": "two"}, "not a version number"),
        ({}, {"version": " 2"}, "not a version number"),
        ({}, {"version": "1_0"}, "not a version number"),
        ({}, {"version": "٣"}, "not a version number"),  # another script's digit
        ({}, {"version": "-1"}, "not a version number"),
        ({}, {"version": str(2**63)}, "not a version number"),
        ({}, {"version": ""}, "not a version number"),
        ({}, {"label": ""}, "not a version label"),
        ({}, {"label": "a" * 65}, "not a version label"),
        ({}, {"label": "stable canary"}, "not a version label"),
        ({}, {"label": "-x"}, "not a version label"),
        ({}, {"label": "é"}, "not a version label"),
        ({}, {"version": "1", "label": "stable"}, "not both"),
        ({"version": "1"}, {"version": "1"}, "not both"),
        ({"label": "stable"}, {"version": "1"}, "not both"),
        ({}, {"version": ["1", "2"]}, "give version once"),
    ],
)
def test_a_bad_or_double_choice_is_a_400_saying_what_is_wrong(
    path: dict[str, str], query: dict[str, str | list[str]], words: str
) -> None:
    with pytest.raises(BadRequest, match=words) as caught:
        choice_of(path, **query)
    assert describe(caught.value).status == 400


def test_a_choice_is_a_version_or_a_label_never_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        ModelChoice(version=1, label="stable")
    assert not LATEST.pinned
    assert ModelChoice(version=1).pinned
    assert ModelChoice(label="x").pinned
    assert ModelChoice(label="canary").describe() == "label 'canary'"


def test_an_unknown_version_is_a_404_listing_the_versions_served() -> None:
    error = VersionNotFound(not_served(ModelChoice(version=9), "clothing-model", (1, 2)))
    answer = describe(error)
    assert (answer.status, answer.code) == (404, "version_not_found")
    assert answer.message == (
        "version 9 names no version of model 'clothing-model' that is served; versions available: 1, 2"
    )


def split(percent: int, seed: int = 0, routed: list[str] | None = None) -> CanarySplit:
    return CanarySplit(
        Rollout(canary_percent=percent),
        routed=None if routed is None else routed.append,
        rng=random.Random(seed),  # noqa: S311 - a reproducible split
    )


def test_no_split_by_default_requests_pin_nothing() -> None:
    routed: list[str] = []
    off = split(0, routed=routed)
    assert not off.active
    assert {off.for_client(None), off.for_client("alice")} == {LATEST}
    assert routed == []


def test_a_client_id_always_lands_on_the_same_side() -> None:
    ten = split(10)
    for client in ("alice", "bob", "carol", "", "ü-client", "x" * 1000):
        sides = {ten.for_client(client or None).label for _ in range(20)}
        if client:
            assert len(sides) == 1, client
    # The bucket is sha256's, the same in every process and replica (not Python's salted hash).
    assert client_bucket("alice") == int.from_bytes(hashlib.sha256(b"alice").digest()[:8]) % 100


def test_raising_the_percent_only_moves_clients_from_stable_to_canary() -> None:
    clients = [f"client-{i}" for i in range(2000)]
    previous = {c for c in clients if split(0).for_client(c).label == "canary"}
    assert previous == set()
    for percent in (1, 5, 10, 25, 50, 90, 100):
        canary = {c for c in clients if split(percent).for_client(c).label == "canary"}
        assert previous <= canary, f"a client left the canary when it grew to {percent}%"
        # Hashing spreads clients evenly: each share within 4 standard deviations of the binomial.
        p = percent / 100
        sd = math.sqrt(len(clients) * p * (1 - p))
        assert abs(len(canary) - len(clients) * p) <= 4 * sd + 1, percent
        previous = canary
    assert previous == set(clients)


def test_requests_without_a_client_id_are_split_at_random_in_the_percent_asked() -> None:
    routed: list[str] = []
    ten = split(10, seed=42, routed=routed)
    n = 4000
    canary = sum(ten.for_client(None).label == "canary" for _ in range(n))
    sd = math.sqrt(n * 0.1 * 0.9)
    assert abs(canary - n * 0.1) <= 4 * sd
    assert sorted(set(routed)) == ["canary", "stable"]
    assert routed.count("canary") == canary


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("GATEWAY_CANARY_PERCENT", "ten", "GATEWAY_CANARY_PERCENT='ten' is not a whole number"),
        ("GATEWAY_CANARY_PERCENT", "101", "GATEWAY_CANARY_PERCENT=101 is outside 0..100"),
        ("GATEWAY_CANARY_PERCENT", "-1", "GATEWAY_CANARY_PERCENT=-1 is outside 0..100"),
        ("GATEWAY_STABLE_LABEL", "stable one", "GATEWAY_STABLE_LABEL='stable one' is not a version label"),
        ("GATEWAY_CANARY_LABEL", "c" * 65, "GATEWAY_CANARY_LABEL='c+' is not a version label"),
        ("GATEWAY_CANARY_LABEL", "stable", "GATEWAY_CANARY_LABEL='stable' is GATEWAY_STABLE_LABEL too"),
        ("GATEWAY_CLIENT_ID_HEADER", "X Client", "='X Client' is not an HTTP header name"),
        ("GATEWAY_CLIENT_ID_HEADER", "X-Client:", "is not an HTTP header name"),
    ],
)
def test_a_bad_rollout_setting_stops_the_gateway_naming_it(variable: str, value: str, words: str) -> None:
    with pytest.raises(SettingError, match=words) as caught:
        parse_settings([], {variable: value})
    assert caught.value.setting == variable
    assert "\n" not in str(caught.value)


def test_the_rollout_settings_are_read() -> None:
    s = parse_settings(
        [],
        {
            "GATEWAY_CANARY_PERCENT": "10",
            "GATEWAY_STABLE_LABEL": "prod",
            "GATEWAY_CANARY_LABEL": "next",
            "GATEWAY_CLIENT_ID_HEADER": "X-User",
        },
    )
    assert s.rollout == Rollout(
        canary_percent=10, stable_label="prod", canary_label="next", client_id_header="X-User"
    )
    assert parse_settings([], {}).rollout == Rollout(0, "stable", "canary", "X-Client-ID")


@pytest.fixture()
def no_model_server(run_gateway: Callable[..., RunningGateway]) -> RunningGateway:
    """The gateway in front of a closed port, split at 50%: everything up to the Predict call runs."""
    environ = {"TF_SERVING_HOST": closed_port_address(), "GATEWAY_CANARY_PERCENT": "50"}
    return run_gateway(parse_settings([], environ))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/predict?version=x"),
        ("POST", "/v1/classify?label=a%20b"),
        ("POST", "/v1/classify/batch?version=1&label=stable"),
        ("POST", "/v1/models/clothing-model/versions/abc:predict"),
        ("POST", "/v1/models/clothing-model/versions/1:predict?label=stable"),
        ("POST", "/v2/models/clothing-model/versions/one/infer"),
        ("GET", "/v2/models/clothing-model/versions/one"),
    ],
)
def test_every_route_refuses_a_bad_choice_before_anything_else(
    no_model_server: RunningGateway, method: str, path: str
) -> None:
    r = httpx.request(method, no_model_server.url + path, json={"url": "http://example.com/a.jpg"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    message = error if isinstance(error, str) else error["message"]
    assert "version" in message or "label" in message


def test_the_split_counts_each_side_from_the_first_scrape(no_model_server: RunningGateway) -> None:
    url = no_model_server.url
    page = httpx.get(f"{url}/metrics").text
    assert 'gateway_rollout_requests_total{label="stable",status="200"} 0.0' in page
    assert 'gateway_rollout_requests_total{label="canary",status="200"} 0.0' in page
    for i in range(20):
        # Refused (a private address): the split's count has the answer's status all the same.
        r = httpx.post(
            f"{url}/predict", json={"url": "http://10.0.0.1/a.jpg"}, headers={"X-Client-ID": f"c{i}"}
        )
        assert r.status_code == 400
    # A pinned request is not the split's.
    httpx.post(f"{url}/predict?label=canary", json={"url": "http://10.0.0.1/a.jpg"})
    page = httpx.get(f"{url}/metrics").text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in page.splitlines()
        if line.startswith("gateway_rollout_requests_total{")
    }
    counts = {
        side: samples[f'gateway_rollout_requests_total{{label="{side}",status="400"}}']
        for side in ("stable", "canary")
    }
    assert counts["canary"] == sum(client_bucket(f"c{i}") < 50 for i in range(20))
    assert counts["stable"] + counts["canary"] == 20
