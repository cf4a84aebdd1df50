"""Distilled students: the objectives on Gaussian data, where the exact probability-flow map is known; the student's
guidance input; a distillation run that resumes exactly and refuses a wrong teacher."""

import pytest
import torch
from torch import nn

from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion import load
from mnist_diffusion.config import ConfigError, ModelConfig, apply_overrides
from mnist_diffusion.diffusion.denoiser import Denoiser
from mnist_diffusion.diffusion.samplers import sample_consistency, sample_ddim
from mnist_diffusion.diffusion.schedule import make_schedule, timestep_grid
from mnist_diffusion.errors import UserError
from mnist_diffusion.models import UNet
from mnist_diffusion.recipes import get_recipe
from mnist_diffusion.training.distill import consistency_loss, ddim_x0_target, segments, trajectory_loss
from mnist_diffusion.training.loop import make_trainer

SCHEDULE = make_schedule("linear", 1000)
SPREAD = 0.5  # the data's standard deviation
MEANS = torch.tensor([[1.0, -1.0, 0.5, 0.0], [-0.5, 0.5, 1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])  # class 0, 1, no label


def coefficients(t):
    ab = SCHEDULE.alpha_bar(torch.as_tensor(t, dtype=torch.float64)).float()
    return ab.sqrt(), (1 - ab).sqrt()


def guided_mean(labels, w):
    """CFG of two Gaussians of equal spread is the Gaussian of mean (1 - w) mu_u + w mu_c: x0(x_t) is affine."""
    w = torch.as_tensor(w, dtype=torch.float32).reshape(-1, 1)
    return ((1 - w) * MEANS[2] + w * MEANS[labels]).view(-1, 1, 2, 2)


def exact_x0(x_t, t, mean):
    """E[x0 | x_t] for x0 ~ N(mean, SPREAD^2 I)."""
    a, s = (c.view(-1, 1, 1, 1) for c in coefficients(t))
    return mean + a * SPREAD**2 / (a**2 * SPREAD**2 + s**2) * (x_t - a * mean)


def exact_flow(x_t, t, end, mean):
    """The probability-flow ODE's exact map from t to `end` (None = the data) for Gaussian data."""
    a_t, s_t = (c.view(-1, 1, 1, 1) for c in coefficients(t))
    a_e, s_e = (torch.ones(1), torch.zeros(1)) if end is None else coefficients(end)
    ratio = ((a_e**2 * SPREAD**2 + s_e**2) / (a_t**2 * SPREAD**2 + s_t**2)).sqrt()
    return a_e * mean + ratio * (x_t - a_t * mean)


class GaussianTeacher(nn.Module):
    """The exact eps of class-conditional Gaussian data (label 2 = no label), as a classifier-free-guided net."""

    num_classes = 2

    def forward(self, x, t, labels):
        _, s = (c.view(-1, 1, 1, 1) for c in coefficients(t))
        a = coefficients(t)[0].view(-1, 1, 1, 1)
        return (x - a * exact_x0(x, t, MEANS[labels].view(-1, 1, 2, 2))) / s


class OracleStudent(nn.Module):
    """A student with a guidance input whose v is given by `x0_of(x, t, mean)`."""

    num_classes, guidance_input = 2, True

    def __init__(self, x0_of):
        super().__init__()
        self.x0_of = x0_of

    def forward(self, x, t, labels, guidance):
        a, s = (c.view(-1, 1, 1, 1) for c in coefficients(t))
        x0 = self.x0_of(x, t, guided_mean(labels, guidance))
        eps = (x - a * x0) / s
        return a * eps - s * x0


def batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    w = 1 + 3 * torch.rand(n, generator=g)
    x0 = guided_mean(labels, w) + SPREAD * torch.randn(n, 1, 2, 2, generator=g)
    return x0, torch.randn(n, 1, 2, 2, generator=g), labels, w


def denoisers(student_net, labels, w):
    return (
        Denoiser(student_net, SCHEDULE, "v", labels=labels, guidance=w),
        Denoiser(GaussianTeacher(), SCHEDULE, "eps", labels=labels, guidance=w),
    )


def test_segments_split_the_teachers_own_grid():
    parts = segments(1000, 4, 20)
    assert [p[0][0] for p in parts] == timestep_grid(1000, 4, "trailing").tolist()
    assert [t for points, _ in parts for t in points] == timestep_grid(1000, 20, "trailing").tolist()
    assert [end for _, end in parts] == [749, 499, 249, None]


def test_ddim_x0_target_lands_the_step_where_asked():
    x_t, x_end = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    x0 = ddim_x0_target(SCHEDULE, x_t, x_end, 749.0, 499.0)

    class Fixed:
        schedule, labels, guidance = SCHEDULE, None, 1.0

        def __call__(self, x, t):
            a, s = coefficients(t)
            return x0, (x - a * x0) / s

    landed = sample_ddim(Fixed(), x_t, [749], end=499.0)
    torch.testing.assert_close(landed, x_end, rtol=1e-4, atol=1e-4)


def exact_step_x0(steps):
    """The x0 whose DDIM step from t lands on the exact flow at the next student grid point."""
    ends = {p[0][0]: p[1] for p in segments(1000, steps, steps)}

    def x0_of(x, t, mean):
        t0 = float(t[0])
        return ddim_x0_target(SCHEDULE, x, exact_flow(x, t, ends[t0], mean), t0, ends[t0])

    return x0_of


def test_trajectory_objective_is_zero_at_the_exact_few_step_map():
    """Guided Gaussian data: the exact student (its DDIM steps follow the exact flow) scores ~0; a student that
    takes the teacher's own one-step x0 -- what a fresh student initialised from the teacher does -- does not."""
    x0, eps, labels, w = batch()
    exact = trajectory_loss(*denoisers(OracleStudent(exact_step_x0(4)), labels, w), x0, eps, 4, 80)[0].mean()
    naive = trajectory_loss(*denoisers(OracleStudent(exact_x0), labels, w), x0, eps, 4, 80)[0].mean()
    assert naive > 1e-2
    assert exact < 1e-3 * naive


def test_consistency_objective_is_smallest_at_the_flow_endpoint():
    x0, eps, labels, w = batch()
    g = torch.Generator().manual_seed(1)

    def endpoint(x, t, mean):  # the consistency function: where the exact flow from (x, t) ends
        return exact_flow(x, t, None, mean)

    exact = consistency_loss(*denoisers(OracleStudent(endpoint), labels, w), x0, eps, 200, g)[0].mean()
    naive = consistency_loss(
        *denoisers(OracleStudent(exact_x0), labels, w), x0, eps, 200, torch.Generator().manual_seed(1)
    )[0].mean()
    assert exact < 1e-2 * naive


def test_one_exact_trajectory_step_per_segment_samples_the_exact_map():
    """With the exact student, DDIM on its own 4-point grid reproduces the exact flow from noise to data."""
    _, eps, labels, w = batch(16)
    student = Denoiser(OracleStudent(exact_step_x0(4)), SCHEDULE, "v", labels=labels, guidance=w)
    out = sample_ddim(student, eps, timestep_grid(1000, 4, "trailing"))
    torch.testing.assert_close(
        out, exact_flow(eps, torch.full((16,), 999.0), None, guided_mean(labels, w)), rtol=1e-3, atol=1e-3
    )


def test_the_students_guidance_input_is_one_pass_and_starts_neutral():
    cfg = ModelConfig(in_channels=1, channels=(8, 16), embed_dim=16, groups=4, num_classes=10, guidance_input=True)
    torch.manual_seed(0)
    net = UNet(cfg)
    nn.init.normal_(net.out_conv.weight, std=0.1)
    x, t, labels = torch.randn(4, 1, 28, 28), torch.full((4,), 500.0), torch.tensor([1, 2, 3, 4])
    torch.testing.assert_close(net(x, t, labels, torch.full((4,), 1.0)), net(x, t, labels, torch.full((4,), 3.0)))
    nn.init.normal_(net.guidance_mlp[2].weight, std=0.1)
    assert not torch.allclose(net(x, t, labels, torch.full((4,), 1.0)), net(x, t, labels, torch.full((4,), 3.0)))

    batches = []
    net.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    Denoiser(net, SCHEDULE, "v", labels=labels, guidance=3.0)(x, 500)
    assert batches == [4]  # a teacher would run 8: conditional and unconditional
    with pytest.raises(ValueError, match="without guidance_input"):
        UNet(ModelConfig(in_channels=1, channels=(8,), embed_dim=16, groups=4, num_classes=10))(x, t, labels, t)


TINY_TEACHER = [
    "data.limit=64",
    "train.batch_size=32",
    "train.max_steps=2",
    "model.channels=[8,16]",
    "model.embed_dim=16",
    "model.groups=4",
    "model.mid_attention=false",
    "train.log_every=1",
]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    run = tmp_path_factory.mktemp("teacher")
    make_trainer(apply_overrides(get_recipe("ddpm-cond"), TINY_TEACHER), run).fit(progress_bar=False)
    return run


def distill_config(teacher, *extra):
    return apply_overrides(
        get_recipe("distill"),
        [
            f"distill.teacher={teacher}",
            "data.limit=64",
            "train.batch_size=16",
            "train.epochs=2",
            "train.warmup_steps=2",
            "train.checkpoint_every=3",
            "train.log_every=1",
            "distill.teacher_steps=8",
            *extra,
        ],
    )


@pytest.mark.parametrize("method", ["trajectory", "consistency"])
def test_a_distillation_run_resumes_exactly_and_samples_in_its_steps(tmp_path, teacher, method):
    cfg = distill_config(teacher, f"distill.method={method}")
    straight = make_trainer(cfg, tmp_path / "a")
    straight.fit(progress_bar=False)
    first = make_trainer(cfg, tmp_path / "b")
    first.fit(progress_bar=False, stop_after=5)
    make_trainer(cfg, tmp_path / "b", resume=True).fit(progress_bar=False)
    a, b = (ckpt.load_checkpoint(p / ckpt.STATE_FILE).tensors for p in (tmp_path / "a", tmp_path / "b"))
    assert a.keys() == b.keys() and straight.progress.step == 8
    for k in a:
        assert torch.equal(a[k], b[k]), k

    pipe = load(tmp_path / "a")
    assert pipe.config.model.guidance_input and pipe.config.diffusion.prediction == "v"
    assert pipe.config.sample.steps == 4
    assert pipe.config.sample.sampler == {"trajectory": "ddim", "consistency": "consistency"}[method]
    assert len(pipe.config.distill.teacher_sha256) == 64
    out = pipe.sample(10, seed=3)
    assert out.images.shape == (10, 28, 28) and out.settings["steps"] == 4
    with pytest.raises(UserError, match="guidance interval does not apply"):
        pipe.sample(2, guidance_interval=(0.1, 1.0))


def test_a_student_starts_as_its_teacher(tmp_path, teacher):
    trainer = make_trainer(distill_config(teacher), tmp_path / "s")
    teacher_weights = ckpt.model_weights(ckpt.load_checkpoint(teacher / ckpt.MODEL_FILE))
    student = trainer.net.state_dict()
    assert all(torch.equal(student[k], v) for k, v in teacher_weights.items())
    assert all(k in teacher_weights or k.startswith("guidance_mlp.") for k in student)


def test_a_narrower_student_starts_fresh_and_samples_in_its_own_widths(tmp_path, teacher):
    cfg = distill_config(teacher, "distill.student_channels=[4,8]", "train.max_steps=2")
    trainer = make_trainer(cfg, tmp_path / "n")
    assert trainer.cfg.model.channels == (4, 8) and trainer.cfg.model.guidance_input
    teacher_weights = ckpt.model_weights(ckpt.load_checkpoint(teacher / ckpt.MODEL_FILE))
    assert trainer.net.stem.weight.shape[0] == 4 != teacher_weights["stem.weight"].shape[0]
    trainer.fit(progress_bar=False)
    pipe = load(tmp_path / "n")
    assert pipe.config.model.channels == (4, 8) and pipe.sample(3, seed=1).images.shape == (3, 28, 28)
    with pytest.raises(ConfigError, match="at least one width"):
        distill_config(teacher, "distill.student_channels=[]")


def test_a_packaged_student_names_its_teacher_and_takes_measured_defaults(tmp_path, teacher):
    from mnist_diffusion.training.packaging import package_model

    student = tmp_path / "s"
    make_trainer(distill_config(teacher, "train.max_steps=1"), student).fit(progress_bar=False)
    out = package_model(
        student,
        tmp_path / "fast.safetensors",
        {"note": "test"},
        sample={"steps": 2, "guidance": 1.5},
        teacher=str(teacher),
    )
    pipe = load(out)
    assert (pipe.config.sample.steps, pipe.config.sample.guidance, pipe.config.sample.sampler) == (2, 1.5, "ddim")
    assert pipe.config.distill.teacher == str(teacher)
    assert torch.equal(pipe.net.state_dict()["stem.weight"], load(student).net.state_dict()["stem.weight"])
    with pytest.raises(UserError, match="hashes to"):
        package_model(student, tmp_path / "x.safetensors", teacher=str(student))
    with pytest.raises(UserError, match="not a distilled student"):
        package_model(teacher, tmp_path / "y.safetensors", teacher=str(teacher))
    with pytest.raises(ConfigError, match="sampler"):
        package_model(student, tmp_path / "z.safetensors", sample={"sampler": "euler"})
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "z.safetensors").exists()


def test_a_wrong_teacher_is_refused(tmp_path, teacher):
    with pytest.raises(ConfigError, match="class-conditional"):
        make_trainer(distill_config("ldm-ae"), tmp_path / "x")
    with pytest.raises(ConfigError, match="multiple of distill.steps"):
        distill_config(teacher, "distill.teacher_steps=10", "distill.steps=4")
    with pytest.raises(ConfigError, match="takes its model settings from its teacher; drop model.channels"):
        make_trainer(distill_config(teacher, "model.channels=[16,32]"), tmp_path / "m")
    with pytest.raises(ConfigError, match="drop diffusion.timesteps"):
        make_trainer(distill_config(teacher, "diffusion.timesteps=500"), tmp_path / "d")
    cfg = make_trainer(distill_config(teacher), tmp_path / "y").cfg
    other = apply_overrides(cfg, [f"distill.teacher_sha256={'0' * 64}"])
    with pytest.raises(ConfigError, match="hashes to"):
        make_trainer(other, tmp_path / "z")


def test_consistency_sampling_with_the_exact_consistency_function_draws_the_data():
    """With f(x_t, t) = the end of the exact flow through x_t, 1 and 4 consistency steps both draw the data."""
    labels, w = torch.zeros(4000, dtype=torch.long), torch.full((4000,), 2.0)
    student = Denoiser(
        OracleStudent(lambda x, t, mean: exact_flow(x, t, None, mean)), SCHEDULE, "v", labels=labels, guidance=w
    )
    mean = guided_mean(labels[:1], w[:1]).flatten()
    for steps in (1, 4):
        g = torch.Generator().manual_seed(steps)
        out = sample_consistency(
            student, torch.randn(4000, 1, 2, 2, generator=g), timestep_grid(1000, steps, "trailing"), generator=g
        ).flatten(1)
        torch.testing.assert_close(out.mean(0), mean, atol=0.04, rtol=0)
        torch.testing.assert_close(out.std(0), torch.full((4,), SPREAD), atol=0.03, rtol=0)


def test_under_train_compile_the_teachers_forwards_go_through_the_compiled_network(monkeypatch, teacher):
    """train.compile compiles the teacher too (most of a distillation step); the loss is the eager one."""
    from mnist_diffusion import runtime
    from mnist_diffusion.training.distill import distill_objective, load_teacher

    batches = []

    def fake_compile(net, dynamic=False):
        def run(x, *conditioning):
            batches.append(x.shape[0])
            return net(x, *conditioning)

        return run

    monkeypatch.setattr(runtime.torch, "compile", fake_compile)
    losses = []
    for extra in ([], ["train.compile=true"]):
        cfg = distill_config(teacher, *extra)
        loaded = load_teacher(cfg, torch.device("cpu"))
        torch.manual_seed(0)
        student = UNet(
            ModelConfig(
                in_channels=1,
                channels=(8, 16),
                embed_dim=16,
                groups=4,
                num_classes=10,
                mid_attention=False,
                guidance_input=True,
            )
        )
        student.load_state_dict(loaded.weights, strict=False)
        objective = distill_objective(cfg, torch.device("cpu"), loaded)
        x, labels = torch.rand(8, 1, 28, 28) * 2 - 1, torch.arange(8)
        losses.append(objective(student, x, labels, torch.Generator().manual_seed(0))["loss"])
    assert batches and set(batches) == {4}  # guided: 8 images in 4 segments of 2, conditional + unconditional
    torch.testing.assert_close(losses[0], losses[1])
