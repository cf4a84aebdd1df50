"""Shared test setup: `--precision auto` resolves to fp32 in every test, whatever the processor; tiny untrained
guided pipelines.

On a CPU with AMX `auto` samples and trains in bf16; tests that compare numbers (layouts, batch sizes, resume to
the bit) must mean the same thing on every machine, so they run fp32. tests/test_precision.py tests the real
choice, through the `measured_cpu_auto` fixture below, with the processor mocked.
"""

import pytest
import torch

from mnist_diffusion import precision
from mnist_diffusion.config import load_run_config
from mnist_diffusion.models import build_model
from mnist_diffusion.pipeline import Pipeline
from mnist_diffusion.recipes import get_recipe


@pytest.fixture(scope="session", autouse=True)
def measured_cpu_auto():
    """Pins `auto` to fp32 on the CPU for the session; yields the real (measuring) choice for tests of it."""
    real = precision._cpu_auto
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            precision,
            "_cpu_auto",
            lambda: precision.PrecisionChoice("fp32", "auto: fp32 in the tests, on any processor"),
        )
        precision._resolve.cache_clear()
        yield real
    precision._resolve.cache_clear()


@pytest.fixture
def tiny_guided_pipeline():
    """Makes tiny untrained `ddpm-cond`-shaped pipelines (seeded, the same weights every call):
    make(precision="fp32", compile=False, channels=(8, 16), mid_attention=False, channels_last=False)."""

    def make(
        precision: str = "fp32",
        compile: bool = False,
        channels=(8, 16),
        mid_attention: bool = False,
        channels_last: bool = False,
    ) -> Pipeline:
        cfg = get_recipe("ddpm-cond").to_dict()
        cfg = load_run_config(
            {
                **cfg,
                "model": {
                    **cfg["model"],
                    "channels": list(channels),
                    "embed_dim": 16,
                    "groups": 4,
                    "mid_attention": mid_attention,
                },
            }
        )
        torch.manual_seed(0)
        net = build_model(cfg.model)
        with torch.no_grad():
            net.out_conv.weight.normal_(0, 0.05)  # a fresh net predicts 0 everywhere; give it something to say
        net.eval()
        if channels_last:
            net.to(memory_format=torch.channels_last)
        return Pipeline(cfg, net, "cpu", precision=precision, compile=compile)

    return make


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium for a module of browser tests (tests/chromium.py says how it is launched)."""
    from playwright.sync_api import sync_playwright

    from chromium import ARGS, CHROMIUM

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield launched
        launched.close()
