"""API keys and CORS on a real gateway (uvicorn on loopback, TF Serving down), called with httpx.

What a client sees before any model is asked: which routes need a key, how a missing, unknown or
revoked key is answered in each protocol's error shape, and how preflights are answered.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api_keys.key_file import KeyEntry, digest_of
from clothing_settings import SettingError
from gateway import Settings, parse_settings
from gateway.api_keys import KeyTable, RequireKey, current_key_id
from gateway.errors import error_response
from testing_support.in_process_gateway import RunningGateway
from testing_support.ports import closed_port_address
from testing_support.processes import child_environment, python_module

RunGateway = Callable[..., RunningGateway]

ALICE, BOB, OLD = "alice-key-Zm9vYmFyYmF6cXV4", "bob-key-c2Vjb25kIGtleQ", "old-key-cmV2b2tlZA"
KEY_FILE = f"""# test keys
alice {digest_of(ALICE).hex()}

bob {digest_of(BOB).hex()}
old {digest_of(OLD).hex()} revoked
"""
SHOP = "http://shop.example:8080"


def settings(tmp_path: Path, keys: bool = True, **variables: str) -> Settings:
    environ = {"TF_SERVING_HOST": closed_port_address()}
    if keys:
        path = tmp_path / "keys.txt"
        path.write_text(KEY_FILE)
        environ["GATEWAY_API_KEYS_FILE"] = str(path)
    return parse_settings([], environ | variables)


def refusal(response: httpx.Response) -> tuple[int, str]:
    """Status and code of a gateway-shaped error."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    return response.status_code, body["error"]["code"]


def test_without_a_key_file_no_route_asks_for_a_key(run_gateway: RunGateway, tmp_path: Path) -> None:
    gw = run_gateway(settings(tmp_path, keys=False))
    assert refusal(httpx.post(f"{gw.url}/v1/classify", json={})) == (400, "bad_request")
    assert httpx.get(f"{gw.url}/metrics").status_code == 200


def test_a_key_is_needed_and_either_header_carries_it(run_gateway: RunGateway, tmp_path: Path) -> None:
    gw = run_gateway(settings(tmp_path))
    missing = httpx.post(f"{gw.url}/v1/classify", json={})
    assert refusal(missing) == (401, "unauthorized")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "X-API-Key" in missing.json()["error"]["message"]
    # With a key the request reaches the route, which finds the empty body wanting.
    for headers in (
        {"Authorization": f"Bearer {ALICE}"},
        {"X-API-Key": BOB},
        {"authorization": f"bearer {BOB}"},
    ):
        assert refusal(httpx.post(f"{gw.url}/v1/classify", json={}, headers=headers)) == (400, "bad_request")
    unknown = httpx.post(f"{gw.url}/predict", json={}, headers={"X-API-Key": "not-a-key-we-know"})
    assert refusal(unknown) == (401, "unauthorized")
    assert unknown.json()["error"]["message"] == "unknown API key"
    revoked = httpx.post(f"{gw.url}/v1/classify/batch", json={}, headers={"X-API-Key": OLD})
    assert refusal(revoked) == (403, "key_revoked")
    assert "'old'" in revoked.json()["error"]["message"]


def test_other_protocols_are_refused_in_their_own_error_shape(
    run_gateway: RunGateway, tmp_path: Path
) -> None:
    gw = run_gateway(settings(tmp_path))
    for method, path in (
        ("POST", "/v2/models/clothing-model/infer"),
        ("GET", "/v2/models/clothing-model"),
        ("GET", "/v2/models/clothing-model/ready"),
        ("POST", "/v1/models/clothing-model:predict"),
        ("GET", "/v1/models/clothing-model"),
    ):
        answer = httpx.request(method, f"{gw.url}{path}", json={"instances": []})
        assert answer.status_code == 401, (path, answer.text)
        assert isinstance(answer.json()["error"], str), path
        revoked = httpx.request(method, f"{gw.url}{path}", headers={"X-API-Key": OLD})
        assert (revoked.status_code, isinstance(revoked.json()["error"], str)) == (403, True), path
    # With a key, v2 metadata is answered (TF Serving being down only empties its versions).
    metadata = httpx.get(f"{gw.url}/v2/models/clothing-model", headers={"X-API-Key": ALICE})
    assert metadata.status_code == 200
    assert metadata.json()["name"] == "clothing-model"


def test_health_the_page_and_the_schema_need_no_key(run_gateway: RunGateway, tmp_path: Path) -> None:
    gw = run_gateway(settings(tmp_path))
    for path in ("/healthz", "/", "/static/page.js", "/static/page.css", "/openapi.json", "/v2/health/live"):
        assert httpx.get(f"{gw.url}{path}").status_code == 200, path
    # Open, and honest: TF Serving is down.
    assert httpx.get(f"{gw.url}/readyz").status_code == 503
    assert httpx.get(f"{gw.url}/v2/health/ready").status_code == 400
    # Shown only to a key holder on the gateway's port (GATEWAY_METRICS_PORT has none).
    assert httpx.get(f"{gw.url}/metrics").status_code == 401
    assert httpx.get(f"{gw.url}/metrics", headers={"X-API-Key": ALICE}).status_code == 200
    # The open prefix is one asset name, not a way round the check.
    assert httpx.post(f"{gw.url}/static/../v1/classify", json={}).status_code in (401, 404)
    assert httpx.get(f"{gw.url}/static/x/y").status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer"},
        {"Authorization": "bearer"},
        {"X-API-Key": ""},
        {"Authorization": f"Basic {ALICE}"},
        {"Authorization": f"Bearer {ALICE}", "X-API-Key": BOB},
        {"X-API-Key": "k" * 257},
        {"X-API-Key": ALICE + " extra"},
        # A good key beside a credential that does not check out is refused too.
        {"X-API-Key": ALICE, "Authorization": "Basic YWxpY2U6cHc="},
        {"X-API-Key": ALICE, "Authorization": "Bearer"},
        {"Authorization": f"Bearer {ALICE}", "X-API-Key": ""},
    ],
)
def test_odd_key_headers_are_401_not_500(
    run_gateway: RunGateway, tmp_path: Path, headers: dict[str, str]
) -> None:
    gw = run_gateway(settings(tmp_path))
    assert refusal(httpx.post(f"{gw.url}/v1/classify", json={}, headers=headers)) == (401, "unauthorized")


def test_non_ascii_keys_are_401(run_gateway: RunGateway, tmp_path: Path) -> None:
    gw = run_gateway(settings(tmp_path))
    for raw in ("clé-secrète".encode(), b"\xff\xfe", "ключ".encode()):
        answer = httpx.post(f"{gw.url}/v1/classify", json={}, headers=[(b"X-API-Key", raw)])
        assert refusal(answer) == (401, "unauthorized")


def test_refusals_are_counted_by_code(run_gateway: RunGateway, tmp_path: Path) -> None:
    gw = run_gateway(settings(tmp_path))
    httpx.post(f"{gw.url}/v1/classify", json={})
    httpx.post(f"{gw.url}/v1/classify", json={}, headers={"X-API-Key": OLD})
    page = httpx.get(f"{gw.url}/metrics", headers={"X-API-Key": ALICE}).text
    assert 'gateway_errors_total{code="unauthorized"} 1.0' in page
    assert 'gateway_errors_total{code="key_revoked"} 1.0' in page


@pytest.fixture()
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio()
async def test_the_route_knows_which_key_let_the_request_in() -> None:
    async def who(request: Request) -> Response:
        return JSONResponse({"key": current_key_id()})

    async def refused(request: Request, exc: Exception) -> Response:
        return error_response(exc, request.url.path)

    keys = KeyTable([KeyEntry("alice", digest_of(ALICE)), KeyEntry("bob", digest_of(BOB))])
    app = RequireKey(Starlette(routes=[Route("/who", who), Route("/healthz", who)]), keys, refused)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        assert (await client.get("/who", headers={"X-API-Key": BOB})).json() == {"key": "bob"}
        bearer = await client.get("/who", headers={"Authorization": f"Bearer {ALICE}"})
        assert bearer.json() == {"key": "alice"}
        # An open route runs with no key id, even when a key is sent.
        assert (await client.get("/healthz", headers={"X-API-Key": BOB})).json() == {"key": None}
    assert current_key_id() is None


# CORS


def test_cors_is_off_by_default(run_gateway: RunGateway, tmp_path: Path) -> None:
    gw = run_gateway(settings(tmp_path, keys=False))
    answer = httpx.post(f"{gw.url}/v1/classify", json={}, headers={"Origin": SHOP})
    assert "access-control-allow-origin" not in answer.headers
    preflight = httpx.options(
        f"{gw.url}/v1/classify", headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def _preflight(
    url: str, origin: str, method: str = "POST", headers: str = "content-type,x-api-key"
) -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


def test_an_allowed_origins_preflight_is_answered_before_any_key_is_asked(
    run_gateway: RunGateway, tmp_path: Path
) -> None:
    gw = run_gateway(settings(tmp_path, GATEWAY_CORS_ORIGINS=f"{SHOP}, https://Admin.Example"))
    asked = "content-type,authorization,x-api-key,x-request-id,traceparent,x-client-id"
    for origin in (SHOP, "https://admin.example"):
        answer = _preflight(f"{gw.url}/v1/classify", origin, headers=asked)
        assert answer.status_code == 204, answer.text
        assert answer.headers["access-control-allow-origin"] == origin
        allowed = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
        assert set(asked.split(",")) <= allowed
        assert set(answer.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
        assert "Origin" in answer.headers["vary"]
    # The request itself: refused for want of a key, and readable by the page that sent it.
    refused = httpx.post(f"{gw.url}/v1/classify", json={}, headers={"Origin": SHOP})
    assert refusal(refused) == (401, "unauthorized")
    assert refused.headers["access-control-allow-origin"] == SHOP
    exposed = {h.strip() for h in refused.headers["access-control-expose-headers"].split(",")}
    assert {"X-Request-ID", "X-Model-Version"} <= exposed
    served = httpx.post(f"{gw.url}/v1/classify", json={}, headers={"Origin": SHOP, "X-API-Key": ALICE})
    assert (served.status_code, served.headers["access-control-allow-origin"]) == (400, SHOP)


def test_preflights_outside_the_policy_are_refused_in_words(run_gateway: RunGateway, tmp_path: Path) -> None:
    gw = run_gateway(settings(tmp_path, GATEWAY_CORS_ORIGINS=SHOP))
    for origin, method, headers, words in (
        ("http://evil.example", "POST", "content-type", "origin 'http://evil.example'"),
        (SHOP, "DELETE", "content-type", "method 'DELETE'"),
        (SHOP, "POST", "content-type,x-secret", "header 'x-secret'"),
    ):
        answer = _preflight(f"{gw.url}/v1/classify", origin, method, headers)
        assert refusal(answer) == (400, "bad_request")
        assert words in answer.json()["error"]["message"]
        assert "access-control-allow-origin" not in answer.headers
    # A page of another origin gets its answer, but no header lets its browser show it.
    other = httpx.get(f"{gw.url}/healthz", headers={"Origin": "http://evil.example"})
    assert other.status_code == 200
    assert "access-control-allow-origin" not in other.headers
    # v2's routes refuse in v2's shape.
    v2 = _preflight(f"{gw.url}/v2/models/clothing-model/infer", "http://evil.example")
    assert v2.status_code == 400
    assert isinstance(v2.json()["error"], str)


def test_any_origin(run_gateway: RunGateway, tmp_path: Path) -> None:
    gw = run_gateway(settings(tmp_path, GATEWAY_CORS_ORIGINS="*"))
    answer = _preflight(f"{gw.url}/v1/classify", "http://anywhere.example:1234")
    assert (answer.status_code, answer.headers["access-control-allow-origin"]) == (204, "*")
    simple = httpx.get(f"{gw.url}/healthz", headers={"Origin": "null"})
    assert simple.headers["access-control-allow-origin"] == "*"


# Settings read at start


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("alice\n", 1, "fields"),
        (f"# keys\n\nalice {digest_of(ALICE).hex()} gone\n", 3, "fields"),
        (f"al ice {digest_of(ALICE).hex()}\n", 1, "fields"),
        (f"-alice {digest_of(ALICE).hex()}\n", 1, "key id"),
        (f"alice {ALICE}\n", 1, "never keys"),
        (f"alice {digest_of(ALICE).hex()}\nalice {digest_of(BOB).hex()}\n", 2, "already on line 1"),
        (f"alice {digest_of(ALICE).hex()}\nbob {digest_of(ALICE).hex()}\n", 2, "already on line 1"),
    ],
)
def test_a_malformed_key_file_names_the_variable_and_the_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(text)
    with pytest.raises(SettingError) as caught:
        parse_settings([], {"GATEWAY_API_KEYS_FILE": str(path)})
    message = str(caught.value)
    assert caught.value.setting == "GATEWAY_API_KEYS_FILE"
    assert message.startswith(f"GATEWAY_API_KEYS_FILE: {path} line {line}: ")
    assert words in message
    assert "\n" not in message
    assert ALICE not in message


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("GATEWAY_API_KEYS_FILE", "/nonexistent/keys.txt", "cannot read"),
        ("GATEWAY_API_KEYS_FILE", "<empty>", "holds no keys"),
        ("GATEWAY_CORS_ORIGINS", "shop.example", "http:// or https://"),
        ("GATEWAY_CORS_ORIGINS", "https://shop.example/", "no path"),
        ("GATEWAY_CORS_ORIGINS", "https://shop.example/app", "no path"),
        ("GATEWAY_CORS_ORIGINS", "https://user@shop.example", "no user name"),
        ("GATEWAY_CORS_ORIGINS", "https://shop.example:99999", "not an origin"),
        ("GATEWAY_CORS_ORIGINS", "ftp://shop.example", "http:// or https://"),
        ("GATEWAY_CORS_ORIGINS", "*,https://shop.example", "give it alone"),
    ],
)
def test_bad_access_settings_name_the_variable(tmp_path: Path, name: str, value: str, words: str) -> None:
    if value == "<empty>":
        (tmp_path / "empty").write_text("# nobody yet\n")
        value = str(tmp_path / "empty")
    with pytest.raises(SettingError) as caught:
        parse_settings([], {name: value})
    assert caught.value.setting == name
    assert str(caught.value).startswith(f"{name}: ")
    assert words in str(caught.value)


def test_origins_are_kept_as_browsers_send_them(tmp_path: Path) -> None:
    given = "HTTPS://Shop.Example:443, http://127.0.0.1:8080,http://[::1]:3000 ,https://shop.example"
    access = parse_settings([], {"GATEWAY_CORS_ORIGINS": given}).access
    assert access.cors_origins == ("https://shop.example", "http://127.0.0.1:8080", "http://[::1]:3000")


def test_the_gateway_stops_on_a_malformed_key_file_in_one_line(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"alice {digest_of(ALICE).hex()}\nbob\n")
    env = child_environment({"TF_SERVING_HOST": closed_port_address(), "GATEWAY_API_KEYS_FILE": str(keys)})
    argv = python_module("gateway")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"gateway: GATEWAY_API_KEYS_FILE: {keys} line 2: "
        "expected '<key id> <sha256 hex> [revoked]', got 1 fields"
    ]


# The API's description


def test_the_schema_says_which_routes_need_a_key_and_how_to_send_one(
    run_gateway: RunGateway, tmp_path: Path
) -> None:
    plain = httpx.get(f"{run_gateway(settings(tmp_path, keys=False)).url}/openapi.json").json()
    assert "securitySchemes" not in plain["components"]
    assert "security" not in plain
    assert "401" not in plain["paths"]["/v1/classify"]["post"]["responses"]

    gw = run_gateway(settings(tmp_path))
    schema = httpx.get(f"{gw.url}/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"]["type"] == "http"
    assert schemes["bearer"]["scheme"] == "bearer"
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schema["security"] == [{"bearer": []}, {"apiKey": []}]
    paths = schema["paths"]
    for path in ("/", "/static/{name}", "/healthz", "/readyz", "/openapi.json", "/v2/health/live"):
        for operation in paths[path].values():
            assert operation["security"] == [], path
            assert "401" not in operation["responses"], path
    shapes = {
        "/v1/classify": "Error",
        "/v2/models/{name}/infer": "PlainError",
        "/v1/models/{name}": "PlainError",
    }
    for path, shape in shapes.items():
        for operation in paths[path].values():
            assert "security" not in operation, path  # the document's: a key
            for status in ("401", "403"):
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"] == {"$ref": f"#/components/schemas/{shape}"}, (path, status)
    assert "unauthorized" in paths["/predict"]["post"]["responses"]["401"]["description"]
    assert "key_revoked" in paths["/metrics"]["get"]["responses"]["403"]["description"]
    # What the schema says is what the gateway does: each route without a template is open, or
    # refuses a request without a key.
    for path, operations in paths.items():
        if "{" in path:
            continue
        for method, operation in operations.items():
            answered = httpx.request(method.upper(), f"{gw.url}{path}", timeout=10).status_code
            assert (answered == 401) == ("security" not in operation), (method, path, answered)
