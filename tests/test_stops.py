"""SIGINT, SIGTERM and kill -9 at any point of a run, then --resume: the same weights, EMA, optimizer and random
state as a run that never stopped. One process per run directory. A failed start leaves nothing."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnist_diffusion import api
from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.cli import main
from mnist_diffusion.config import apply_overrides
from mnist_diffusion.recipes import get_recipe
from mnist_diffusion.training import run_lock
from mnist_diffusion.training.loop import RunInterrupted, TrainingError, make_trainer

TINY = [
    "data.limit=192",
    "train.batch_size=32",
    "train.checkpoint_every=4",
    "train.warmup_steps=3",
    "model.channels=[8,16,16]",
    "model.embed_dim=16",
    "model.groups=4",
    "train.log_every=2",
]


def state(run_dir: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(run_dir / ckpt.STATE_FILE).tensors


def assert_same_state(a: Path, b: Path) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, different  # model.*, ema.*, optim.*, rng.torch and rng.generator alike


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_after_the_step_and_resume_is_exact(tmp_path, signum):
    cfg = apply_overrides(get_recipe("ddpm-cond"), TINY + ["train.epochs=2"])
    straight = make_trainer(cfg, tmp_path / "straight")
    straight.fit(progress_bar=False)

    trainer = make_trainer(cfg, tmp_path / "stopped")
    objective = trainer.objective

    def signal_during_step_3(net, x, labels, g):
        out = objective(net, x, labels, g)
        if trainer.progress.step == 3:
            os.kill(os.getpid(), signum)  # lands mid-step, after this step's noise was drawn
        return out

    trainer.objective = signal_during_step_3
    with pytest.raises(RunInterrupted) as stop:
        trainer.fit(progress_bar=False)
    assert (stop.value.step, stop.value.signum) == (4, signum)  # the step under way was finished, then saved
    assert ckpt.load_checkpoint(tmp_path / "stopped" / ckpt.STATE_FILE).info["step"] == 4
    assert signal.getsignal(signum) is not None  # the previous handler is back
    resumed = make_trainer(cfg, tmp_path / "stopped", resume=True)
    resumed.fit(progress_bar=False)
    assert_same_state(tmp_path / "straight", tmp_path / "stopped")


def _train_cli(out: Path, *extra: str) -> subprocess.Popen:
    sets = [a for s in TINY + ["train.threads=1"] for a in ("--set", s)]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnist_diffusion",
            "train",
            "--recipe",
            "ddpm-cond",
            "--out",
            str(out),
            "--no-progress",
            "--no-samples",
            *sets,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None or time.time() > end:
            pytest.fail(f"{path} never appeared: {proc.communicate()[1]}")
        time.sleep(0.02)


def test_sigint_sigterm_and_kill_9_at_random_points_then_resume(tmp_path):
    """Each stop lands at a random moment after the first checkpoint; resuming ends where a straight run ends."""
    steps = ["--max-steps", "60"]
    straight = _train_cli(tmp_path / "straight", *steps)
    rng = random.Random(0)
    for signum, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)):
        run = tmp_path / signal.Signals(signum).name
        proc = _train_cli(run, *steps)
        _wait_for(run / ckpt.STATE_FILE, proc)
        time.sleep(rng.uniform(0, 0.4))
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:  # it finished first: nothing to resume
            continue
        assert proc.returncode == code, err
        if signum != signal.SIGKILL:
            assert "continue with: mnist-diffusion train --resume" in err, err
        resume = subprocess.run(
            [sys.executable, "-m", "mnist_diffusion", "train", "--resume", str(run), "--no-progress", "--no-samples"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert resume.returncode == 0, resume.stderr
        assert straight.wait(timeout=300) == 0, straight.stderr.read()
        assert_same_state(tmp_path / "straight", run)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        logged = [r["step"] for r in rows if "loss" in r]
        assert logged == sorted(set(logged)) == list(range(2, 61, 2))  # rewound: no row twice, none missing
        assert not (run / run_lock.LOCK_FILE).exists()


def test_a_second_process_on_the_same_run_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    first = _train_cli(run, "--max-steps", "100000")
    try:
        _wait_for(run / run_lock.LOCK_FILE, first)
        assert (
            main(
                ["train", "--resume", str(run)]
                if (run / ckpt.STATE_FILE).exists()
                else ["train", "--recipe", "seed", "--out", str(run)]
            )
            == 2
        )
        err = capsys.readouterr().err.strip()
        assert f"is in use by process {first.pid} on {socket.gethostname()}" in err and "\n" not in err, err
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode in (143, 0)
    assert not (run / run_lock.LOCK_FILE).exists()


def test_a_stale_lock_is_taken_over_and_a_live_one_names_the_command_that_clears_it(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = tmp_path / run_lock.LOCK_FILE
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with run_lock.locked(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert "no longer runs" in capsys.readouterr().err
    assert not lock.exists()

    lock.write_text(json.dumps({"pid": 1, "host": "another-host", "started": "2026-01-01 00:00:00"}))
    with pytest.raises(run_lock.RunLocked, match=f"process 1 on another-host.*rm {lock}"):
        run_lock.acquire(tmp_path)
    assert lock.exists()  # someone else's lock is never removed


def test_a_failed_start_leaves_nothing_behind(tmp_path, monkeypatch):
    def fail(self, progress_bar=True, stop_after=None):
        raise TrainingError("The loss became nan at step 0.")

    monkeypatch.setattr("mnist_diffusion.training.loop.Trainer.fit", fail)
    with pytest.raises(TrainingError):
        api.train("ddpm-cond", out=tmp_path / "new", overrides=TINY, progress=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    with pytest.raises(TrainingError):
        api.train("ddpm-cond", out=tmp_path / "kept", overrides=TINY, progress=False)
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["notes.txt"]
