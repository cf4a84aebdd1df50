"""A model's fp32 network as an ONNX file, checked against PyTorch with ONNX Runtime after it is written.

The file holds the network alone, with the inputs its config gives it (the noise process, the sampler and the
guidance stay in the code that calls it, here or in the static page's samplers.js):

    x         float32 (B, C, H, W)    the noisy sample (the tutorial's BasicUNet: its only input)
    t         float32 (B,)            the network's time input (a DDPM index, or 1000 t on a flow's path)
    labels    int64 (B,)              class-conditional models: 0-9, or num_classes for "no label"
    guidance  float32 (B,)            a distilled student's guidance scale
    interval  float32 (B,)            a MeanFlow model's interval (t - r), on the time input's scale
    out       float32 (B, C, H, W)    what the network predicts (eps, x0, v or a velocity, as configured)

B is dynamic. The run's config is kept in the file's metadata (`mnist_diffusion.config`), so a reader knows the
prediction type and schedule without this package.

Needs the `export` extra (onnx, onnxscript for torch's exporter, onnxruntime for the check).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mnist_diffusion.errors import UserError
from mnist_diffusion.files import atomic_write

OPSET = 18
# The largest |ONNX Runtime - PyTorch| accepted on random inputs: both run the same fp32 graph, and what differs
# is the order of float sums inside convolutions and attention, far below a pixel's 1/127.5 in [-1, 1].
TOLERANCE = 1e-4
CHECK_BATCHES = (1, 3)  # two batch sizes: the batch must really be dynamic
EXTRA = "pip install 'mnist-diffusion[export]'"


@dataclasses.dataclass(frozen=True)
class OnnxExport:
    """What `export_onnx` wrote: the file, its inputs in order, and how far ONNX Runtime's outputs were from
    PyTorch's on random inputs (None when not checked)."""

    path: Path
    inputs: tuple[str, ...]
    max_abs_diff: float | None
    tolerance: float = TOLERANCE

    def __str__(self) -> str:
        checked = (
            "not checked"
            if self.max_abs_diff is None
            else f"max |onnxruntime - torch| = {self.max_abs_diff:.2e} (tolerance {self.tolerance:g})"
        )
        return f"{self.path}: inputs {', '.join(self.inputs)}; {checked}"


def refusal(config, kind: str | None = None) -> str | None:
    """Why a model of this config cannot be exported (one sentence), or None if it can. `kind`: what `load` gave
    for it when not a sampling pipeline ('autoencoder')."""
    exportable = (
        "the pixel models (a U-Net of a DDPM, flow or MeanFlow run, a distilled student, the tutorial's BasicUNet)"
    )
    if kind == "autoencoder" or config.model.kind == "autoencoder":
        return f"an autoencoder samples nothing, so it has no network to export alone; export {exportable}."
    if config.latent is not None:
        return (
            "a latent model's digits need its autoencoder's decoder (and its encoder to complete a drawing) beside "
            f"the network, which this export does not write; export {exportable}."
        )
    if config.model.kind not in ("unet", "basic_unet"):
        return f"a {config.model.kind!r} network cannot be exported; export {exportable}."
    return None


def input_names(config) -> tuple[str, ...]:
    """The ONNX inputs of a model's network, in the order its forward takes them."""
    model = config.model
    if model.kind == "basic_unet":
        return ("x",)
    names = ["x", "t"]
    if model.num_classes:
        names.append("labels")
    if model.guidance_input:
        names.append("guidance")
    if getattr(model, "interval_input", False):
        names.append("interval")
    return tuple(names)


class _Signature(nn.Module):
    """The network with its inputs named and positional, as the ONNX graph takes them."""

    def __init__(self, net: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.net, self.names = net, names

    def forward(self, x, t=None, labels=None, guidance=None, interval=None) -> torch.Tensor:
        if self.names == ("x",):
            return self.net(x)
        more = {"interval": interval} if interval is not None else {}  # a net without the input takes no keyword
        return self.net(x, t, labels, guidance, **more)


def random_inputs(config, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Inputs of the right shapes and ranges for a network of this config: noise, times in the network's range,
    labels including "no label", guidance 0-4 and intervals up to the time."""
    model = config.model
    x = torch.randn(batch, model.in_channels, 28, 28, generator=generator)
    out = {"x": x}
    names = input_names(config)
    if "t" in names:
        out["t"] = torch.rand(batch, generator=generator) * 999
    if "labels" in names:
        out["labels"] = torch.randint(0, model.num_classes + 1, (batch,), generator=generator)
    if "guidance" in names:
        out["guidance"] = torch.rand(batch, generator=generator) * 4
    if "interval" in names:
        out["interval"] = torch.rand(batch, generator=generator) * out["t"]
    return out


def _needs(module: str) -> None:
    try:
        __import__(module)
    except ModuleNotFoundError:
        raise UserError(f"exporting to ONNX needs the {module} package, which is not installed; {EXTRA}.") from None


def export_onnx(pipe, path: str | Path, check: bool = True) -> OnnxExport:
    """Write `pipe`'s network in fp32 as ONNX to `path` (dynamic batch; `input_names` in order) and, with `check`,
    run it in ONNX Runtime on random inputs at two batch sizes against PyTorch: a difference past `TOLERANCE` is
    refused (the file is not kept). A model that cannot be exported (`refusal`) is refused before any work."""
    config = pipe.config
    if (why := refusal(config)) is not None:
        raise UserError(f"{pipe.name} cannot be exported: {why}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise UserError(f"the ONNX file's name must end in .onnx, got {path.name!r}.")
    for module in ("onnx", "onnxscript") + (("onnxruntime",) if check else ()):
        _needs(module)
    import onnx

    names = input_names(config)
    net = _fp32_copy(pipe)
    wrapper = _Signature(net, names).eval()
    example = random_inputs(config, 2, torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=4096)
    shapes = {n: {0: batch} for n in names}
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet("torch.onnx"):
        warnings.simplefilter("ignore")  # the exporter's own notes (deprecations, torchvision), not the user's business
        program = torch.onnx.export(
            wrapper,
            (),
            kwargs={n: example[n] for n in names},
            input_names=list(names),
            output_names=["out"],
            dynamic_shapes=shapes,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    model = program.model_proto
    onnx.helper.set_model_props(model, {"mnist_diffusion.config": json.dumps(config.to_dict())})
    data = model.SerializeToString()
    diff = check_onnx(data, net, config) if check else None
    if diff is not None and not diff <= TOLERANCE:
        raise UserError(
            f"the ONNX file of {pipe.name} differs from PyTorch by {diff:.2e} on random inputs (more than "
            f"{TOLERANCE:g}); it was not written."
        )
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return OnnxExport(path, names, diff)


@contextlib.contextmanager
def _quiet(logger: str):
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _fp32_copy(pipe) -> nn.Module:
    """The network in fp32 on the CPU, NCHW: a bf16 pipeline's weights as loaded (its `save` keeps them)."""
    from mnist_diffusion.models import build_model

    net = build_model(pipe.config.model)
    weights = getattr(pipe, "_fp32_weights", None) or pipe.net.state_dict()
    net.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in weights.items()})
    return net.eval()


def check_onnx(data: bytes, net: nn.Module, config) -> float:
    """max |ONNX Runtime - PyTorch| of the exported graph `data` over random inputs at `CHECK_BATCHES`."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    names = input_names(config)
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    for batch in CHECK_BATCHES:
        inputs = random_inputs(config, batch, generator)
        with torch.no_grad():
            expected = _Signature(net, names)(**inputs).numpy()
        got = session.run(None, {n: inputs[n].numpy() for n in names})[0]
        if got.shape != expected.shape:
            return float("inf")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst
