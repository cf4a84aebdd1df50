"""Multi-process training under torchrun (gloo on CPU) and the pieces that keep the ranks in step.

Every torchrun here writes each rank's stdout and stderr to files of its own (`--log-dir`, `--tee`), and a
failed assertion shows every rank's stderr (`rank_logs`): one rank's error is usually the cause and the
others' "Connection closed by peer" only its echo. The runs pin train.precision, so what they test does not
hang on the speed probe `auto` measures on a machine's first run (`test_ranks_in_different_layouts_...`).
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.cli import main
from mnist_diffusion.config import apply_overrides
from mnist_diffusion.models import build_model
from mnist_diffusion.pipeline import load
from mnist_diffusion.recipes import get_recipe
from mnist_diffusion.training import distributed as dist_utils
from mnist_diffusion.training import stops
from mnist_diffusion.training.loop import RunInterrupted, make_trainer
from mnist_diffusion.training.objectives import make_objective

# A class-conditional U-Net small enough to train a few steps in seconds: it exercises EMA, label dropout,
# the DDPM objective and the optimizer state, all of which a resume must carry over.
TINY = [
    "model.channels=[8,16,16]",
    "model.embed_dim=16",
    "model.groups=4",
    "train.batch_size=32",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "train.threads=1",
    "train.device=cpu",
    "train.precision=fp32",
]
TINY_ARGS = ["--recipe", "ddpm-cond", "--limit", "256", "--no-progress", "--no-samples"] + [
    a for s in TINY for a in ("--set", s)
]


def torchrun_command(logs, nproc=2):
    """torchrun on one node, every rank's output also in files under `logs` (read by `rank_logs`)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--standalone",
        f"--log-dir={logs}",
        "--tee=3",
    ]


def torchrun(args, env_extra, logs, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    cmd = [*torchrun_command(logs, nproc), "-m", "mnist_diffusion", "train", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def rank_logs(logs, chars=3000):
    """Every rank's stderr (its last `chars` characters), for a failure message: which rank failed first and why."""
    parts = []
    for path in sorted(logs.rglob("stderr.log")):
        text = path.read_text(errors="replace")
        parts.append(f"--- local rank {path.parent.name} stderr ---\n{text[-chars:] or '(empty)'}")
    return "\n".join(parts) or f"(no rank logs under {logs})"


def read_sums(folder, rank):
    lines = (folder / f"rank{rank}.txt").read_text().split()
    return dict(zip(map(int, lines[0::2]), lines[1::2]))


def checksum_of_checkpoint(path, folder):
    """The hash `write_checksum` gives the raw weights in a checkpoint, loaded into one plain CPU network."""
    loaded = ckpt.load_checkpoint(path, expect_kind="training-state")
    net = build_model(loaded.config.model)
    net.load_state_dict(ckpt.split_prefix(loaded.tensors, "model"))  # strict: plain keys, no DDP prefixes
    os.environ[dist_utils.CHECKSUM_ENV] = str(folder)
    try:
        dist_utils.write_checksum(dist_utils.Dist(), net, loaded.info["step"])
    finally:
        del os.environ[dist_utils.CHECKSUM_ENV]
    return read_sums(folder, 0)[loaded.info["step"]]


def test_two_ranks_stay_identical_and_the_checkpoint_resumes_on_one_process(tmp_path, monkeypatch):
    run, sums, logs = tmp_path / "run", tmp_path / "sums", tmp_path / "logs"
    proc = torchrun([*TINY_ARGS, "--max-steps", "3", "--out", str(run)], {dist_utils.CHECKSUM_ENV: str(sums)}, logs)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, rank_logs(logs)
    assert out.count("Done:") == 1  # one rank says so

    rank0, rank1 = read_sums(sums, 0), read_sums(sums, 1)
    assert sorted(rank0) == [1, 2, 3]
    assert rank0 == rank1  # the same weights on both ranks after every step
    assert len(set(rank0.values())) == 3  # and they did train

    # Rank 0 alone wrote the run directory: one start event, one row per step, global-batch loss.
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 4 and '"world_size": 2' in rows[0]
    state = ckpt.load_checkpoint(run / ckpt.STATE_FILE, expect_kind="training-state")
    assert state.info["step"] == 3 and state.info["ema_updates"] == 3
    assert not any("module." in k or "_orig_mod" in k for k in state.tensors)
    assert checksum_of_checkpoint(run / ckpt.STATE_FILE, tmp_path / "loaded") == rank0[3]

    # The same run goes on in one plain process, from exactly those weights.
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["train", "--resume", str(run), "--max-steps", "5", "--no-progress", "--no-samples"]) == 0
    assert ckpt.load_checkpoint(run / ckpt.STATE_FILE).info["step"] == 5
    assert not load(run).net.training  # model.safetensors (the EMA) loads in one process too


def test_one_process_resume_is_exact(tmp_path):
    straight, paused = tmp_path / "straight", tmp_path / "paused"
    assert main(["train", *TINY_ARGS, "--max-steps", "4", "--out", str(straight)]) == 0
    assert main(["train", *TINY_ARGS, "--max-steps", "2", "--out", str(paused)]) == 0
    assert main(["train", "--resume", str(paused), "--max-steps", "4", "--no-progress", "--no-samples"]) == 0
    for name in (ckpt.STATE_FILE, ckpt.MODEL_FILE):
        a, b = ckpt.load_checkpoint(straight / name), ckpt.load_checkpoint(paused / name)
        assert a.tensors.keys() == b.tensors.keys()
        for key in a.tensors:  # weights, EMA, optimizer moments and RNG states, bit for bit
            assert torch.equal(a.tensors[key], b.tensors[key]), key


class Recorder(nn.Module):
    """A stand-in network that returns zeros and remembers the labels it was given."""

    num_classes = 10

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, x, t, labels):
        self.seen.append(labels)
        return x * self.w


class Wrapper(nn.Module):
    """Like DDP: forwards calls, not attributes (it has no `num_classes`)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, *args):
        return self.inner(*args)


def test_label_dropout_survives_a_wrapper():
    cfg = apply_overrides(get_recipe("ddpm-cond"), ["train.label_dropout=0.5"])
    objective = make_objective(cfg, torch.device("cpu"))
    net = Recorder()
    labels = torch.arange(64) % 10
    objective(Wrapper(net), torch.zeros(64, 1, 28, 28), labels, torch.Generator().manual_seed(0))
    dropped = net.seen[0] == 10  # the "no label" class
    assert 0 < dropped.sum() < 64


def test_a_stop_request_ends_training_at_a_step_boundary_and_saves(tmp_path, monkeypatch):
    cfg = apply_overrides(get_recipe("ddpm-cond"), [*TINY, "data.limit=256"])
    trainer = make_trainer(cfg, tmp_path / "run")
    objective = trainer.objective

    def stop_requested_during_step_2(net, x, labels, g):
        if trainer.progress.step == 2:
            stops.request(signal.SIGTERM)
        return objective(net, x, labels, g)

    trainer.objective = stop_requested_during_step_2
    with pytest.raises(RunInterrupted):
        trainer.fit(progress_bar=False)
    assert trainer.progress.step == 3  # the step under way is finished, then saved
    assert ckpt.load_checkpoint(tmp_path / "run" / ckpt.STATE_FILE).info["step"] == 3


def test_other_ranks_get_their_own_random_streams():
    seeds = {dist_utils.rank_seed(0, r, s, k) for r in range(3) for s in (0, 7) for k in ("noise", "global")}
    assert len(seeds) == 12 and all(0 <= x < 2**63 for x in seeds)

    g = torch.Generator().manual_seed(1)
    before_global, before_g = torch.get_rng_state(), g.get_state()
    dist_utils.reseed_other_ranks(dist_utils.Dist(0, 2), 0, 5, g)  # rank 0 keeps its (checkpointed) state
    assert torch.equal(torch.get_rng_state(), before_global) and torch.equal(g.get_state(), before_g)
    dist_utils.reseed_other_ranks(dist_utils.Dist(1, 2), 0, 5, g)
    first = g.get_state()
    dist_utils.reseed_other_ranks(dist_utils.Dist(1, 2), 0, 5, g)
    assert torch.equal(g.get_state(), first) and not torch.equal(first, before_g)


def test_compile_keeps_plain_weight_names(tmp_path):
    cfg = apply_overrides(get_recipe("ddpm-cond"), [*TINY, "data.limit=256", "train.compile=true"])
    trainer = make_trainer(cfg, tmp_path / "run")  # compiles lazily, on the first forward pass
    assert trainer.train_net is not None and trainer.train_net is not trainer.net
    trainer.save()
    keys = ckpt.load_checkpoint(tmp_path / "run" / ckpt.STATE_FILE).tensors.keys()
    plain = {f"model.{k}" for k in build_model(cfg.model).state_dict()}
    assert plain <= set(keys) and not any("_orig_mod" in k for k in keys)


@pytest.mark.slow
def test_compiled_training_runs_and_saves_plain_weights(tmp_path):
    assert main(["train", *TINY_ARGS, "--compile", "--max-steps", "2", "--out", str(tmp_path / "run")]) == 0
    keys = ckpt.load_checkpoint(tmp_path / "run" / ckpt.STATE_FILE).tensors.keys()
    assert keys and not any("_orig_mod" in k for k in keys)


@pytest.mark.slow
def test_ctrl_c_under_torchrun_stops_every_rank_at_the_same_step(tmp_path):
    run, sums, logs = tmp_path / "run", tmp_path / "sums", tmp_path / "logs"
    proc = torchrun([*TINY_ARGS, "--epochs", "1000", "--out", str(run)], {dist_utils.CHECKSUM_ENV: str(sums)}, logs)
    deadline = time.time() + 240
    while time.time() < deadline and not ((sums / "rank1.txt").is_file() and len(read_sums(sums, 1)) >= 3):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # what a Ctrl-C in the terminal does: torchrun passes it to each rank
    out, _ = proc.communicate(timeout=120)
    assert "Stopped by SIGINT after step" in out, rank_logs(logs)
    rank0, rank1 = read_sums(sums, 0), read_sums(sums, 1)
    assert rank0 == rank1
    step = ckpt.load_checkpoint(run / ckpt.STATE_FILE).info["step"]
    assert step == max(rank0) >= 3


NAN_ON_RANK_1 = """
import sys
from mnist_diffusion.config import apply_overrides
from mnist_diffusion.recipes import get_recipe
from mnist_diffusion.training.loop import TrainingError, make_trainer

trainer = make_trainer(apply_overrides(get_recipe("ddpm-cond"), [*sys.argv[2:], "data.limit=256"]), sys.argv[1])
objective = trainer.objective

def nan_on_rank_1(net, x, labels, g):
    out = objective(net, x, labels, g)
    if trainer.dist.rank == 1 and trainer.progress.step == 2:
        out["loss"] = out["loss"] * float("nan")
    return out

trainer.objective = nan_on_rank_1
try:
    trainer.fit(progress_bar=False)
except TrainingError as e:
    print(f"rank {trainer.dist.rank}: {e}", flush=True)
    sys.exit(3)
"""


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(NAN_ON_RANK_1)
    logs = tmp_path / "logs"
    cmd = [*torchrun_command(logs), str(script), str(tmp_path / "run"), *TINY]
    r = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    for rank in (0, 1):  # neither rank hangs in the next all-reduce: both report the NaN of step 2
        assert f"rank {rank}: The loss became nan at step 2; the last good checkpoint (step 2)" in out, rank_logs(logs)


LAYOUT_ON_RANK_1 = """
import torch
from torch import nn
from mnist_diffusion.errors import UserError
from mnist_diffusion.training import distributed as dist_utils

d = dist_utils.init()
net = nn.Conv2d(4, 4, 3)
if d.rank == 1:  # what precision auto decided differently on this rank would do to the layout
    net = net.to(memory_format=torch.channels_last)
try:
    dist_utils.wrap(net, d, torch.device("cpu"))
except UserError as e:
    print(f"rank {d.rank}: {e}", flush=True)
"""


def test_ranks_in_different_layouts_are_refused_on_every_rank(tmp_path):
    """How the two-rank training used to fail on a machine's first run: each rank measured the bf16 probe on its
    own, one chose channels_last and DDP failed there, the other saw only "Connection closed by peer"."""
    script, logs = tmp_path / "layout_on_rank_1.py", tmp_path / "logs"
    script.write_text(LAYOUT_ON_RANK_1)
    cmd = [*torchrun_command(logs), str(script)]
    r = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    for rank in (0, 1):
        assert f"rank {rank}: The ranks hold the network in different memory layouts" in out, rank_logs(logs)
    assert "Connection closed by peer" not in out
