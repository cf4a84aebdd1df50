"""Resume equals no interruption (signals: tests/test_stops.py); a NaN loss stops with the last good checkpoint kept."""

import pytest
import torch

from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.config import apply_overrides
from mnist_diffusion.recipes import get_recipe
from mnist_diffusion.training.loop import TrainingError, make_trainer

TINY = [
    "data.limit=192",
    "train.batch_size=32",
    "train.epochs=2",
    "train.checkpoint_every=4",
    "train.warmup_steps=3",
    "model.channels=[8,16,16]",
    "model.embed_dim=16",
    "model.groups=4",
    "train.log_every=2",
]


def tiny(recipe="ddpm-cond"):
    return apply_overrides(get_recipe(recipe), TINY)


def weights(run_dir):
    return ckpt.load_checkpoint(run_dir / ckpt.STATE_FILE).tensors


@pytest.mark.parametrize("recipe", ["ddpm-cond", "seed"])
def test_interrupted_run_ends_with_the_same_weights(tmp_path, recipe):
    cfg = tiny(recipe)
    straight = make_trainer(cfg, tmp_path / "a")
    straight.fit(progress_bar=False)
    assert straight.progress.step == 12  # 6 batches per epoch, 2 epochs

    first = make_trainer(cfg, tmp_path / "b")
    first.fit(progress_bar=False, stop_after=5)  # mid-epoch, between checkpoints
    assert first.progress.step == 5
    second = make_trainer(cfg, tmp_path / "b", resume=True)
    assert second.progress.step == 5
    second.fit(progress_bar=False)

    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:  # weights, EMA, optimizer and random state
        assert torch.equal(a[k], b[k]), k


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    trainer = make_trainer(tiny(), tmp_path)
    objective = trainer.objective

    def nan_after_step_5(net, x, labels, g):
        out = objective(net, x, labels, g)
        if trainer.progress.step >= 5:
            out["loss"] = out["loss"] * float("nan")
        return out

    trainer.objective = nan_after_step_5
    with pytest.raises(TrainingError, match="loss became nan at step 5.*step 4"):
        trainer.fit(progress_bar=False)
    saved = ckpt.load_checkpoint(tmp_path / ckpt.STATE_FILE)
    assert saved.info["step"] == 4
    assert all(torch.isfinite(v).all() for k, v in saved.tensors.items() if v.dtype.is_floating_point)


def test_resuming_a_finished_run_says_so_and_trains_no_further(tmp_path, capsys):
    from mnist_diffusion.api import train

    run = train(tiny("seed"), out=tmp_path / "run", progress=False, samples=False)
    before = (run / ckpt.STATE_FILE).read_bytes(), (run / ckpt.MODEL_FILE).read_bytes()
    assert train(resume=run, progress=False, samples=False) == run
    assert "has already finished (step 12 of 12)" in capsys.readouterr().err
    assert ((run / ckpt.STATE_FILE).read_bytes(), (run / ckpt.MODEL_FILE).read_bytes()) == before


def test_a_save_that_fails_is_one_sentence_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from mnist_diffusion.files import WriteFailed

    trainer = make_trainer(tiny(), tmp_path)
    trainer.fit(progress_bar=False, stop_after=4)
    before = {name: (tmp_path / name).read_bytes() for name in (ckpt.STATE_FILE, ckpt.MODEL_FILE)}

    def disk_full(tensors, path, metadata=None):  # how safetensors reports a full disk, after half a file
        with open(path, "wb") as f:
            f.write(b"half")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(ckpt, "save_file", disk_full)
    with pytest.raises(WriteFailed, match="No space left on device.*the previous file is kept") as e:
        trainer.fit(progress_bar=False)
    assert "\n" not in str(e.value)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert not list(tmp_path.glob(".*.tmp"))
