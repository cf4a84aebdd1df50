"""The page, driven in a real browser at 1280x720: "any digit" over a few seeds, a slow-motion run and a
step-through of its recorded frames, completions of drawn strokes and of an erased digit, the labelled grid in
view, and errors told as errors.

Needs the `playwright` package and a Chromium (Debian's `chromium`, at /usr/bin/chromium or $CHROMIUM);
Playwright's own browser download is not used. Skipped, with the reason, where either is missing. With
MNIST_DIFFUSION_SCREENSHOTS=docs/images the screenshots the page's guide shows (docs/serve.md) are written there.
"""

import os
import socket
import threading
import time
from pathlib import Path

import pytest

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra (fastapi, uvicorn) is not installed")
from chromium import CHROMIUM, HAVE_CHROMIUM, VIEW, press  # noqa: E402

if not HAVE_CHROMIUM:
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set $CHROMIUM)", allow_module_level=True)

from mnist_diffusion.serve import create_app  # noqa: E402

SHOTS = os.environ.get("MNIST_DIFFUSION_SCREENSHOTS")  # a folder to keep the screenshots in (docs/images)


@pytest.fixture(scope="module")
def url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(["ddpm-cond", "ldm"]), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def page(browser, url):
    """A fresh page for each test, at the model's defaults."""
    page = browser.new_page(viewport=VIEW)
    page.goto(url)
    page.wait_for_selector("body[data-state=ready]", timeout=60_000)
    yield page
    page.close()


def _set(page, selector: str, value) -> None:
    page.eval_on_selector(selector, f"(el) => {{ el.value = {value!r}; el.dispatchEvent(new Event('input')); }}")


def _state(page, key: str):
    return page.evaluate(
        f"(() => {{ const v = window.mnistDiffusion.{key}; return v && v.length !== undefined "
        "&& typeof v !== 'string' ? Array.from(v) : v; })()"
    )


def _shot(page, name: str, tmp_path) -> None:
    page.screenshot(path=str(tmp_path / name))
    assert (tmp_path / name).stat().st_size > 10_000
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name))


def _stroke(page, points) -> None:
    """A mouse stroke through `points`, (x, y) in the drawing canvas's pixels (224 x 224)."""
    box = page.locator("#draw").bounding_box()
    page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
    page.mouse.up()


def test_the_page_starts_at_each_models_defaults_and_its_sliders_show_them_exactly(page):
    assert page.input_value("#model") == "ddpm-cond" and page.input_value("#digit") == ""  # any digit
    assert page.input_value("#sampler") == "dpmpp_2m" and page.input_value("#steps") == "8"
    assert page.input_value("#guidance") == "1.35" and page.inner_text("#guidance-value") == "1.35"
    page.select_option("#model", "ldm")
    assert page.input_value("#steps") == "20" and page.input_value("#guidance") == "2"
    _set(page, "#guidance", "5")
    page.click("#defaults")
    assert page.input_value("#guidance") == "2"


def test_any_digit_draws_the_digit_its_seed_picks_with_the_models_guidance(page, tmp_path):
    _set(page, "#steps", "4")
    chosen = {}
    for seed in range(5):
        page.fill("#seed", str(seed))
        with page.expect_request("**/api/generate") as request:
            assert press(page, "#generate") == "done"
        assert request.value.post_data_json["digit"] is None
        assert request.value.post_data_json["guidance"] == 1.35
        chosen[seed] = _state(page, "chosen")
        assert f"seed {seed} chose a {chosen[seed]}" in page.inner_text("#progress")
    assert len(set(chosen.values())) >= 3, chosen  # several classes, not a 0 each time
    first = _state(page, "last")
    page.fill("#seed", "4")
    _set(page, "#guidance", "4")  # the same seed and digit, guided harder: another picture
    assert press(page, "#generate") == "done" and _state(page, "chosen") == chosen[4]
    assert _state(page, "last") != first
    _set(page, "#grid-n", "100")
    assert press(page, "#grid") == "done"
    grid = page.locator("#grid-image").bounding_box()
    assert page.evaluate("document.getElementById('grid-image').naturalWidth") > 500  # the labelled grid
    assert grid["y"] + grid["height"] <= VIEW["height"] and grid["x"] + grid["width"] <= VIEW["width"]
    assert page.get_attribute("#grid-download", "href").startswith("blob:")
    _shot(page, "page-any-digit.png", tmp_path)


def test_slow_motion_then_a_step_through_of_the_recorded_frames(page, tmp_path):
    _set(page, "#steps", "3")
    page.select_option("#speed", "1000")
    page.fill("#seed", "7")
    started = time.perf_counter()
    assert press(page, "#generate") == "done"  # the model is done at once; the page shows a step a second
    assert page.evaluate("document.body.dataset.playing") == "yes"
    assert _state(page, "shown") < len(_state(page, "frames")) - 1
    page.wait_for_selector("body[data-playing=no]", timeout=20_000)
    assert time.perf_counter() - started > 2.5  # four frames (three steps and the digit), a second apart
    frames = _state(page, "frames")
    assert len(frames) == 4 and _state(page, "shown") == 3
    assert "the finished digit" in page.inner_text("#frame")

    page.click("#back")  # step through, back and forth, without asking the server again
    assert _state(page, "shown") == 2 and "step 3 of 3" in page.inner_text("#frame")
    _set(page, "#scrub", "0")
    text = page.inner_text("#frame")
    assert _state(page, "shown") == 0 and "step 1 of 3: t = 999" in text and "noise 100%" in text
    noisy = page.evaluate("Array.from(document.getElementById('xt').getContext('2d').getImageData(0,0,28,28).data)")
    page.click("#forward")
    assert _state(page, "shown") == 1 and "step 2 of 3" in page.inner_text("#frame")
    later = page.evaluate("Array.from(document.getElementById('xt').getContext('2d').getImageData(0,0,28,28).data)")
    assert noisy != later
    _shot(page, "page-step-through.png", tmp_path)
    page.select_option("#speed", "0")
    asked = []
    page.on("request", lambda r: asked.append(r.url) if "/api/" in r.url else None)
    page.click("#play")  # a replay in real time: from where it stood to the end, at once
    page.wait_for_selector("body[data-playing=no]", timeout=5_000)
    assert _state(page, "shown") == 3 and asked == []  # nothing was recomputed


def test_completing_drawn_strokes_keeps_them_and_tints_what_the_model_filled(page, tmp_path):
    assert page.get_attribute("#mode-draw", "aria-pressed") == "true"
    _stroke(page, [(70, 50), (160, 50), (110, 190)])  # a 7's bar and stem
    ink = _state(page, "ink")
    assert sum(v > 0 for v in ink) > 30
    page.select_option("#complete-digit", "7")
    with page.expect_request("**/api/inpaint") as request:
        assert press(page, "#complete") == "done"
    assert request.value.post_data_json["steps"] == 50  # drawn strokes take more steps than its 8 (or 20 to erase)
    assert request.value.post_data_json["resample"] == 3
    result = _state(page, "last")
    known = [i for i, v in enumerate(ink) if v > 0]
    assert all(result[i] == ink[i] for i in known)  # the drawn pixels come back exactly
    assert sum(v > 0 for i, v in enumerate(result) if ink[i] == 0) > 10  # and the model added strokes
    filled = _state(page, "filled")
    assert sum(filled) == 784 - len(known)
    i = next(i for i, v in enumerate(result) if ink[i] == 0 and v > 200)  # a bright pixel the model made
    y, x = divmod(i, 28)
    r, g, b, _ = page.evaluate(
        f"Array.from(document.getElementById('draw').getContext('2d').getImageData({x * 8 + 4}, {y * 8 + 4}, 1, 1).data)"
    )
    assert r > g > b + 60  # amber, not grey
    assert page.get_attribute("#mode-erase", "aria-pressed") == "true"  # the completion can be erased in turn
    _shot(page, "page-completion.png", tmp_path)


def test_erasing_part_of_a_generated_digit_fills_only_what_was_erased(page):
    page.click("#mode-erase")
    assert "generate a digit first" in page.inner_text("#message")
    _set(page, "#steps", "4")
    assert press(page, "#generate") == "done"
    digit = _state(page, "last")
    page.click("#mode-erase")
    assert _state(page, "ink") == digit
    _stroke(page, [(40, 110), (190, 110)])
    erased = _state(page, "erased")
    assert 20 < sum(erased) < 200
    _set(page, "#steps", "8")  # the model's default, but moved: completions ask for the model's steps only untouched
    page.click("#defaults")  # untouched again
    with page.expect_request("**/api/inpaint") as request:
        assert press(page, "#complete") == "done"
    assert request.value.post_data_json["steps"] == 20  # the model's inpainting steps for an erased mark
    result = _state(page, "last")
    assert all(result[i] == digit[i] for i in range(784) if not erased[i])


def test_an_error_is_told_as_one_and_the_server_keeps_serving(page):
    _set(page, "#steps", "4")
    assert press(page, "#generate") == "done" and page.inner_text("#progress").startswith("computed 4 steps")
    page.eval_on_selector("#steps", "(el) => { el.min = 0; el.value = 0; }")
    assert press(page, "#generate") == "error"
    assert "steps must be a whole number from 1 to 200" in page.inner_text("#message")
    assert page.inner_text("#progress").startswith("failed before the first step")  # not the last run's time
    _set(page, "#steps", "4")
    assert press(page, "#complete") == "error"
    assert "draw part of a digit" in page.inner_text("#message")
    assert press(page, "#generate") == "done" and page.inner_text("#message") == ""


def test_a_moved_steps_slider_sets_a_completions_steps(page):
    _set(page, "#steps", "5")
    _stroke(page, [(60, 80), (200, 80)])
    with page.expect_request("**/api/inpaint") as request:
        assert press(page, "#complete") == "done"
    assert request.value.post_data_json["steps"] == 5
