"""A seeded run is the same run on a fresh machine as on one that has run before: what the package measures or
decodes on a first run (the CPU's bf16 speed probe, the decoded-data cache) draws nothing from torch's global
generator, which dropout also draws its masks from."""

import torch

from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion import cpu, precision
from mnist_diffusion.config import apply_overrides
from mnist_diffusion.recipes import get_recipe
from mnist_diffusion.training.loop import make_trainer

TINY = [
    "data.limit=96",
    "train.batch_size=32",
    "train.max_steps=4",
    "train.checkpoint_every=2",
    "train.threads=1",
    "train.device=cpu",
    "model.channels=[8,16,16]",
    "model.embed_dim=16",
    "model.groups=4",
    "model.dropout=0.1",  # dropout draws its masks from torch's global generator
]


def _train(run_dir, cache, monkeypatch, extra=()):
    """A tiny run with dropout, as a fresh process would make it with `cache` as its cache directory."""
    monkeypatch.setenv("MNIST_DIFFUSION_CACHE", str(cache))
    precision._resolve.cache_clear()  # a new process resolves `auto` anew (and reads or measures the probe)
    make_trainer(apply_overrides(get_recipe("ddpm-cond"), [*TINY, *extra]), run_dir).fit(progress_bar=False)
    return ckpt.load_checkpoint(run_dir / ckpt.STATE_FILE).tensors


def test_two_trainings_from_empty_caches_with_dropout_are_identical_in_every_tensor(
    tmp_path, monkeypatch, measured_cpu_auto
):
    probed = []
    real = cpu.conv_gflops

    def probe(dtype, **_):  # the real probe convolution, smaller; the speeds it reports fixed (fp32 wins)
        real(dtype, (2, 8, 8), repeats=1, warmup=0)
        probed.append(dtype)
        return 100.0

    monkeypatch.setattr(precision, "_cpu_auto", measured_cpu_auto)  # the measuring choice, not the tests' pin
    monkeypatch.setattr(cpu, "bf16_units", lambda: (True, "AMX (mocked)"))
    monkeypatch.setattr(cpu, "conv_gflops", probe)

    first = _train(tmp_path / "first", tmp_path / "cache-1", monkeypatch)  # measures the probe, decodes MNIST
    assert probed == [torch.float32, torch.bfloat16]
    assert (tmp_path / "cache-1" / cpu.PROBE_FILE).is_file()
    assert any(p.name.endswith("-train-images.npy") for p in (tmp_path / "cache-1").iterdir())

    again = _train(tmp_path / "again", tmp_path / "cache-1", monkeypatch)  # both cached now: nothing measured
    assert len(probed) == 2
    fresh = _train(tmp_path / "fresh", tmp_path / "cache-2", monkeypatch, ["train.precision=fp32"])  # no probe
    assert len(probed) == 2

    assert any(k.startswith("rng.") for k in first)
    for other in (again, fresh):
        assert other.keys() == first.keys()
        for key in first:  # weights, EMA, optimizer moments and rng.torch / rng.generator, bit for bit
            assert torch.equal(first[key], other[key]), key


def test_the_in_training_check_leaves_the_global_generator_as_it_was(tmp_path):
    """The in-run KID check builds networks (their initial weights come from the global generator); a run with
    the check draws the same dropout masks as one without it."""
    cfg = apply_overrides(get_recipe("ddpm-cond"), [*TINY, "train.eval_samples=4"])
    trainer = make_trainer(cfg, tmp_path / "run")
    torch.manual_seed(7)
    before = torch.get_rng_state()
    trainer.evaluate_hook(type("Logger", (), {"write": lambda self, row: None})())
    assert torch.equal(torch.get_rng_state(), before)
