"""Completing partly known digits: the maths of the known-region callbacks, known pixels kept exactly for every
kind of model and mask, the CLI, and bad input as one sentence."""

import numpy as np
import pytest
import torch

from mnist_diffusion.cli import main
from mnist_diffusion.data import load_split
from mnist_diffusion.diffusion.denoiser import Denoiser
from mnist_diffusion.diffusion.inpaint import projection, replacement, sample_repaint
from mnist_diffusion.diffusion.samplers import gaussian_like, sample_ddim
from mnist_diffusion.diffusion.schedule import make_schedule, timestep_grid
from mnist_diffusion.errors import UserError
from mnist_diffusion.pipeline import half_mask, load


class GaussianNet:
    """Exact eps prediction for data ~ N(0.4, 0.5^2) per pixel (see test_samplers)."""

    num_classes = 0

    def __init__(self, schedule):
        self.schedule = schedule

    def __call__(self, x_t, t, labels=None):
        ab = self.schedule.alpha_bar(t).view(-1, 1, 1, 1)
        a, b = ab.sqrt(), (1 - ab).sqrt()
        x0 = 0.4 + a * 0.25 / (a**2 * 0.25 + b**2) * (x_t.double() - a * 0.4)
        return ((x_t.double() - a * x0) / b).to(x_t.dtype)


@pytest.fixture(scope="module")
def digits():
    images, labels = load_split("mnist", "test")
    return images[:6], labels[:6]


def test_replacement_puts_the_known_region_on_the_forward_process():
    s = make_schedule("linear")
    known, mask = torch.full((2, 1, 4, 4), 0.7), torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 1
    x_t = torch.randn(2, 1, 4, 4)
    out = replacement(s, known, mask, torch.Generator().manual_seed(3))({"t": 500, "x_t": x_t})
    ab = s.alpha_bar(500).item()
    eps = gaussian_like(x_t, torch.Generator().manual_seed(3))
    torch.testing.assert_close(out[:, :, :2], (ab**0.5 * 0.7 + (1 - ab) ** 0.5 * eps)[:, :, :2])
    torch.testing.assert_close(out[:, :, 2:], x_t[:, :, 2:])


def test_projection_rebuilds_x_t_around_the_pasted_x0_with_the_same_noise():
    s = make_schedule("linear")
    x_t, x0 = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    pasted = torch.zeros_like(x0)
    out = projection(s, lambda z: pasted)({"t": 300, "x_t": x_t, "x0": x0})
    a, sig = s.alpha_bar(300).item() ** 0.5, (1 - s.alpha_bar(300).item()) ** 0.5
    eps_hat = (x_t - a * x0) / sig
    torch.testing.assert_close(out, a * pasted + sig * eps_hat)


def test_repaint_with_one_attempt_is_ancestral_ddim():
    s = make_schedule("linear")
    den = Denoiser(GaussianNet(s), s)
    x_T = torch.randn(50, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = timestep_grid(1000, 8, "trailing")
    a = sample_repaint(den, x_T, grid, resample=1, eta=1.0, generator=torch.Generator().manual_seed(1))
    b = sample_ddim(den, x_T, grid, generator=torch.Generator().manual_seed(1), eta=1.0)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _masks(n):
    rng = np.random.default_rng(0)
    one_unknown = np.ones((n, 28, 28), np.float32)
    one_unknown[:, 14, 14] = 0
    one_known = np.zeros((n, 28, 28), np.uint8)
    one_known[:, 3, 3] = 7  # nonzero = known
    return {
        "top": half_mask("top", n),
        "bottom": half_mask("bottom", n),
        "left": half_mask("left", n),
        "right": half_mask("right", n),
        "random": rng.random((n, 28, 28)) < 0.3,
        "one unknown": one_unknown,
        "one known": one_known,
    }


@pytest.mark.parametrize(
    "model, kw",
    [
        ("ddpm-cond", {}),
        ("ddpm-cond", {"method": "replace"}),
        ("ddpm-cond", {"resample": 2, "sampler": "ddim"}),
        ("ldm", {}),
        ("ldm", {"method": "replace"}),
        ("ldm", {"resample": 2, "sampler": "ddim"}),
        ("ddpm-cond-fast", {}),
        ("ldm-fast", {"method": "replace"}),  # students: guidance is their input, one pass
    ],
)
def test_known_pixels_come_back_exactly(digits, model, kw):
    images, _ = digits
    pipe = load(model)
    for name, mask in _masks(len(images)).items():
        out = pipe.inpaint(images, mask, steps=2, **kw)
        known = np.asarray(mask) != 0
        assert out.images.shape == images.shape and np.array_equal(out.images[known], images[known]), name
        if name == "top":
            assert not np.array_equal(out.images[~known], images[~known])  # the rest was generated


def test_labels_steer_the_completion(digits):
    images, _ = digits
    out = load("ldm").inpaint(images, half_mask("top", 6), labels=[1] * 6, steps=4)
    assert out.labels.tolist() == [1] * 6 and out.settings["guidance"] == 2.0


def test_completions_take_at_least_20_steps_unless_told(digits):
    """`inpaint_steps`: a model sampling in fewer steps completes in 20 (completions keep improving with steps);
    one sampling in more keeps its own; steps given are steps taken."""
    from dataclasses import replace

    from mnist_diffusion.pipeline import INPAINT_MIN_STEPS

    images, _ = digits
    pipe = load("ddpm-cond")
    assert pipe.config.sample.steps < INPAINT_MIN_STEPS == pipe.inpaint_steps == 20
    assert pipe.inpaint(images[:2], half_mask("top", 2)).settings["steps"] == 20
    assert pipe.inpaint(images[:2], half_mask("top", 2), steps=3).settings["steps"] == 3
    pipe.config = replace(pipe.config, sample=replace(pipe.config.sample, steps=30))
    assert pipe.inpaint_steps == 30


@pytest.mark.parametrize("student", ["ddpm-cond-fast", "ldm-fast"])
def test_a_student_completes_digits_in_its_own_steps(student):
    """The top halves of 20 test digits completed by a few-step student at its defaults (`ddpm-cond-fast`: 2
    steps, guidance 1.5; `ldm-fast`: 4 steps, guidance 2): asked for each digit's own label the evaluator's
    classifier reads it back (`ddpm-cond-fast` 20 of 20, `ldm-fast` 19, the teacher
    `ddpm-cond` at its defaults 20); asked for the next label, a half-drawn digit often turns into it
    (12, 11 and 11), which an unsteered completion would almost never do."""
    from mnist_diffusion.evaluation.evaluator_file import load_evaluator
    from mnist_diffusion.evaluation.features import extract

    images, labels = load_split("mnist", "test")
    images, labels = images[:20], labels[:20]
    pipe, evaluator = load(student), load_evaluator()
    own = pipe.inpaint(images, half_mask("top", 20), labels=labels, seed=0)
    assert own.settings["steps"] == pipe.config.sample.steps <= 4
    assert own.settings["guidance"] == pipe.config.sample.guidance
    assert (extract(evaluator, own.images)[1] == labels).mean() >= 0.85
    following = (labels + 1) % 10
    steered = pipe.inpaint(images, half_mask("top", 20), labels=following, seed=0)
    assert (extract(evaluator, steered.images)[1] == following).mean() >= 0.35


def test_the_tutorial_model_completes_too(tmp_path, digits):
    images, _ = digits
    run = tmp_path / "seed"
    assert (
        main(
            [
                "train",
                "--recipe",
                "seed",
                "--max-steps",
                "2",
                "--limit",
                "256",
                "--out",
                str(run),
                "--no-progress",
                "--no-samples",
            ]
        )
        == 0
    )
    for method in ("project", "replace"):
        out = load(run).inpaint(images, half_mask("left", 6), method=method)
        known = half_mask("left", 6) > 0
        assert np.array_equal(out.images[known], images[known]), method


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda p, x: p.inpaint(x.astype(np.float32), half_mask("top", 6)), "uint8"),
        (lambda p, x: p.inpaint(x, half_mask("top", 5)), "the mask has shape (5, 28, 28)"),
        (lambda p, x: p.inpaint(x, np.zeros((6, 28, 28))), "image 0 marks no pixel as known"),
        (lambda p, x: p.inpaint(x, np.ones((6, 28, 28))), "image 0 marks every pixel as known"),
        (lambda p, x: p.inpaint(x, half_mask("top", 6), resample=0), "resample must be"),
        (lambda p, x: p.inpaint(x, half_mask("top", 6), method="magic"), "method must be one of project, replace"),
        (lambda p, x: p.inpaint(x, half_mask("top", 6), guidance=3.0), "needs labels"),
        (lambda p, x: p.inpaint(x, half_mask("top", 6), resample=2, sampler="heun"), "cannot resample"),
    ],
)
def test_bad_input_is_one_sentence(digits, call, words):
    with pytest.raises(UserError, match=None) as info:
        call(load("ldm"), digits[0])
    assert words in str(info.value)


def test_the_command(tmp_path, digits, capsys):
    images, labels = digits
    src = tmp_path / "in.npz"
    np.savez(src, images=images, mask=half_mask("bottom", 6), labels=labels)
    out, grid = tmp_path / "out.npz", tmp_path / "grid.png"
    assert (
        main(
            [
                "inpaint",
                "ldm",
                "--input",
                str(src),
                "--npz",
                str(out),
                "--out",
                str(grid),
                "--steps",
                "3",
                "--no-progress",
            ]
        )
        == 0
    )
    done = np.load(out)
    keep = half_mask("bottom", 6) > 0
    assert np.array_equal(done["images"][keep], images[keep]) and done["labels"].tolist() == labels.tolist()
    assert grid.stat().st_size > 0
    np.savez(src, images=images)
    assert (
        main(
            [
                "inpaint",
                "ldm",
                "--input",
                str(src),
                "--npz",
                str(out),
                "--keep",
                "left",
                "--steps",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert main(["inpaint", "ldm", "--input", str(src), "--npz", str(tmp_path / "x.npz")]) == 2
    assert "no 'mask' array" in capsys.readouterr().err and not (tmp_path / "x.npz").exists()
