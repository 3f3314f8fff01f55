"""The web page in real headless Chromium (Debian's), against the gateway and a real model server."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

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
def page(
    browser: Browser, run_gateway: RunGateway, model_server: LiveModelServer
) -> Iterator[tuple[Page, RunningGateway]]:
    settings = parse_settings(
        [], {"TF_SERVING_HOST": model_server.address, "GATEWAY_FETCH_ALLOW_NETWORKS": "127.0.0.0/8"}
    )
    gw = run_gateway(settings)
    # A phone-sized viewport: the page must work there.
    # Reduced motion: the bars are drawn at their final width at once (no transition to wait for).
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, reduced_motion="reduce"
    )
    outside: list[str] = []
    pg = context.new_page()
    pg.on("request", lambda request: outside.append(request.url) if not _local(request.url) else None)
    pg.goto(gw.url)
    try:
        yield pg, gw
    finally:
        context.close()
    assert outside == [], "the page loaded something from outside this machine"


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
