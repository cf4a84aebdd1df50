"""Shared test setup: `--precision auto` resolves to fp32 in every test, whatever the processor.

On a CPU with AMX `auto` samples and trains in bf16; tests that compare numbers (layouts, batch sizes, resume to
the bit) must mean the same thing on every machine, so they run fp32. tests/test_precision.py tests the real
choice, through the `measured_cpu_auto` fixture below, with the processor mocked.
"""

import pytest

from mnist_diffusion import precision


@pytest.fixture(scope="session", autouse=True)
def measured_cpu_auto():
    """Pins `auto` to fp32 on the CPU for the session; yields the real (measuring) choice for tests of it."""
    real = precision._cpu_auto
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "_cpu_auto",
                      lambda: precision.PrecisionChoice("fp32", "auto: fp32 in the tests, on any processor"))
        precision._resolve.cache_clear()
        yield real
    precision._resolve.cache_clear()
