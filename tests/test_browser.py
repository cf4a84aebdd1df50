"""The page, driven in a real browser: generate a digit, draw on the canvas, ask for a completion, check the images
that come back, and see a bad value answered on the page while the server keeps serving.

Needs the `playwright` package and a Chromium (Debian's `chromium`, at /usr/bin/chromium or $CHROMIUM);
Playwright's own browser download is not used. Skipped, with the reason, where either is missing.
"""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra (fastapi, uvicorn) is not installed")
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set $CHROMIUM)", allow_module_level=True)

from mnist_diffusion.serve import create_app  # noqa: E402

# What the machine's closed network needs (otherwise Chromium keeps trying to reach Google's services).
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = os.environ.get("MNIST_DIFFUSION_SCREENSHOTS")  # a folder to keep the screenshot in (the README's)


@pytest.fixture(scope="module")
def url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(["ldm", "ddpm-cond"]), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def page(url):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.wait_for_selector("body[data-state=ready]", timeout=60_000)
        yield page
        browser.close()


def _run(page, button: str) -> str:
    page.evaluate("document.body.dataset.state = 'waiting'")
    page.click(button)
    # a selector, not wait_for_function: the page's policy (CSP) lets no string be evaluated as script
    page.wait_for_selector("body[data-state=done], body[data-state=error]", timeout=120_000)
    return page.evaluate("document.body.dataset.state")


def _set(page, selector: str, value) -> None:
    page.eval_on_selector(selector, f"(el) => {{ el.value = {value!r}; el.dispatchEvent(new Event('input')); }}")


def test_generate_streams_the_denoising_and_shows_a_digit(page):
    _set(page, "#steps", "8")
    assert _run(page, "#generate") == "done"
    last = page.evaluate("Array.from(window.mnistDiffusion.last)")
    assert len(last) == 784 and max(last) > 200  # white strokes on black
    assert "done in" in page.inner_text("#progress")


def test_drawing_then_completing_keeps_the_strokes(page, tmp_path):
    page.click("#clear")
    box = page.locator("#draw").bounding_box()
    page.mouse.move(box["x"] + 100, box["y"] + 60)
    page.mouse.down()
    for i in range(12):  # the top stroke of a 7
        page.mouse.move(box["x"] + 100 + 8 * i, box["y"] + 60, steps=2)
    page.mouse.up()
    ink = page.evaluate("Array.from(window.mnistDiffusion.ink)")
    assert sum(v > 0 for v in ink) > 10
    _set(page, "#steps", "6")
    assert _run(page, "#complete") == "done"
    result = page.evaluate("Array.from(window.mnistDiffusion.last)")
    known = [i for i, v in enumerate(ink) if v > 0]
    assert all(result[i] == ink[i] for i in known)  # the drawn pixels come back exactly
    assert sum(v > 0 for i, v in enumerate(result) if ink[i] == 0) > 10  # and the model added strokes
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / "serve_page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000


def _draw_a_bar(page) -> None:
    page.click("#clear")
    box = page.locator("#draw").bounding_box()
    page.mouse.move(box["x"] + 60, box["y"] + 80)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 80, steps=10)
    page.mouse.up()


def test_a_completion_takes_the_models_inpainting_steps_until_the_slider_moves(page):
    """`ddpm-cond` samples in 8 steps but completes in 20 (`Pipeline.inpaint_steps`); a moved slider wins."""
    page.select_option("#model", "ddpm-cond")
    assert page.input_value("#steps") == "8"
    for moved, expected in ((False, 20), (True, 5)):
        if moved:
            _set(page, "#steps", "5")
        _draw_a_bar(page)
        with page.expect_request("**/api/inpaint") as request:
            assert _run(page, "#complete") == "done"
        assert request.value.post_data_json["steps"] == expected


def test_a_bad_value_is_a_message_on_the_page_and_the_server_keeps_serving(page):
    page.eval_on_selector("#steps", "(el) => { el.min = 0; el.value = 0; }")
    assert _run(page, "#generate") == "error"
    assert "steps must be a whole number from 1 to 200" in page.inner_text("#message")
    _set(page, "#steps", "4")
    page.click("#clear")
    assert _run(page, "#complete") == "error"
    assert "draw part of a digit" in page.inner_text("#message")
    assert _run(page, "#generate") == "done" and page.inner_text("#message") == ""


def test_grid_mode_gives_a_png_to_download(page):
    _set(page, "#steps", "4")
    _set(page, "#grid-n", "20")
    assert _run(page, "#grid") == "done"
    assert page.get_attribute("#grid-download", "href").startswith("blob:")
    assert page.evaluate("document.getElementById('grid-image').naturalWidth") > 100
