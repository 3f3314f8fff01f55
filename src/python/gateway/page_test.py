"""The web page in real headless Chromium (Debian's), against the gateway and a real model server."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from api_keys.key_file import digest_of
from clothing_preproc import ModelDescription
from gateway import parse_settings
from testing_support.image_host import ImageHost, Reply, image_bytes
from testing_support.in_process_gateway import RunningGateway
from testing_support.stack import LiveModelServer, demo_model

CHROMIUM = "/usr/bin/chromium"
# Keep Chromium from calling home on this closed network (toolchain facts, §4).
QUIET_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RunGateway = Callable[..., RunningGateway]
OpenPage = Callable[..., tuple[Page, RunningGateway]]


def _install_chromium() -> None:
    """CI starts from a fresh machine: install Debian's chromium (we run as root there)."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive"}
    apt = shutil.which("apt-get", path=env["PATH"]) or "apt-get"
    install = [apt, "install", "-y", "-q", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run([apt, "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        _install_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=QUIET_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveModelServer]:
    with LiveModelServer(demo_model(tmp_path_factory.mktemp("models"))) as server:
        yield server


@pytest.fixture()
def open_page(browser: Browser, run_gateway: RunGateway, model_server: LiveModelServer) -> Iterator[OpenPage]:
    """`open_page(**variables)`: a gateway with these settings and its page in a new browser tab."""
    contexts = []
    outside: list[str] = []

    def open_(**variables: str) -> tuple[Page, RunningGateway]:
        environ = {"TF_SERVING_HOST": model_server.address, "GATEWAY_FETCH_ALLOW_NETWORKS": "127.0.0.0/8"}
        gw = run_gateway(parse_settings([], environ | variables))
        # A phone-sized viewport: the page must work there.
        # Reduced motion: the bars are drawn at their final width at once (no transition to wait for).
        context = browser.new_context(
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            is_mobile=True,
            reduced_motion="reduce",
        )
        contexts.append(context)
        pg = context.new_page()
        pg.on("request", lambda request: outside.append(request.url) if not _local(request.url) else None)
        pg.goto(gw.url)
        return pg, gw

    try:
        yield open_
    finally:
        for context in contexts:
            context.close()
    assert outside == [], "the page loaded something from outside this machine"


@pytest.fixture()
def page(open_page: OpenPage) -> tuple[Page, RunningGateway]:
    return open_page()


def _local(url: str) -> bool:
    return url.startswith(("http://127.0.0.1", "blob:", "data:"))


def _bars(pg: Page) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pg.eval_on_selector_all(
        "#chart li",
        "items => items.map(li => ({label: li.querySelector('.label').textContent,"
        " width: li.querySelector('.bar').getBoundingClientRect().width,"
        " pct: li.querySelector('.pct').textContent}))",
    )
    return rows


def test_a_url_shows_the_image_and_ten_bars(page: tuple[Page, RunningGateway], image_host: ImageHost) -> None:
    pg, _ = page
    image_host.routes["/red.jpg"] = Reply(
        200, image_bytes("JPEG", (400, 300)), {"Content-Type": "image/jpeg"}
    )
    pg.get_by_label("Image URL").fill(image_host.url("/red.jpg"))
    pg.get_by_role("button", name="Classify").click()
    expect(pg.locator("#verdict")).to_contain_text("Most likely:")
    bars = _bars(pg)
    assert len(bars) == 10
    widths = [b["width"] for b in bars]
    assert widths == sorted(widths, reverse=True), "bars are drawn most likely first"
    assert widths[0] > 0
    assert pg.locator("#preview").evaluate("img => img.complete && img.naturalWidth") == 400
    assert pg.locator("#error").is_hidden()
    # This gateway was not given the model's description: it says nothing about its training.
    assert pg.locator("#untrained").is_hidden()


def test_an_uploaded_file_is_classified(page: tuple[Page, RunningGateway], tmp_path: Path) -> None:
    pg, _ = page
    photo = tmp_path / "blue.png"
    photo.write_bytes(image_bytes("PNG", (200, 320), (20, 40, 220)))
    pg.locator("#file").set_input_files(str(photo))
    expect(pg.locator("#verdict")).to_contain_text("Most likely:")
    assert len(_bars(pg)) == 10
    expect(pg.locator("#status")).to_have_text("Done.")


def test_a_non_image_shows_a_readable_error(page: tuple[Page, RunningGateway], tmp_path: Path) -> None:
    pg, _ = page
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    pg.locator("#file").set_input_files(str(notes))
    error = pg.get_by_role("alert")
    expect(error).to_be_visible()
    expect(error).to_contain_text("not an image the model can read")
    assert "{" not in error.inner_text(), "errors are words, not JSON"
    assert pg.locator("#result").is_hidden()


def test_a_blocked_address_is_explained(page: tuple[Page, RunningGateway]) -> None:
    pg, _ = page
    pg.get_by_label("Image URL").fill("http://169.254.169.254/latest/meta-data/")
    pg.get_by_role("button", name="Classify").click()
    expect(pg.get_by_role("alert")).to_contain_text("That address cannot be fetched.")


def _answers_with_description(pg: Page, description: ModelDescription) -> None:
    """The gateway's real answers, with the `trained` flag of `description` in their model block,
    as a gateway given the served model's description answers (routes.Api)."""

    def handle(route: Route) -> None:
        answer = route.fetch()
        body = answer.json()
        assert answer.status == 200, (answer.status, body)
        body["model"]["trained"] = description.trained
        route.fulfill(response=answer, json=body)

    pg.route("**/v1/classify*", handle)


def _classify_a_photo(pg: Page, image_host: ImageHost) -> None:
    image_host.routes["/shirt.png"] = Reply(
        200, image_bytes("PNG", (200, 320), (20, 40, 220)), {"Content-Type": "image/png"}
    )
    pg.get_by_label("Image URL").fill(image_host.url("/shirt.png"))
    pg.get_by_role("button", name="Classify").click()
    expect(pg.locator("#verdict")).to_contain_text("Most likely:")


def test_the_demo_models_scores_are_said_to_mean_nothing(
    page: tuple[Page, RunningGateway], model_server: LiveModelServer, image_host: ImageHost
) -> None:
    pg, _ = page
    version_dir = max(model_server.model_dir.iterdir(), key=lambda p: int(p.name))
    description = ModelDescription.load(version_dir)
    assert description.trained is False  # what the demo model's export wrote
    _answers_with_description(pg, description)
    _classify_a_photo(pg, image_host)
    warning = pg.locator("#untrained")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("these scores mean nothing")
    expect(warning).to_contain_text("./pants stack -- --model-dir")


def test_a_trained_models_scores_carry_no_warning(
    page: tuple[Page, RunningGateway], image_host: ImageHost
) -> None:
    pg, _ = page
    _answers_with_description(pg, ModelDescription(trained=True))
    _classify_a_photo(pg, image_host)
    assert pg.locator("#untrained").is_hidden()


def _paste_image(pg: Page, data: bytes, mime: str) -> None:
    """What pasting an image does: a paste event whose clipboard holds the image as a file."""
    pg.evaluate(
        """([b64, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const clipboard = new DataTransfer();
            clipboard.items.add(new File([bytes], "image", { type: mime }));
            const paste = new ClipboardEvent("paste", { clipboardData: clipboard, bubbles: true });
            document.body.dispatchEvent(paste);
        }""",
        [base64.b64encode(data).decode(), mime],
    )


def _best_of(gw: RunningGateway, image: bytes, key: str | None = None) -> str:
    """The most likely class of `image` as the gateway's upload route answers it."""
    headers = {"X-API-Key": key} if key else {}
    url = f"{gw.url}/v1/classify?top_k=1"
    answer = httpx.post(url, files={"image": ("x", image)}, headers=headers, timeout=30)
    answer.raise_for_status()
    label: str = answer.json()["top"][0]["label"]
    return label


def test_a_pasted_image_is_sent_as_base64_json_and_classified(page: tuple[Page, RunningGateway]) -> None:
    pg, gw = page
    png = image_bytes("PNG", (240, 180), (30, 160, 60))
    with pg.expect_request(lambda r: "/v1/classify" in r.url and r.method == "POST") as sent:
        _paste_image(pg, png, "image/png")
    request = sent.value
    assert request.headers["content-type"] == "application/json"
    body = request.post_data_json
    assert isinstance(body, dict)
    assert list(body) == ["b64"]
    prefix = "data:image/png;base64,"
    assert body["b64"].startswith(prefix)
    assert base64.b64decode(body["b64"][len(prefix) :]) == png, "the page sends the pasted bytes as they are"
    expect(pg.locator("#verdict")).to_contain_text(f"Most likely: {_best_of(gw, png)} (")
    assert len(_bars(pg)) == 10
    assert pg.locator("#preview").evaluate("img => img.complete && img.naturalWidth") == 240
    expect(pg.locator("#status")).to_have_text("Done.")


KEY, REVOKED_KEY = "page-test-key-3q2+7w", "page-test-old-key-9f8e"


def _key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.txt"
    path.write_text(f"page {digest_of(KEY).hex()}\nold {digest_of(REVOKED_KEY).hex()} revoked\n")
    return path


def test_with_api_keys_the_page_asks_for_one_and_keeps_it_for_the_tab(
    open_page: OpenPage, image_host: ImageHost, tmp_path: Path
) -> None:
    pg, gw = open_page(GATEWAY_API_KEYS_FILE=str(_key_file(tmp_path)))
    key_form, why = pg.locator("#key-form"), pg.locator("#key-why")
    assert key_form.is_hidden(), "no key is asked for before the gateway asks"
    _classify_a_photo_expecting(pg, image_host, verdict=False)
    expect(key_form).to_be_visible()
    expect(pg.get_by_role("alert")).to_contain_text("An API key is needed.")
    expect(why).to_contain_text("only requests that carry an API key")

    pg.get_by_label("API key").fill("a-key-nobody-made")
    pg.get_by_role("button", name="Use key").click()
    expect(why).to_contain_text("not known to this gateway")

    # The right key: the stopped request goes again by itself, carrying it.
    with pg.expect_request(lambda r: "/v1/classify" in r.url) as sent:
        pg.get_by_label("API key").fill(KEY)
        pg.get_by_role("button", name="Use key").click()
    assert sent.value.headers["x-api-key"] == KEY
    expect(pg.locator("#verdict")).to_contain_text("Most likely:")
    assert key_form.is_hidden()
    assert pg.evaluate("localStorage.length") == 0, "the key is kept for this tab only"

    # Kept across a reload of this tab; not given to a new tab.
    pg.reload()
    _classify_a_photo_expecting(pg, image_host, verdict=True)
    other = pg.context.new_page()
    other.goto(gw.url)
    assert other.evaluate("sessionStorage.length") == 0
    other.close()

    # Forgotten on request, then a revoked key is said to be revoked.
    pg.get_by_role("button", name="Forget the API key").click()
    _classify_a_photo_expecting(pg, image_host, verdict=False)
    expect(key_form).to_be_visible()
    pg.get_by_label("API key").fill(REVOKED_KEY)
    pg.get_by_role("button", name="Use key").click()
    expect(why).to_contain_text("has been revoked")
    expect(pg.get_by_role("alert")).to_contain_text("The API key has been revoked.")


def _classify_a_photo_expecting(pg: Page, image_host: ImageHost, *, verdict: bool) -> None:
    image_host.routes["/shirt.png"] = Reply(
        200, image_bytes("PNG", (200, 320), (20, 40, 220)), {"Content-Type": "image/png"}
    )
    pg.get_by_label("Image URL").fill(image_host.url("/shirt.png"))
    with pg.expect_response(lambda r: "/v1/classify" in r.url):
        pg.get_by_role("button", name="Classify").click()
    if verdict:
        expect(pg.locator("#verdict")).to_contain_text("Most likely:")
        assert pg.locator("#key-form").is_hidden()


def test_a_page_of_an_allowed_origin_calls_the_gateway_and_others_cannot(
    browser: Browser, run_gateway: RunGateway, model_server: LiveModelServer, tmp_path: Path
) -> None:
    # Two more loopback origins (another port is another origin): a shop allowed by the
    # gateway's CORS setting, and a stranger.
    shop, stranger = ImageHost(), ImageHost()
    blank = Reply(200, b"<!doctype html><title>caller</title>", {"Content-Type": "text/html"})
    shop.routes["/"] = stranger.routes["/"] = blank
    settings = parse_settings(
        [],
        {
            "TF_SERVING_HOST": model_server.address,
            "GATEWAY_CORS_ORIGINS": shop.url(""),
            "GATEWAY_API_KEYS_FILE": str(_key_file(tmp_path)),
        },
    )
    gw = run_gateway(settings)
    image = image_bytes("JPEG", (320, 240), (180, 120, 40))
    call = """async ([gateway, key, b64]) => {
        const headers = { "Content-Type": "application/json" };
        if (key) headers["X-API-Key"] = key;
        try {
            const r = await fetch(gateway + "/v1/classify", {
                method: "POST", headers: headers, body: JSON.stringify({ b64: b64 }),
            });
            return { status: r.status, body: await r.json(), requestId: r.headers.get("X-Request-ID") };
        } catch (e) {
            return { failed: e.name };
        }
    }"""
    context = browser.new_context()
    try:
        pg = context.new_page()
        pg.goto(shop.url("/"))
        b64 = base64.b64encode(image).decode()
        answered = pg.evaluate(call, [gw.url, KEY, b64])
        assert answered["status"] == 200, answered
        assert len(answered["body"]["probabilities"]) == 10
        assert answered["body"]["top"][0]["label"] == _best_of(gw, image, KEY)
        assert answered["requestId"], "X-Request-ID is exposed to the calling page"
        # Without a key the page can read why it was refused.
        refused = pg.evaluate(call, [gw.url, None, b64])
        assert refused["status"] == 401
        assert refused["body"]["error"]["code"] == "unauthorized"

        pg.goto(stranger.url("/"))
        assert pg.evaluate(call, [gw.url, KEY, b64]) == {"failed": "TypeError"}, "the browser blocks it"
    finally:
        context.close()
        shop.close()
        stranger.close()
    # The browser asked first: preflights (204) reached the gateway, the stranger's refused (400).
    metrics = httpx.get(f"{gw.url}/metrics", headers={"X-API-Key": KEY}).text
    counts = {
        status: _count(metrics, status)
        for status in (204, 400)
    }
    assert counts[204] >= 1
    assert counts[400] >= 1


def _count(metrics: str, status: int) -> float:
    """Answers to /v1/classify with `status`, from the gateway's /metrics page."""
    labels = ('route="/v1/classify"', f'status="{status}"')
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("gateway_requests_total{") and all(label in line for label in labels)
    )
