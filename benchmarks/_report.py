"""Markdown cells for the evaluator's scores and the results-page writer, shared by the benchmarks."""

from __future__ import annotations


def quality_cells(s: dict, base_fid: float, spread: bool = True, coarse: bool = False) -> list[str]:
    """FID, FID / train-vs-test, KIDx1e3 (± its spread), precision, recall and label accuracy of one scored set;
    `coarse` for a far-off baseline (uniform noise), where decimals say nothing."""
    fid, ratio, kid = (".1f", ".0f", ".1f") if coarse else (".3f", ".2f", ".3f")
    kid_cell = f"{s['kid_mean'] * 1e3:{kid}}" + (f" ± {s['kid_std'] * 1e3:.3f}" if spread else "")
    return [f"{s['fid']:{fid}}", f"{s['fid'] / base_fid:{ratio}}x", kid_cell, f"{s['precision']:.3f}",
            f"{s['recall']:.3f}", f"{s.get('label_accuracy', float('nan')):.4f}"]


def baseline_row(title: str, s: dict, base_fid: float, before: int, after: int, coarse: bool = False) -> str:
    """A table row for a baseline: its title in italics, `before` empty cells, its scores, `after` empty cells."""
    cells = [f"*{title}*", *[""] * before, *quality_cells(s, base_fid, spread=False, coarse=coarse), *[""] * after]
    return "| " + " | ".join(cells) + " |"


def header(title: str, started: float) -> list[str]:
    """A results page's first lines: its title, the command that made it (with the environment that changes
    which kernels run) and how long it took since `started` (time.perf_counter), and the machine."""
    import os
    import sys
    import time
    from pathlib import Path

    from _machine import machine_info

    env = "".join(f"{k}={os.environ[k]} " for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ)
    command = f"{env}python benchmarks/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}".rstrip()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return [f"# {title}", "", f"Command: `{command}` ({(time.perf_counter() - started) / 60:.1f} min)", "",
            f"Machine: {machine_info()}; 1-minute load average at the end {load:.1f}", ""]


def write_table(path, lines: list[str]) -> str:
    """Print the results page made of `lines` and write it to `path` atomically (folders made as needed);
    returns its text."""
    from mnist_diffusion.files import atomic_write_text

    text = "\n".join(lines) + "\n"
    print("\n" + text)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    print(f"wrote {path}")
    return text
