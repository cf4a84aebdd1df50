"""Readable figures: labelled grids, the denoising GIF, captions and the figures of packaged models."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mnist_diffusion import load
from mnist_diffusion.cli import main
from mnist_diffusion.figures import kid_figure, loss_figure
from mnist_diffusion.images import caption, grid, label_margins, labelled_grid, save_gif
from mnist_diffusion.trajectory import Trajectory, shown_columns, trajectory_frames, write_trajectory_gif


@pytest.fixture(scope="module")
def pipe():
    return load("ddpm-cond")


def test_labelled_grid_holds_the_grid_and_its_labels():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    rows, cols = [f"row {i}" for i in range(2)], [str(d) for d in range(10)]
    out = labelled_grid(images, 10, rows, cols, title="a title", caption="a caption", scale=2)
    left, top, bottom = label_margins(rows, cols, "a title", "a caption")
    plain = grid(images, 10, pad_value=70).repeat(2, 0).repeat(2, 1)
    assert left > 0 and top > 0 and bottom > 0
    assert out.shape == (top + plain.shape[0] + bottom, max(left + plain.shape[1], out.shape[1]))
    assert np.array_equal(out[top : top + plain.shape[0], left : left + plain.shape[1]], plain)
    assert out[:top].max() > 0 and out[:, :left].max() > 0 and out[-bottom:].max() > 0  # the text is drawn
    assert labelled_grid(images, 10, scale=2).shape == plain.shape  # no labels: no margins


def test_save_gif_pads_frames_of_different_sizes(tmp_path):
    frames = [np.full((10, 12), 255, np.uint8), np.zeros((14, 9), np.uint8)]
    path = save_gif(frames, tmp_path / "a.gif", scale=1)
    with Image.open(path) as im:
        assert im.n_frames == 2 and im.size == (12, 14)


def test_gif_has_a_frame_per_step_a_column_per_label_and_frames_differ(pipe, tmp_path):
    trajectory = Trajectory(pipe.value_range)
    out = pipe.sample(12, labels="3,5,8", steps=4, callback=trajectory)
    index, headers = shown_columns(out, trajectory.keep)
    assert index == [0, 1, 2] and headers == ["digit 3", "digit 5", "digit 8"]
    frames = trajectory_frames(trajectory, out)
    assert len(frames) == 4 + 1  # every step, then the final digits
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(frames))
    # two rows (x_t, x0) of three columns at scale 2, plus the margins
    _, top, bottom = label_margins(["x_t", "x0 estimate"], headers, "t", "c")
    assert frames[0].shape[0] == top + (2 * 30 + 2) * 2 + bottom
    path = write_trajectory_gif(trajectory, out, tmp_path / "d.gif", pipe)
    with Image.open(path) as im:
        assert im.n_frames == 5
        seen = []
        for k in range(im.n_frames):
            im.seek(k)
            seen.append(np.asarray(im.convert("L")))
    assert not np.array_equal(seen[0], seen[1])


def test_gif_columns_follow_the_labels_asked_for(pipe):
    out = pipe.sample(20, labels="0-9", steps=2)
    assert shown_columns(out, 16)[1] == [f"digit {d}" for d in range(10)]


def test_caption_names_model_sampler_steps_guidance(pipe):
    text = caption(pipe.sample(1, steps=3, guidance=2.5, seed=4).settings)
    for part in ("model ddpm-cond", "sampler dpmpp_2m", "3 steps", "guidance 2.5", "seed 4"):
        assert part in text


def test_loss_of_a_one_point_run_is_drawn_and_kid_when_logged(tmp_path):
    rows = [{"step": 1, "loss": 0.5}]
    path = loss_figure(rows, tmp_path / "loss.png")
    assert path.is_file()
    assert kid_figure(rows, tmp_path / "kid.png") is None  # nothing logged, no figure
    rows += [
        {"step": 2, "eval": {"n": 500, "kid_mean": 0.01, "kid_std": 0.001, "label_accuracy": 0.9}},
        {"step": 4, "eval": {"n": 500, "kid_mean": 0.005, "kid_std": 0.001, "label_accuracy": 0.95}},
    ]
    assert kid_figure(rows, tmp_path / "kid.png").is_file()


def test_figures_of_a_packaged_model(tmp_path, capsys):
    assert main(["figures", "ddpm-cond", "--out", str(tmp_path), "--no-progress"]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"forward_process.png", "x0_prediction_per_step.png", "snr.png", "guidance_sweep.png"} <= names
    with Image.open(tmp_path / "guidance_sweep.png") as im:
        assert im.size[1] > im.size[0]  # ten rows of digits, five columns of scales


def test_figures_of_a_run_draw_kid_where_logged(tmp_path):
    run = tmp_path / "run"
    load("ddpm-cond").save(run)
    rows = [
        {"step": 10, "loss": 0.1, "loss_by_quarter": [0.2, 0.1, 0.05, 0.02]},
        {"step": 10, "eval": {"n": 500, "kid_mean": 0.004, "kid_std": 0.001, "label_accuracy": 0.97}},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from mnist_diffusion.figures import read_metrics

    assert kid_figure(read_metrics(run), tmp_path / "k.png").is_file()
    assert loss_figure(read_metrics(run), tmp_path / "l.png").is_file()


def test_figures_refuses_what_is_not_a_model(tmp_path, capsys):
    assert main(["figures", str(tmp_path / "none")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_the_command_line_and_its_denoising_gif_import_no_matplotlib(tmp_path):
    """matplotlib is for figures only: `import mnist_diffusion.cli` and `sample --gif` (Pillow) must not load it."""
    gif = tmp_path / "d.gif"
    code = (
        "import sys; import mnist_diffusion.cli as cli; assert 'matplotlib' not in sys.modules, 'on import'; "
        f"assert cli.main(['sample', 'ddpm-cond', '--n', '2', '--steps', '2', '--precision', 'fp32', "
        f"'--no-progress', '--gif', {str(gif)!r}]) == 0; "
        "assert 'matplotlib' not in sys.modules, 'by sample --gif'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert Image.open(gif).n_frames == 3  # two steps and the final digits
