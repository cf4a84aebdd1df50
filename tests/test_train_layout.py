"""`train.channels_last`: what `auto` picks on which device and numerics, what a run records, and that the
layout changes the speed of training but not what it learns."""

import json

import pytest
import torch

import mnist_diffusion
from mnist_diffusion.cli import main
from mnist_diffusion.config import ConfigError, apply_overrides, load_run_config, with_changes
from mnist_diffusion.recipes import get_recipe
from mnist_diffusion.training.layout import resolve_layout
from mnist_diffusion.training.loop import make_trainer

CPU = torch.device("cpu")


def _cfg(recipe="ddpm-cond", **train):
    return with_changes(get_recipe(recipe), train=train)


@pytest.mark.parametrize(
    "recipe, setting, precision, device, expected",
    [
        ("ddpm-cond", "auto", "fp32", "cpu", True),  # oneDNN takes NHWC maps as they are; NCHW ones are re-laid
        ("ldm-ae", "auto", "fp32", "cpu", True),
        ("ddpm-cond", "auto", "bf16", "cpu", False),  # bf16 GroupNorm is slower on NHWC maps
        ("seed", "auto", "bf16", "cpu", True),  # the BasicUNet has no GroupNorm
        ("ddpm-cond", "auto", "fp32", "cuda", False),  # not measured faster on a GPU
        ("seed", "auto", "bf16", "cuda", False),
        ("ddpm-cond", True, "bf16", "cpu", True),  # an explicit choice is kept, whatever the rest
        ("seed", False, "fp32", "cpu", False),
        ("ddpm-cond", True, "fp32", "cuda", True),
    ],
)
def test_auto_picks_channels_last_where_it_trains_faster(recipe, setting, precision, device, expected):
    choice = resolve_layout(_cfg(recipe, channels_last=setting, precision=precision), torch.device(device))
    assert choice.channels_last is expected
    assert choice.reason.startswith("auto" if setting == "auto" else "asked for")


def test_auto_follows_what_auto_precision_resolves_to(monkeypatch):
    from mnist_diffusion.precision import PrecisionChoice
    from mnist_diffusion.training import layout

    monkeypatch.setattr(layout, "resolve_precision", lambda *a: PrecisionChoice("bf16", "auto: AMX"))
    assert not resolve_layout(_cfg(), CPU).channels_last
    monkeypatch.setattr(layout, "resolve_precision", lambda *a: PrecisionChoice("fp32", "auto: AVX2"))
    assert resolve_layout(_cfg(), CPU).channels_last


@pytest.mark.parametrize("value", ["yes", 1, "nhwc"])
def test_a_bad_value_names_the_setting_and_the_choices(value):
    data = get_recipe("seed").to_dict()
    data["train"]["channels_last"] = value
    with pytest.raises(ConfigError, match=r"train\.channels_last .*choose one of: auto, true, false"):
        load_run_config(data)


@pytest.mark.parametrize("value", [True, False, "auto"])
def test_configs_written_with_a_bool_and_new_ones_load(value):
    data = get_recipe("seed").to_dict()
    data["train"]["channels_last"] = value
    assert load_run_config(data).train.channels_last == value
    assert get_recipe("seed").train.channels_last == "auto"


def test_a_bad_value_on_the_command_line_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["train", "--recipe", "seed", "--out", str(tmp_path / "r"), "--set", "train.channels_last=nhwc"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "train.channels_last" in err[0] and "auto, true, false" in err[0], err


def _tiny(tmp_path, name, channels_last):
    cfg = apply_overrides(
        get_recipe("ddpm-cond"),
        [
            "data.limit=64",
            "model.channels=[8,16,16]",
            "model.embed_dim=16",
            "model.groups=4",
            "train.batch_size=16",
            "train.max_steps=3",
            "train.threads=1",
            "train.precision=fp32",
            f"train.channels_last={json.dumps(channels_last)}",
        ],
    )
    return make_trainer(cfg, tmp_path / name)


def test_an_auto_cpu_run_trains_nhwc_and_records_why(tmp_path):
    trainer = _tiny(tmp_path, "auto", "auto")
    assert trainer.channels_last
    assert trainer.net.stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert trainer.batch(torch.arange(16))[0].is_contiguous(memory_format=torch.channels_last)
    start = json.loads((tmp_path / "auto" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["channels_last"] is True and start["layout_reason"].startswith("auto: fp32 on the CPU")
    nchw = _tiny(tmp_path, "nchw", False)
    assert not nchw.channels_last and nchw.net.stem.weight.is_contiguous()


def test_the_layout_changes_nothing_that_is_learned(tmp_path):
    """The same seed, data and noise in NCHW and NHWC: the losses of three steps and the weights after them agree
    to float rounding (the two layouts sum a convolution's products in different orders)."""
    runs = {name: _tiny(tmp_path, name, cl) for name, cl in (("nchw", False), ("nhwc", True))}
    losses = {name: [] for name in runs}
    for name, trainer in runs.items():
        order = torch.Generator().manual_seed(0)
        for _ in range(3):
            losses[name].append(trainer.train_step(*trainer.batch(torch.randperm(64, generator=order)[:16]))["loss"])
    assert torch.allclose(torch.stack(losses["nchw"]), torch.stack(losses["nhwc"]), rtol=1e-4, atol=1e-5)
    a, b = (runs[n].net.state_dict() for n in runs)
    assert all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)


def test_the_api_trains_in_the_layout_auto_picks(tmp_path):
    run = mnist_diffusion.train(
        "seed",
        out=tmp_path / "run",
        progress=False,
        samples=False,
        data={"limit": 64},
        train={"batch_size": 32, "max_steps": 1, "threads": 1},
    )
    start = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert start["channels_last"] is True and start["precision"] == "fp32"
