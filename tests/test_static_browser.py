"""The static edition of the page (`mnist-diffusion export-web`) in a real browser: built for the packaged few-step
model `ddpm-cond-fast` and a tiny untrained MeanFlow model, served by `python -m http.server` on 127.0.0.1, driven
with Playwright in Debian's Chromium. Its digits are Python's for the same seed (the page draws torch's starting
noise for a seed itself, samplers.js), to `PIXEL_TOLERANCE` grey levels; a drawn stroke is completed, kept exactly,
and the completion is Python's too.

Skipped, with the reason, without node/npm (and no cached onnxruntime-web), Playwright, Chromium or the export
extra. onnxruntime-web is cached in build/npm-cache ($MNIST_DIFFUSION_NPM_CACHE), so it is fetched once. With
MNIST_DIFFUSION_SCREENSHOTS=docs/images the guide's screenshots (static-*.png) are written there.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")
pytest.importorskip("onnxscript", reason="the export extra (onnxscript) is not installed")
pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
from chromium import CHROMIUM, HAVE_CHROMIUM, VIEW, press  # noqa: E402

if not HAVE_CHROMIUM:
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set $CHROMIUM)", allow_module_level=True)

from mnist_diffusion.config import load_run_config  # noqa: E402
from mnist_diffusion.export import web  # noqa: E402
from mnist_diffusion.models import build_model  # noqa: E402
from mnist_diffusion.pipeline import Pipeline, load  # noqa: E402
from mnist_diffusion.recipes import get_recipe  # noqa: E402
from mnist_diffusion.serve.app import digit_for_seed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MNIST_DIFFUSION_NPM_CACHE") or ROOT / "build" / "npm-cache")
if shutil.which("npm") is None and not (CACHE / f"{web.ORT_PACKAGE}-{web.ORT_VERSION}").is_dir():
    pytest.skip("npm is not installed and onnxruntime-web is not cached (apt-get install npm)", allow_module_level=True)

SHOTS = os.environ.get("MNIST_DIFFUSION_SCREENSHOTS")
MODEL = "ddpm-cond-fast"
MEANFLOW = "meanflow-tiny"
# Grey levels (of 255) a browser's digit may differ from Python's: ONNX Runtime and PyTorch sum the same fp32
# convolutions in other orders, which can move a pixel across a rounding boundary; anything wrong moves hundreds.
PIXEL_TOLERANCE = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pipe():
    return load(MODEL, precision="fp32")


@pytest.fixture(scope="module")
def meanflow_pipe():
    """A tiny untrained MeanFlow model (seeded). Its output layer and the interval embedding's last layer start at
    zero; both get weights, so that the digit depends on every input the page feeds, the interval included."""
    cfg = get_recipe("meanflow").to_dict()
    tiny = {"channels": [8, 16], "embed_dim": 16, "groups": 4, "mid_attention": False}
    cfg = load_run_config({**cfg, "model": {**cfg["model"], **tiny}})
    torch.manual_seed(0)
    net = build_model(cfg.model)
    with torch.no_grad():
        net.out_conv.weight.normal_(0, 0.05)
        net.interval_mlp[2].weight.normal_(0, 2.0)
    return Pipeline(cfg, net.eval(), "cpu", precision="fp32")


@pytest.fixture(scope="module")
def url(tmp_path_factory, pipe, meanflow_pipe):
    site = tmp_path_factory.mktemp("static") / "site"
    web.build_site([(MODEL, pipe), (MEANFLOW, meanflow_pipe)], site, CACHE)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(site)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 20
    while True:
        try:
            urllib.request.urlopen(base, timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                server.kill()
                raise
            time.sleep(0.1)
    yield base
    server.terminate()
    server.wait(10)


@pytest.fixture
def page(browser, url):
    page = browser.new_page(viewport=VIEW)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("body[data-state=ready]", timeout=60_000)
    yield page
    page.close()
    assert not errors, errors


def _state(page, key: str):
    return page.evaluate(f"Array.from(window.mnistDiffusion.{key} || [])")


def _shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name))


def _differs(browser_pixels, python_pixels) -> int:
    return int(np.abs(np.asarray(browser_pixels, int).reshape(-1) - np.asarray(python_pixels, int).reshape(-1)).max())


def test_the_browsers_digits_are_pythons_for_the_same_seed(page, pipe):
    assert page.input_value("#model") == MODEL and page.input_value("#steps") == "2"
    assert page.input_value("#guidance") == "1.5" and page.input_value("#sampler") == "ddim"
    for seed in (0, 1, 2):  # any digit: the seed picks it, as on the served page
        page.fill("#seed", str(seed))
        assert press(page, "#generate") == "done", page.inner_text("#message")
        digit = page.evaluate("window.mnistDiffusion.chosen")
        assert digit == digit_for_seed(seed, 10)
        expected = pipe.sample(1, labels=[digit], seed=seed, guidance=1.5).images[0]
        assert _differs(_state(page, "last"), expected) <= PIXEL_TOLERANCE
        assert len(_state(page, "frames")) == 3  # two steps and the digit, to step through
    page.select_option("#digit", "7")
    page.fill("#seed", "12345")
    assert press(page, "#generate") == "done"
    assert _differs(_state(page, "last"), pipe.sample(1, labels=[7], seed=12345, guidance=1.5).images[0]) <= (
        PIXEL_TOLERANCE
    )
    # a batch of 64, as a grid draws it: every digit Python's
    got = page.evaluate(
        "(async () => { const r = await window.mnistDiffusionEngine.digits("
        f"(await window.mnistDiffusionEngine.models())[0], {{model: '{MODEL}', digit: null, guidance: 1.5, seed: 3, "
        "n: 64}); return r.images.map((a) => Array.from(a)); })()"
    )
    expected = pipe.sample(64, labels="0-9", seed=3, guidance=1.5).images
    assert _differs(got, expected) <= PIXEL_TOLERANCE
    _set_and_grid(page)
    _shot(page, "static-generate.png")


def _set_and_grid(page) -> None:
    page.select_option("#digit", "")  # any digit: the grid's columns are 0-9
    page.fill("#grid-n", "40")
    assert press(page, "#grid") == "done"
    assert page.evaluate("document.getElementById('grid-image').naturalWidth") == 560  # ten columns
    assert page.get_attribute("#grid-download", "href").startswith("blob:")


def _draw_a_seven(page) -> np.ndarray:
    box = page.locator("#draw").bounding_box()
    points = [(70, 50), (160, 50), (110, 190)]  # a 7's bar and stem
    page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
    page.mouse.up()
    return np.array(_state(page, "ink"), np.uint8)


def _set_steps(page, steps: int) -> None:
    page.eval_on_selector("#steps", f"(el) => {{ el.value = {steps}; el.dispatchEvent(new Event('input')); }}")


def test_a_drawn_stroke_is_completed_in_the_browser_as_python_completes_it(page, pipe):
    ink = _draw_a_seven(page)
    page.select_option("#complete-digit", "7")
    assert press(page, "#complete") == "done", page.inner_text("#message")
    result = np.array(_state(page, "last"))
    known = ink > 0
    assert known.sum() > 30 and (result[known] == ink[known]).all()  # the drawn pixels come back exactly
    assert (result[~known] > 100).sum() > 10  # and the model drew the rest of a digit
    expected = pipe.inpaint(ink.reshape(28, 28), known.reshape(28, 28), labels=[7], guidance=1.5, seed=0).images[0]
    assert _differs(result, expected) <= PIXEL_TOLERANCE
    assert sum(_state(page, "filled")) == 784 - known.sum()  # tinted amber where the model filled
    _shot(page, "static-completion.png")


def test_bad_values_are_one_sentence_on_the_page(page):
    page.eval_on_selector("#steps", "(el) => { el.min = 0; el.value = 0; el.dispatchEvent(new Event('input')); }")
    assert press(page, "#generate") == "error"
    assert "steps must be a whole number from 1 to 200" in page.inner_text("#message")
    page.click("#defaults")
    assert press(page, "#complete") == "error"
    assert "draw part of a digit" in page.inner_text("#message")


def test_a_meanflow_model_draws_pythons_digits_one_pass_a_step_and_completes_a_stroke(page, meanflow_pipe):
    page.select_option("#model", MEANFLOW)
    assert page.input_value("#sampler") == "meanflow" and page.input_value("#steps") == "1"
    assert page.is_disabled("#guidance")  # folded in by training: the page sends none
    page.select_option("#digit", "4")
    for steps, seed in ((1, 0), (2, 5)):
        _set_steps(page, steps)
        page.fill("#seed", str(seed))
        passes = page.evaluate("window.mnistDiffusionEngine.stats.passes")
        assert press(page, "#generate") == "done", page.inner_text("#message")
        assert page.evaluate("window.mnistDiffusionEngine.stats.passes") - passes == steps
        expected = meanflow_pipe.sample(1, labels=[4], seed=seed, steps=steps).images[0]
        assert _differs(_state(page, "last"), expected) <= PIXEL_TOLERANCE
        assert len(_state(page, "frames")) == steps + 1
    ink = _draw_a_seven(page)
    known = ink > 0
    page.select_option("#complete-digit", "7")
    _set_steps(page, 3)
    page.fill("#seed", "0")
    assert press(page, "#complete") == "done", page.inner_text("#message")
    result = np.array(_state(page, "last"))
    assert known.sum() > 30 and (result[known] == ink[known]).all()
    expected = meanflow_pipe.inpaint(ink.reshape(28, 28), known.reshape(28, 28), labels=[7], steps=3, seed=0)
    assert _differs(result, expected.images[0]) <= PIXEL_TOLERANCE
