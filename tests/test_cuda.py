"""The CUDA path: bf16 autocast, channels_last, resume, sampling, and torchrun on a GPU machine.

Every test here needs a CUDA device and is skipped without one.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.config import apply_overrides
from mnist_diffusion.pipeline import load
from mnist_diffusion.precision import autocast
from mnist_diffusion.recipes import get_recipe
from mnist_diffusion.training import distributed as dist_utils
from mnist_diffusion.training.loop import make_trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

TINY = [
    "model.channels=[8,16,16]",
    "model.embed_dim=16",
    "model.groups=4",
    "train.batch_size=32",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "data.limit=256",
]


def tiny(*extra):
    return apply_overrides(get_recipe("ddpm-cond"), [*TINY, *extra])


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory):
    """Three bf16, channels_last training steps on the GPU."""
    run = tmp_path_factory.mktemp("cuda") / "run"
    cfg = tiny("train.device=cuda", "train.precision=auto", "train.channels_last=true", "train.max_steps=3")
    trainer = make_trainer(cfg, run)
    trainer.fit(progress_bar=False)
    return run, trainer


def test_training_runs_on_the_gpu_in_bf16_and_channels_last(cuda_run):
    run, trainer = cuda_run
    assert trainer.device.type == "cuda" and trainer.images.is_cuda  # the whole uint8 set lives on the GPU
    assert trainer.net.stem.weight.is_cuda
    assert trainer.net.stem.weight.is_contiguous(memory_format=torch.channels_last)
    x, labels = trainer.batch(torch.arange(4))
    assert x.is_contiguous(memory_format=torch.channels_last)
    if torch.cuda.is_bf16_supported():
        with autocast(trainer.device, "bf16"):
            out = trainer.net(x, torch.full((4,), 500.0, device=x.device), labels)
        assert out.dtype == torch.bfloat16
    state = ckpt.load_checkpoint(run / ckpt.STATE_FILE)
    assert state.info["step"] == 3
    assert all(
        np.isfinite(float(line.split('"loss": ')[1].split(",")[0]))
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in line
    )


def test_the_gpu_checkpoint_loads_on_the_cpu(cuda_run):
    run, trainer = cuda_run
    model = load(run, "cpu")  # plain NCHW tensors: no device or memory format baked in
    for key, value in model.net.state_dict().items():
        assert torch.equal(value, trainer.ema.state_dict()[key].cpu()), key


def test_resume_on_the_gpu_keeps_adam_step_counters_on_the_cpu(cuda_run, tmp_path):
    run, _ = cuda_run
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    trainer = make_trainer(
        apply_overrides(ckpt.load_checkpoint(copy / ckpt.STATE_FILE).config, ["train.max_steps=5"]), copy, resume=True
    )
    steps = [s["step"] for s in trainer.opt.state.values()]
    assert steps and all(not torch.is_tensor(s) or s.device.type == "cpu" for s in steps)
    trainer.fit(progress_bar=False)
    assert ckpt.load_checkpoint(copy / ckpt.STATE_FILE).info["step"] == 5


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp_2m", "heun"])
def test_sampling_on_the_gpu(cuda_run, sampler):
    run, _ = cuda_run
    out = load(run, "cuda").sample(8, sampler=sampler, steps=4, guidance=2.0, labels="0-9")
    images, labels = out.images, out.labels
    assert images.shape == (8, 28, 28) and images.dtype == np.uint8 and labels.tolist() == list(range(8))


def test_deterministic_sampling_agrees_between_gpu_and_cpu(cuda_run):
    run, _ = cuda_run
    x_T = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(6)
    outs = []
    for device in ("cpu", "cuda"):
        model = load(run, device)
        settings = model.settings(sampler="ddim", steps=5, guidance=2.0, spacing="trailing")
        x = model.sample_batch(x_T.to(device), labels.to(device), settings)
        outs.append(x.float().cpu())
    torch.testing.assert_close(outs[1], outs[0], atol=5e-2, rtol=0)  # TF32 convolutions differ slightly


@pytest.mark.slow
def test_compiled_training_on_the_gpu_saves_plain_weights(tmp_path):
    cfg = tiny("train.device=cuda", "train.compile=true", "train.max_steps=2")
    trainer = make_trainer(cfg, tmp_path / "run")
    trainer.fit(progress_bar=False)
    keys = ckpt.load_checkpoint(tmp_path / "run" / ckpt.STATE_FILE).tensors.keys()
    assert not any("_orig_mod" in k for k in keys)
    assert load(tmp_path / "run", "cpu").net is not None


def _torchrun(tmp_path, device, nproc=2):
    run, sums = tmp_path / "run", tmp_path / "sums"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--standalone",
        "-m",
        "mnist_diffusion",
        "train",
        "--recipe",
        "ddpm-cond",
        "--max-steps",
        "3",
        "--device",
        device,
        "--no-progress",
        "--no-samples",
        "--out",
        str(run),
    ] + [a for s in TINY for a in ("--set", s)]
    env = {**os.environ, dist_utils.CHECKSUM_ENV: str(sums), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    rank0, rank1 = ((sums / f"rank{i}.txt").read_text() for i in range(2))
    assert rank0 == rank1 and len(rank0.splitlines()) == 3
    return run


def test_torchrun_on_the_cpu_of_a_gpu_machine(tmp_path):
    """CPU tensors go over gloo even where the process group also has NCCL for CUDA ones."""
    _torchrun(tmp_path, "cpu")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_torchrun_on_two_gpus_with_nccl(tmp_path):
    run = _torchrun(tmp_path, "cuda")
    assert load(run, "cpu").net is not None


def test_schedule_lookups_of_gpu_timesteps_stay_on_the_gpu():
    from mnist_diffusion.diffusion.schedule import make_schedule

    schedule = make_schedule("linear", 1000)
    t = torch.tensor([0, 1, 500, 999])
    on_gpu = schedule.alpha_bar(t.cuda())
    assert on_gpu.is_cuda and on_gpu.dtype == torch.float64
    torch.testing.assert_close(on_gpu.cpu(), schedule.alpha_bar(t), rtol=0, atol=0)
    assert schedule.snr(t.cuda()).is_cuda
