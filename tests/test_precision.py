"""fp32 / bf16: what `auto` picks on which processor (mocked), the CPU probe (cached, leaving torch's global generator
alone), GroupNorm's bf16 path, bf16 samples against fp32 ones on the same seeds, training under bf16 autocast and
--precision on the command line."""

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mnist_diffusion import cpu, precision
from mnist_diffusion.cli import main
from mnist_diffusion.errors import UserError
from mnist_diffusion.models import kernels
from mnist_diffusion.models.kernels import GroupNorm, group_norm_fp32_stats
from mnist_diffusion.pipeline import load


@pytest.fixture
def fresh(monkeypatch, measured_cpu_auto):
    """The real `auto` (tests/conftest.py pins it to fp32 elsewhere) with the resolution cache emptied before
    and after, so each test's mocks decide."""
    monkeypatch.setattr(precision, "_cpu_auto", measured_cpu_auto)
    precision._resolve.cache_clear()
    yield monkeypatch
    precision._resolve.cache_clear()


# ---- choosing ---------------------------------------------------------------------------------------------
def test_an_avx2_cpu_has_no_bf16_units_and_auto_keeps_fp32(fresh):
    units, found = cpu.bf16_units(flags={"avx", "avx2", "fma"}, capability="AVX2")
    assert not units and "AVX2" in found
    fresh.setattr(cpu, "bf16_units", lambda: (units, found))
    fresh.setattr(cpu, "probe_bf16_speedup", lambda path: pytest.fail("no probe without bf16 units"))
    choice = precision.resolve_precision("auto", "cpu")
    assert choice.precision == "fp32" and choice.dtype == torch.float32
    assert "AVX2" in choice.reason and "slower" in choice.reason
    assert precision.resolve_precision("auto", "cpu", "train").precision == "fp32"
    assert isinstance(precision.autocast(torch.device("cpu"), "auto"), type(precision.contextlib.nullcontext()))


@pytest.mark.parametrize(
    "flags, capability",
    [({"amx_bf16", "amx_tile", "avx512f"}, "AVX512"), ({"avx512_bf16", "avx512f"}, "AVX512"), (set(), "AMX")],
)
def test_amx_or_avx512_bf16_units_are_found(flags, capability):
    units, found = cpu.bf16_units(flags=flags, capability=capability)
    assert units and ("AMX" in found or "AVX-512-BF16" in found)


def test_with_units_auto_picks_bf16_when_the_measured_conv_is_fast(fresh):
    fresh.setattr(cpu, "bf16_units", lambda: (True, "AMX-BF16 (torch CPU capability AVX512)"))
    fresh.setattr(cpu, "probe_bf16_speedup", lambda path: (106.0, 1213.0))
    choice = precision.resolve_precision("auto", "cpu")
    assert choice.precision == "bf16" and choice.dtype == torch.bfloat16
    assert "AMX" in choice.reason and "1213" in choice.reason
    with precision.autocast(torch.device("cpu"), "auto"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16  # fp32 in, bf16 products


def test_with_units_but_a_slow_bf16_conv_auto_keeps_fp32(fresh):
    fresh.setattr(cpu, "bf16_units", lambda: (True, "AVX-512-BF16 (torch CPU capability AVX512)"))
    fresh.setattr(cpu, "probe_bf16_speedup", lambda path: (100.0, 140.0))  # 1.4x: under the 1.5x floor
    choice = precision.resolve_precision("auto", "cpu")
    assert choice.precision == "fp32" and "under 1.5x" in choice.reason


def test_cuda_trains_under_bf16_autocast_and_samples_in_fp32(fresh):
    fresh.setattr(torch.cuda, "is_available", lambda: True)
    fresh.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.resolve_precision("auto", "cuda", "train").precision == "bf16"
    assert precision.resolve_precision("auto", "cuda:0", "sample").precision == "fp32"
    assert precision.resolve_precision("bf16", "cuda", "sample").precision == "bf16"
    fresh.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    precision._resolve.cache_clear()
    assert precision.resolve_precision("auto", "cuda", "train").precision == "fp32"
    with pytest.raises(UserError, match="does not support bf16"):
        precision.resolve_precision("bf16", "cuda", "train")


def test_explicit_choices_and_bad_values(fresh):
    assert precision.resolve_precision("fp32", "cpu").reason == "asked for"
    assert precision.resolve_precision("bf16", "cpu").precision == "bf16"  # honoured, however slow here
    assert precision.resolve_precision("auto", "mps").precision == "fp32"
    with pytest.raises(UserError, match="not on mps"):
        precision.resolve_precision("bf16", "mps")
    with pytest.raises(UserError, match="choose auto, fp32 or bf16"):
        precision.resolve_precision("fp16", "cpu")


def test_the_probe_is_measured_once_and_cached(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        cpu, "conv_gflops", lambda dtype, **k: calls.append(dtype) or (1200.0 if dtype == torch.bfloat16 else 100.0)
    )
    cache = tmp_path / "probe.json"
    assert cpu.probe_bf16_speedup(cache) == (100.0, 1200.0)
    assert cpu.probe_bf16_speedup(cache) == (100.0, 1200.0)
    assert len(calls) == 2  # fp32 and bf16, the first time only
    assert next(iter(json.loads(cache.read_text()).values()))["bf16"] == 1200.0
    cache.write_text("not json")
    assert cpu.probe_bf16_speedup(cache) == (100.0, 1200.0) and len(calls) == 4


def test_the_real_probes_measure_something():
    assert cpu.matmul_gflops(torch.float32, n=64, repeats=2, warmup=1) > 0
    assert cpu.conv_gflops(torch.float32, (2, 8, 8), repeats=2, warmup=1) > 0


def test_a_fresh_probe_leaves_the_global_random_generator_as_it_was(tmp_path, monkeypatch):
    """The probe runs on a machine's first run, after the run has seeded torch: it must draw nothing from the
    global generator (which dropout uses), or that first run differs from every later one."""
    real = cpu.conv_gflops
    monkeypatch.setattr(cpu, "conv_gflops", lambda dtype: real(dtype, (2, 8, 8), repeats=1, warmup=0))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    fp32, bf16 = cpu.probe_bf16_speedup(tmp_path / "probe.json")  # no cache yet: measured now
    assert fp32 > 0 and bf16 > 0 and (tmp_path / "probe.json").exists()
    assert torch.equal(torch.get_rng_state(), before)


def test_a_cache_from_another_probe_version_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu, "conv_gflops", lambda dtype, **k: 700.0 if dtype == torch.bfloat16 else 200.0)
    cache = tmp_path / "probe.json"
    stale = cpu._probe_key().replace(f"probe v{cpu.PROBE_VERSION}", "probe v1")
    cache.write_text(json.dumps({stale: {"fp32": 200.0, "bf16": 380.0}}))
    assert cpu.probe_bf16_speedup(cache) == (200.0, 700.0)


# ---- GroupNorm --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels_last", [False, True])
def test_group_norm_with_fp32_stats_equals_torch_in_fp32(channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, 14, 14, generator=g) * 3 + 1.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(64, generator=g), torch.randn(64, generator=g)
    got = group_norm_fp32_stats(x, 8, weight, bias)
    torch.testing.assert_close(got, F.group_norm(x, 8, weight, bias), atol=1e-5, rtol=1e-5)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(group_norm_fp32_stats(x, 4), F.group_norm(x, 4), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("side", [28, 7])  # the fp32-stats path and the upcast one (FP32_STATS_MIN_POSITIONS)
def test_group_norm_module_is_nn_group_norm_and_close_in_bf16(side):
    torch.manual_seed(0)
    ours, theirs = GroupNorm(8, 64), nn.GroupNorm(8, 64)
    with torch.no_grad():
        theirs.weight.normal_(), theirs.bias.normal_()
    assert ours.load_state_dict(theirs.state_dict()) is not None and list(ours.state_dict()) == ["weight", "bias"]
    x = torch.randn(2, 64, side, side) * 2 - 0.5
    assert torch.equal(ours(x), theirs(x))  # fp32: torch's own kernel, to the bit
    reference = theirs(x)
    ours_bf16 = GroupNorm(8, 64).to(torch.bfloat16)
    ours_bf16.load_state_dict(theirs.state_dict())
    y = ours_bf16(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    torch_bf16 = F.group_norm(x.to(torch.bfloat16), 8, ours_bf16.weight, ours_bf16.bias)
    ours_error = (y.float() - reference).abs().max()
    assert ours_error < 0.01 * reference.abs().max()  # bf16 keeps 8 bits of mantissa
    # On average no worse than torch's own bf16 kernel (both round the output to bf16; the margin is for the seed).
    assert (y.float() - reference).abs().mean() <= 1.5 * (torch_bf16.float() - reference).abs().mean()


@pytest.mark.parametrize("side", [28, 7])
@pytest.mark.parametrize("chunk_rows", [1, 2, 5])
def test_group_norm_in_batch_chunks_gives_the_whole_batch_result(monkeypatch, side, chunk_rows):
    """Without autograd a bf16 channels_last map is normalised a cache-sized chunk of the batch at a time: the same
    values, to the bit, as the whole batch at once (what autograd and torch.compile get)."""
    torch.manual_seed(0)
    norm = GroupNorm(8, 32).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    x = (torch.randn(5, 32, side, side) * 3 + 1).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    whole = norm(x).detach()  # autograd: the one-pass form
    monkeypatch.setattr(kernels, "CHUNK_BYTES", chunk_rows * 4 * x[0].numel())
    with torch.no_grad():
        chunked = norm(x)
    assert chunked.is_contiguous(memory_format=torch.channels_last) and chunked.dtype == torch.bfloat16
    assert torch.equal(chunked, whole)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_group_norm_of_a_channels_last_map_without_gradient_trains_its_affine(dtype):
    """torch 2.13's own channels_last GroupNorm backward crashes the process when only the weight and bias want
    gradients (a norm reading the network's input); the package's GroupNorm steers that case to NCHW."""
    norm = GroupNorm(4, 8).to(dtype)
    x = torch.randn(3, 8, 7, 7).to(dtype).contiguous(memory_format=torch.channels_last)
    norm(x).float().square().sum().backward()
    assert torch.isfinite(norm.weight.grad).all() and torch.isfinite(norm.bias.grad).all()


@pytest.mark.parametrize("side", [28, 7])
def test_group_norm_bf16_paths_train(side):
    norm = GroupNorm(4, 16)
    x = torch.randn(2, 16, side, side).to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_()
    norm(x).float().square().sum().backward()
    assert norm.weight.grad is not None and torch.isfinite(norm.weight.grad).all() and x.grad is not None


# ---- sampling -----------------------------------------------------------------------------------------------
def test_bf16_and_fp32_samples_of_a_tiny_model_agree_on_the_same_seeds(tiny_guided_pipeline):
    fp32, bf16 = (
        tiny_guided_pipeline(p, channels=(8, 16, 16), mid_attention=True, channels_last=True) for p in ("fp32", "bf16")
    )
    assert bf16.net.stem.weight.dtype == torch.bfloat16 and fp32.net.stem.weight.dtype == torch.float32
    a, b = (p.sample(6, steps=4, seed=2, labels="0-5") for p in (fp32, bf16))
    assert b.samples.dtype == torch.float32 and b.settings["precision"] == "bf16"
    # An untrained net's samples are far outside [-1, 1]; what matters is the relative difference.
    assert (a.samples - b.samples).abs().max() < 0.01 * a.samples.abs().max()
    x0, eps = bf16.denoiser()(torch.randn(2, 1, 28, 28), 500)  # sampler-side tensors stay fp32
    assert x0.dtype == eps.dtype == torch.float32


def test_a_bf16_pipeline_saves_its_fp32_weights(tmp_path, tiny_guided_pipeline):
    fp32, bf16 = (
        tiny_guided_pipeline(p, channels=(8, 16, 16), mid_attention=True, channels_last=True) for p in ("fp32", "bf16")
    )
    again = load(bf16.save(tmp_path / "copy"), precision="fp32")
    for key, value in fp32.net.state_dict().items():
        assert torch.equal(value, again.net.state_dict()[key]), key


@pytest.mark.parametrize("name", ["ddpm-cond", "ldm"])
def test_packaged_models_in_bf16_draw_the_fp32_digits(name):
    a = load(name, precision="fp32").sample(4, steps=8, seed=0, labels="1,4,7,9")
    b = load(name, precision="bf16").sample(4, steps=8, seed=0, labels="1,4,7,9")
    differ = np.abs(a.images.astype(int) - b.images.astype(int))
    assert (differ > 64).mean() < 0.02, (differ > 64).mean()  # the same strokes: few pixels move by a quarter
    assert (a.samples - b.samples).abs().mean() < 0.03


def test_a_bf16_latent_pipeline_decodes_in_bf16_and_returns_fp32():
    fp32, bf16 = load("ldm", precision="fp32"), load("ldm", precision="bf16")
    assert fp32.autoencoder.dtype == torch.float32 and bf16.autoencoder.dtype == torch.bfloat16
    z = torch.randn(8, *bf16.sample_shape, generator=torch.Generator().manual_seed(0))
    a, b = fp32.decode(z), bf16.decode(z)
    assert b.dtype == torch.float32 and b.shape == (8, 1, 28, 28)
    assert 0 < (a - b).abs().mean() < 0.01 and (a - b).abs().max() < 0.1  # bf16's rounding, the same digits
    # encoding (latent inpainting) takes and gives fp32 the same way
    assert bf16.autoencoder.encode(a).dtype == torch.float32


# ---- training -----------------------------------------------------------------------------------------------
def test_training_under_bf16_autocast_keeps_fp32_weights_and_says_why(tmp_path):
    import mnist_diffusion

    run = mnist_diffusion.train(
        "ddpm-cond",
        out=tmp_path / "run",
        progress=False,
        samples=False,
        data={"limit": 64},
        model={"channels": [8, 16, 16], "embed_dim": 16, "groups": 4},
        train={"batch_size": 32, "max_steps": 2, "threads": 1, "precision": "bf16"},
    )
    start = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert start["precision"] == "bf16" and start["precision_reason"].startswith("asked for")
    # what else sets its speed: the threads it ran on and how OpenMP's idle threads waited
    assert start["threads"] == 1 and start["openmp"]["OMP_WAIT_POLICY"] == os.environ["OMP_WAIT_POLICY"]
    state = load(run, precision="fp32")
    assert all(v.dtype == torch.float32 for v in state.net.state_dict().values() if v.is_floating_point())


# ---- the command line and old configs ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [
        "sample --precision fp16",
        "evaluate ddpm-cond --precision half",
        "serve --precision 16",
        "train --precision bfloat16",
    ],
)
def test_bad_precision_is_one_line_and_exit_2(command, capsys):
    assert main(command.split()) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--precision" in err[0] and "bf16" in err[0], err


def test_precision_applies_to_models_only_in_evaluate(tmp_path, capsys):
    npz = tmp_path / "s.npz"
    np.savez(npz, images=np.zeros((4, 28, 28), np.uint8))
    assert main(["evaluate", str(npz), "--precision", "fp32"]) == 2
    assert "--precision applies only" in capsys.readouterr().err


def test_the_packaged_files_written_with_bf16_load():
    assert load("ddpm-cond", precision="fp32").config.train.precision == "auto"
