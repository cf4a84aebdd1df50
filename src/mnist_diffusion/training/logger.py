"""Progress bar and metrics.jsonl: loss, learning rate, images/s, and the loss per timestep quarter."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mnist_diffusion.config import TrainConfig
from mnist_diffusion.files import atomic_write_text

QUARTERS = 4  # loss per timestep quarter (improved-diffusion logs the same): where the model struggles


class MetricsLogger:
    def __init__(
        self, run_dir: Path, total: int, tc: TrainConfig, timesteps: int, bar: bool, write: bool, initial: int = 0
    ):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tc, self.timesteps, self.write_enabled = tc, timesteps, write
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, disable=not bar)
        self._reset()

    def _reset(self) -> None:
        self.t0, self.images, self.loss_sum, self.n = time.perf_counter(), 0, 0.0, 0
        self.q_sum = torch.zeros(QUARTERS, dtype=torch.float64)
        self.q_count = torch.zeros(QUARTERS, dtype=torch.float64)

    def record(self, progress, out: dict[str, Any], batch_size: int, lr: float) -> None:
        loss = float(out["loss"].detach())
        self.loss_sum, self.n, self.images = self.loss_sum + loss, self.n + 1, self.images + batch_size
        if "t" in out or "t_fraction" in out:
            if "t_fraction" in out:  # a flow's times, in [0, 1]
                q = (out["t_fraction"].detach().float().cpu() * QUARTERS).long().clamp(0, QUARTERS - 1)
            else:
                q = (out["t"].detach().cpu() * QUARTERS // self.timesteps).clamp(max=QUARTERS - 1)
            per = out["per_sample"].detach().float().cpu().double()
            self.q_sum.index_add_(0, q, per)
            self.q_count.index_add_(0, q, torch.ones_like(per))
        rate = self.images / max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix(epoch=progress.epoch, loss=f"{loss:.4f}", img_s=f"{rate:.0f}", refresh=False)
        self.bar.update(1)
        if progress.step % self.tc.log_every == 0:
            row = {
                "step": progress.step,
                "epoch": progress.epoch,
                "loss": self.loss_sum / self.n,
                "lr": lr,
                "images_per_s": rate,
            }
            if self.q_count.sum() > 0:
                row["loss_by_quarter"] = (self.q_sum / self.q_count.clamp(min=1)).tolist()
            self.write(row)
            self._reset()

    def write(self, row: dict[str, Any]) -> None:
        if self.write_enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def close(self) -> None:
        self.bar.close()


def rewind_metrics(path: Path, step: int) -> None:
    """Drop the rows of metrics.jsonl logged after `step` (a run killed after its last checkpoint logs them
    again when resumed), and note the resume; rewritten atomically."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut short by the kill
            continue
        if isinstance(row, dict) and row.get("step", 0) <= step:
            kept.append(line)
    kept.append(json.dumps({"event": "resume", "step": step, "time": time.time()}))
    atomic_write_text(path, "\n".join(kept) + "\n")
