"""ONNX export (`mnist-diffusion export`, `export.onnx`) and the refusals of `export` and `export-web`: the networks
come out with the inputs they take and a dynamic batch, ONNX Runtime agrees with PyTorch, and a model that cannot
be exported, an output folder that is not empty and a missing npm are one sentence each, exit 2, nothing written."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mnist_diffusion.cli import main
from mnist_diffusion.config import load_run_config
from mnist_diffusion.errors import UserError
from mnist_diffusion.models import build_model
from mnist_diffusion.pipeline import Pipeline, load
from mnist_diffusion.recipes import get_recipe

onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")
pytest.importorskip("onnxscript", reason="the export extra (onnxscript) is not installed")

from mnist_diffusion.export import onnx as export  # noqa: E402
from mnist_diffusion.export import web  # noqa: E402


def _tiny(recipe: str, **model) -> Pipeline:
    cfg = get_recipe(recipe).to_dict()
    small = {"channels": [8, 16], "embed_dim": 16, "groups": 4, "mid_attention": False}
    cfg = load_run_config(
        {**cfg, "model": {**cfg["model"], **(small if cfg["model"]["kind"] == "unet" else {}), **model}}
    )
    torch.manual_seed(0)
    net = build_model(cfg.model)
    if hasattr(net, "out_conv"):
        with torch.no_grad():
            net.out_conv.weight.normal_(0, 0.05)  # a fresh U-Net predicts 0 everywhere
    return Pipeline(cfg, net.eval(), "cpu")


def _run(session, inputs: dict) -> np.ndarray:
    return session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]


@pytest.mark.parametrize(
    ("recipe", "model", "inputs"),
    [
        ("ddpm-cond", {}, ("x", "t", "labels")),
        ("ddpm-cond", {"guidance_input": True}, ("x", "t", "labels", "guidance")),
        ("ddpm", {}, ("x", "t")),
        ("seed", {}, ("x",)),  # the tutorial's BasicUNet
    ],
)
def test_the_network_comes_out_with_its_inputs_a_dynamic_batch_and_torchs_outputs(tmp_path, recipe, model, inputs):
    pipe = _tiny(recipe, **model)
    result = export.export_onnx(pipe, tmp_path / "net.onnx")
    assert result.inputs == inputs and result.max_abs_diff <= export.TOLERANCE
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert tuple(i.name for i in session.get_inputs()) == inputs
    assert session.get_inputs()[0].shape[0] == "batch"
    for batch in (1, 5):  # other batch sizes than the check's
        given = export.random_inputs(pipe.config, batch, torch.Generator().manual_seed(batch))
        given = {k: given[k] for k in inputs}
        with torch.no_grad():
            expected = (pipe.net(given["x"]) if inputs == ("x",) else pipe.net(*given.values())).numpy()
        got = _run(session, given)
        assert got.shape == expected.shape and np.abs(got - expected).max() <= export.TOLERANCE
        assert np.abs(expected).max() > 1e-3  # the network says something, so the comparison means something


def test_a_bf16_pipeline_exports_its_fp32_weights(tmp_path, tiny_guided_pipeline):
    fp32, bf16 = tiny_guided_pipeline("fp32"), tiny_guided_pipeline("bf16")
    a = export.export_onnx(fp32, tmp_path / "a.onnx").path.read_bytes()
    b = export.export_onnx(bf16, tmp_path / "b.onnx").path.read_bytes()
    assert a == b


def test_pipeline_export_onnx(tmp_path, tiny_guided_pipeline):
    pipe = tiny_guided_pipeline()
    if not hasattr(pipe, "export_onnx"):
        pytest.skip("Pipeline.export_onnx is not in this checkout")
    assert pipe.export_onnx(tmp_path / "m.onnx").inputs == ("x", "t", "labels")


def test_the_cli_prints_the_check_and_refuses_what_cannot_be_exported(tmp_path, capsys):
    assert main(["export", "ddpm-cond-fast", "--out", str(tmp_path / "fast.onnx")]) == 0
    out = capsys.readouterr().out
    assert "inputs x, t, labels, guidance" in out and "max |onnxruntime - torch|" in out
    for argv, words in [
        (["export", "ldm", "--out", str(tmp_path / "ldm.onnx")], "latent model"),
        (["export", "ddpm-cond", "--out", str(tmp_path / "x.pt")], ".onnx"),
        (["export", "ddpm-cond", "--format", "tflite", "--out", str(tmp_path / "x.onnx")], "invalid choice"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fast.onnx"]


def test_refusals_name_what_can_be_exported():
    ldm = load("ldm")
    assert "decoder" in export.refusal(ldm.config) and "BasicUNet" in export.refusal(ldm.config)
    assert "autoencoder" in export.refusal(ldm.config, "autoencoder")
    with pytest.raises(UserError, match="cannot be exported: a latent model"):
        export.export_onnx(ldm, "ldm.onnx")


def test_export_web_refuses_a_folder_that_is_not_empty_and_a_missing_npm(tmp_path, capsys):
    full = tmp_path / "site"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert main(["export-web", "ddpm-cond-fast", "--out", str(full)]) == 2
    assert "not empty" in capsys.readouterr().err and (full / "keep.txt").read_text() == "mine"
    assert main(["export-web", "ldm", "--out", str(tmp_path / "new"), "--npm-cache", str(tmp_path / "c")]) == 2
    assert "latent model" in capsys.readouterr().err and not (tmp_path / "new").exists()
    # no npm on the PATH and nothing cached: one sentence, nothing written
    code = (
        "import sys; from mnist_diffusion.cli import main; "
        f"sys.exit(main(['export-web', 'ddpm-cond-fast', '--out', {str(tmp_path / 'out')!r}, "
        f"'--npm-cache', {str(tmp_path / 'empty-cache')!r}]))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PATH": str(tmp_path)}, capture_output=True, text=True
    )
    assert run.returncode == 2 and "npm, which is not installed" in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_the_static_page_describes_a_model_as_the_served_page_does():
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from mnist_diffusion.serve.models import Models

    served = {m["name"]: m for m in Models(["ddpm-cond-fast", "ddpm-cond"]).describe()}
    for name in served:
        static = web.describe(name, load(name), "models/x.onnx")
        assert {k: static[k] for k in served[name]} == served[name]
        assert web.web_refusal(load(name)) is None
