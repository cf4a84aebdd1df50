"""The public API: load / sample / save / to, the same images as the CLI, progress, train() from Python; and the
sampling defaults that exist for speed change no image."""

import numpy as np
import pytest
import torch
from PIL import Image

import mnist_diffusion
from mnist_diffusion import checkpoint as ckpt
from mnist_diffusion.cli import main
from mnist_diffusion.errors import UserError
from mnist_diffusion.pipeline import initial_noise, load

TINY = {
    "data": {"limit": 96},
    "train": {"batch_size": 32, "max_steps": 3, "threads": 1},
    "model": {"channels": [8, 16, 16], "embed_dim": 16, "groups": 4},
}


@pytest.fixture(scope="module")
def pixel():
    return load()  # the packaged ddpm-cond


def test_the_notebook_session_gives_the_cli_images(pixel, tmp_path):
    out = pixel.sample(20, labels=[3] * 20, seed=1)
    assert out.images.shape == (20, 28, 28) and out.images.dtype == np.uint8 and out.labels.tolist() == [3] * 20
    assert isinstance(out.grid(), Image.Image) and out._repr_png_().startswith(b"\x89PNG")
    assert out.tensor().shape == (20, 1, 28, 28) and out.tensor().min() >= -1.5
    npz = tmp_path / "cli.npz"
    assert (
        main(
            [
                "sample",
                "--n",
                "20",
                "--labels",
                "3",
                "--seed",
                "1",
                "--npz",
                str(npz),
                "--out",
                str(tmp_path / "cli.png"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert np.array_equal(np.load(npz)["images"], out.images)


def test_packaged_models_sample_the_requested_digits(pixel):
    for pipe in (pixel, load("ldm")):
        out = pipe.sample(3, steps=2, labels="3,5,8")
        assert out.images.dtype == np.uint8 and out.images.shape == (3, 28, 28)
        assert out.labels.tolist() == [3, 5, 8] and out.settings["steps"] == 2
        assert pipe.config.latent is None or pipe.autoencoder is not None


def test_save_and_load_round_trip(pixel, tmp_path):
    path = pixel.save(tmp_path / "copy")
    assert path == tmp_path / "copy" / ckpt.MODEL_FILE
    again = load(tmp_path / "copy")
    assert again.config == pixel.config
    for key, value in pixel.net.state_dict().items():
        assert torch.equal(value, again.net.state_dict()[key]), key
    a, b = pixel.sample(2, steps=2, seed=5), again.sample(2, steps=2, seed=5)
    assert np.array_equal(a.images, b.images)
    assert load(tmp_path / "copy").to("cpu").device.type == "cpu"


def test_progress_shows_one_tick_per_sampler_step_and_batch(pixel, capsys):
    pixel.sample(3, steps=2, batch_size=2, progress=True)  # 2 batches x 2 steps
    err = capsys.readouterr().err
    assert "sampling" in err and "4/4" in err
    pixel.sample(3, steps=2, batch_size=2)
    assert capsys.readouterr().err == ""


def test_a_callback_sees_every_step_in_image_space_and_may_replace_x_t():
    pipe = load("ldm")
    seen = []

    def callback(step):
        seen.append((step["i"], step["steps"], tuple(step["x_t"].shape), tuple(step["z_t"].shape), step["start"]))
        assert step["x0"] is step["denoised"]
        # x_t and x0 are decoded in one call; each is its own latent's decoding
        for image, latent in ((step["x_t"], step["z_t"]), (step["x0"], step["z0"])):
            assert torch.allclose(image, pipe.decode(latent), atol=2e-2)  # bf16 rounding may differ by batch
        assert not torch.allclose(step["x_t"], step["x0"])
        return torch.zeros_like(step["z_t"]) if step["i"] == 0 else None

    out = pipe.sample(2, steps=3, callback=callback, labels=[1, 2])
    assert [s[0] for s in seen] == [0, 1, 2] and all(s[1] == 3 and s[4] == 0 for s in seen)
    assert seen[0][2] == (2, 1, 28, 28) and seen[0][3] == (2, 4, 7, 7)  # decoded images and the latents
    plain = pipe.sample(2, steps=3, labels=[1, 2])
    assert not np.array_equal(out.images, plain.images)  # sampling went on from the replaced x_t


def test_sampling_settings_are_checked_like_a_config(pixel):
    with pytest.raises(UserError, match="sample.steps must be at least 1"):
        pixel.sample(1, steps=0)
    with pytest.raises(UserError, match="sampler"):
        pixel.sample(1, sampler="tutorial")
    with pytest.raises(UserError, match="guidance"):
        pixel.sample(1, guidance=float("nan"))
    with pytest.raises(UserError, match="classes run from 0 to 9"):
        pixel.sample(1, labels=[12])


def test_guidance_interval_skips_the_unconditional_pass_outside_it(pixel):
    calls = []
    net = pixel.net
    hook = net.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        pixel.sample(2, steps=4, guidance=2.0, guidance_interval=(1.0, 1e9))
    finally:
        hook.remove()
    sigma = pixel.denoiser().schedule.sigma(torch.tensor([999, 749, 499, 249])).tolist()  # the trailing grid
    assert calls == [4 if s > 1.0 else 2 for s in sigma] and 2 in calls and 4 in calls


def test_train_from_python_and_resume(tmp_path, monkeypatch):
    run = mnist_diffusion.train("ddpm-cond", out=tmp_path / "run", progress=False, **TINY)
    assert ckpt.load_checkpoint(run / ckpt.STATE_FILE).info["step"] == 3 and (run / "samples.png").is_file()
    mnist_diffusion.train(resume=run, train={"max_steps": 5}, progress=False, samples=False)
    assert ckpt.load_checkpoint(run / ckpt.STATE_FILE).info["step"] == 5
    mnist_diffusion.train(resume=run, train={"max_steps": 6, "threads": 2}, progress=False, samples=False)
    assert ckpt.load_checkpoint(run / ckpt.STATE_FILE).info["step"] == 6  # a freed core may join a resumed run
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda net, **kw: compiled.append(net) or net)  # no C++ build here
    mnist_diffusion.train(resume=run, train={"max_steps": 7, "compile": True}, progress=False, samples=False)
    assert ckpt.load_checkpoint(run / ckpt.STATE_FILE).info["step"] == 7 and compiled  # and so may compilation
    with pytest.raises(UserError, match="only train.epochs and train.max_steps"):
        mnist_diffusion.train(resume=run, train={"lr": 1.0}, progress=False)
    with pytest.raises(UserError, match="already holds a run"):
        mnist_diffusion.train("ddpm-cond", out=run, progress=False, **TINY)
    with pytest.raises(UserError, match="train.max_steps must be at least 1"):
        mnist_diffusion.resolve_run("seed", out=tmp_path / "x", train={"max_steps": -5})


def test_sampling_layout_is_channels_last_and_changes_nothing(pixel):
    net = pixel.net
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x_T = initial_noise(4, (1, 28, 28), seed=0, kind="gaussian", device=torch.device("cpu"))
    labels = torch.tensor([0, 1, 2, 3])
    settings = pixel.settings(steps=3)
    nhwc = pixel.sample_batch(x_T, labels, settings)
    net.to(memory_format=torch.contiguous_format)
    try:
        nchw = pixel.sample_batch(x_T, labels, settings)
    finally:
        net.to(memory_format=torch.channels_last)
    torch.testing.assert_close(nhwc, nchw, atol=1e-4, rtol=1e-4)


def test_batch_size_does_not_change_deterministic_samples(pixel):
    a = pixel.sample(5, steps=2, batch_size=2).images
    b = pixel.sample(5, steps=2, batch_size=5).images
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # rounding to uint8 may flip a level


def test_autoguide_steers_with_a_weaker_model_and_refuses_other_kinds(tiny_guided_pipeline):
    main, weaker = tiny_guided_pipeline(), tiny_guided_pipeline(channels=(8, 8))
    plain = main.sample(4, labels="0-3", steps=3, guidance=2.0, seed=5)
    auto = main.autoguide(weaker).sample(4, labels="0-3", steps=3, guidance=2.0, seed=5)
    assert "by" in repr(main) and not np.array_equal(plain.images, auto.images)
    assert np.array_equal(
        main.sample(4, labels="0-3", steps=3, guidance=1.0, seed=5).images,
        main.autoguide(None).sample(4, labels="0-3", steps=3, guidance=1.0, seed=5).images,
    )
    assert np.array_equal(main.sample(4, labels="0-3", steps=3, guidance=2.0, seed=5).images, plain.images)
    with pytest.raises(UserError, match="cannot guide"):
        main.autoguide(load("ldm"))


def test_sample_guide_flag_autoguides_and_a_wrong_guide_is_one_sentence(tmp_path, capsys):
    npz = tmp_path / "a.npz"
    assert (
        main(
            [
                "sample",
                "ddpm-cond",
                "--guide",
                "ddpm-cond",
                "--n",
                "2",
                "--steps",
                "2",
                "--guidance",
                "3",
                "--npz",
                str(npz),
                "--no-progress",
            ]
        )
        == 0
    )
    # the model guiding itself is no guidance: the plain conditional digits
    plain = load("ddpm-cond").sample(2, steps=2, guidance=1.0)
    assert np.array_equal(np.load(npz)["images"], plain.images)
    assert main(["sample", "ddpm-cond", "--guide", "ldm", "--n", "2", "--npz", str(tmp_path / "b.npz")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "cannot guide" in err[0]
