"""The static page's JavaScript samplers (serve/samplers.js) against the package's own maths: vectors made here
from diffusion/ and torch's generator are checked by tests/js/samplers.test.js under `node --test`.

A toy network (the same formula in both languages) stands in for the model, so the samplers, grids, guidance,
projection and RePaint are pinned without ONNX: deterministic cases in float64 to 1e-9, cases that draw noise in
float32 (torch's float32 randn is what the page ports) to 1e-3: float32 rounding, amplified where a
step divides by a small sigma. MeanFlow's cases run MeanFlowProcess itself (its grid, its projection inherited
from the flow's) and pin the network's time and interval inputs bit for bit, in float32 too (the pipeline's
dtype). Skipped where node is missing.
"""

import json
import math
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mnist_diffusion.batches import step_seed
from mnist_diffusion.config import DiffusionConfig, SampleConfig
from mnist_diffusion.diffusion import flow, samplers
from mnist_diffusion.diffusion.denoiser import Denoiser
from mnist_diffusion.diffusion.inpaint import projection, sample_repaint
from mnist_diffusion.diffusion.process import make_process
from mnist_diffusion.diffusion.schedule import make_schedule, timestep_grid
from mnist_diffusion.diffusion.steps import chain

ROOT = Path(__file__).resolve().parents[1]
NODE = shutil.which("node")
D = 16  # values per toy sample: (1, 4, 4)


class ToyNet:
    """out = 0.8 tanh(x) cos(t / 700) + 0.05 (label + 1) P + 0.03 w + 0.2 sin(interval / 300), with
    P_j = sin(0.37 j): the JS test's toyNet. No labels is the "no label" class, as in the real network; `inputs`
    records the time and interval inputs of each call."""

    def __init__(self, num_classes=10, guidance_input=False):
        self.num_classes, self.guidance_input = num_classes, guidance_input
        self.inputs = []

    def __call__(self, x, t, labels=None, guidance=None, interval=None):
        b = x.shape[0]
        if labels is None and self.num_classes:
            labels = torch.full((b,), self.num_classes)
        if interval is not None:
            self.inputs.append([t.tolist(), interval.tolist()])
        pattern = torch.sin(torch.arange(D, dtype=x.dtype) * 0.37)
        out = 0.8 * torch.tanh(x.reshape(b, -1)) * torch.cos(t.to(x.dtype)[:, None] / 700)
        if labels is not None:
            out = out + 0.05 * (labels[:, None].to(x.dtype) + 1) * pattern
        if guidance is not None:
            out = out + 0.03 * guidance[:, None].to(x.dtype)
        if interval is not None:
            out = out + 0.2 * torch.sin(interval.to(x.dtype)[:, None] / 300)
        return out.reshape(x.shape)


def tutorial_net(x):
    return 0.9 * torch.tanh(x) + 0.05 * torch.sin(torch.arange(D, dtype=x.dtype) * 0.37).reshape(1, 1, 4, 4)


def _sample_case(name, process="ddpm", sampler="ddim", steps=4, prediction="eps", dtype=torch.float64, **kw):
    """Run one sampler in Python and return the case the JS test replays."""
    batch, labels, guidance = kw.get("batch", 2), kw.get("labels"), kw.get("guidance", 1.0)
    x = torch.randn(batch, 1, 4, 4, generator=torch.Generator().manual_seed(kw.get("seed", 0)), dtype=dtype)
    gen_seed = kw.get("generator_seed")
    generator = None if gen_seed is None else torch.Generator().manual_seed(gen_seed)
    frames = []

    def record(step):
        frames.append([step["i"], float(step["t"]), step.get("attempt", 0)])

    known = mask = None
    if kw.get("inpaint"):
        known = torch.tanh(torch.linspace(-2, 2, D, dtype=dtype)).reshape(1, 1, 4, 4)
        mask = (torch.arange(D) % 3 == 0).to(dtype).reshape(1, 1, 4, 4)

    def paste(x0):
        return mask * known + (1 - mask) * x0

    schedule, net = None, ToyNet(10, kw.get("guidance_input", False))
    label_tensor = None if labels is None else torch.tensor(labels)
    if process == "meanflow":
        walk = make_process(DiffusionConfig(kind="meanflow", prediction="velocity"))
        edit = None if known is None else walk.projection(paste)
        settings = SampleConfig(sampler="meanflow", steps=steps, shift=kw.get("shift", 1.0))
        out = walk.sample(net, x, settings, label_tensor, generator, chain(edit, record))
    elif process == "tutorial":
        edit = None
        if known is not None:

            def edit(step):  # TutorialProcess.projection
                left = step["steps"] - step["i"] - 1
                return step["x_t"] + (paste(step["x0"]) - step["x0"]) / left if left else None

        out = samplers.sample_tutorial(tutorial_net, x, steps, chain(edit, record))
    else:
        schedule = flow.FlowPath() if process == "flow" else make_schedule(kw.get("schedule", "linear"), 1000)
        denoiser = Denoiser(
            net,
            schedule,
            prediction,
            labels=label_tensor,
            guidance=guidance,
            guidance_interval=kw.get("interval"),
        )
        edit = None if known is None else projection(schedule, paste)
        callback = chain(edit, record)
        if process == "flow":
            walk = samplers.get(sampler).function_for("flow")
            out = walk(denoiser, x, flow.flow_grid(steps, kw.get("shift", 1.0)), generator=generator, callback=callback)
        else:
            grid = timestep_grid(1000, steps, kw.get("spacing", "trailing"))
            if kw.get("resample", 1) > 1:
                out = sample_repaint(denoiser, x, grid, kw["resample"], 1.0, generator, callback)
            else:
                extra = {"eta": kw.get("eta", 0.0)} if sampler == "ddim" else {}
                out = samplers.get(sampler).function(denoiser, x, grid, generator=generator, callback=callback, **extra)
    return {
        "name": name,
        "process": process,
        "sampler": sampler,
        "steps": steps,
        "prediction": prediction,
        "schedule": kw.get("schedule", "linear"),
        "timesteps": 1000,
        "spacing": kw.get("spacing", "trailing"),
        "shift": kw.get("shift", 1.0),
        "eta": kw.get("eta", 0.0),
        "classes": 10,
        "labels": labels,
        "guidance": guidance,
        "guidance_input": kw.get("guidance_input", False),
        "interval": kw.get("interval"),
        "batch": batch,
        "dims": D,
        "resample": kw.get("resample", 1),
        "generator_seed": gen_seed,
        "known": None if known is None else known.flatten().tolist(),
        "mask": None if mask is None else mask.flatten().tolist(),
        "x": x.flatten().tolist(),
        "expected": out.flatten().tolist(),
        "frames": frames,
        "float32": dtype == torch.float32,
        "inputs": net.inputs,
        "tolerance": 1e-9 if dtype == torch.float64 else 1e-3,
    }


def make_vectors() -> dict:
    randn = []
    for seed, n in [(0, 784), (5, 784), (2**33 + 7, 784), (123456789, 100), (2**40, 3136)]:
        g = torch.Generator().manual_seed(seed)
        randn.append({"seed": str(seed), "n": n, "draws": [torch.randn(n, generator=g).tolist() for _ in range(2)]})
    g = torch.Generator().manual_seed(step_seed(9, 0))
    randn.append(
        {"seed": str(step_seed(9, 0)), "n": 784, "uniform": True, "draws": [torch.rand(784, generator=g).tolist()]}
    )
    seeds = [*range(40), 2**32 - 1, 2**32, 2**40, 2**40 - 3]
    grids = [
        {"timesteps": t, "steps": s, "spacing": sp, "grid": timestep_grid(t, s, sp).tolist()}
        for t in (1000, 50)
        for s in (1, 2, 3, 7, 8, 16, 20, 50)
        for sp in ("leading", "linspace", "trailing")
        if s <= t
    ]
    grids += [{"steps": s, "shift": sh, "grid": flow.flow_grid(s, sh)} for s in (1, 2, 5) for sh in (1.0, 3.0)]
    alpha_bar = []
    for name in ("linear", "cosine"):
        for timesteps in (1000, 100):
            schedule = make_schedule(name, timesteps)
            ts = [0, 1, 7.25, timesteps / 2 + 0.5, timesteps - 1.5, timesteps - 1]
            alpha_bar.append(
                {
                    "schedule": name,
                    "timesteps": timesteps,
                    "ts": ts,
                    "values": [schedule.alpha_bar(torch.tensor(t)).item() for t in ts],
                }
            )
    f32 = torch.float32
    samples = [
        _sample_case("ddim, eps, unconditional label", sampler="ddim"),
        _sample_case(
            "ddim 2 steps, v, a distilled student's guidance",
            steps=2,
            prediction="v",
            labels=[3, 7],
            guidance=1.5,
            guidance_input=True,
        ),
        _sample_case("ddim, x0, classifier-free guidance", prediction="x0", labels=[1, 9], guidance=1.7),
        _sample_case(
            "ddim, linspace, cosine, guidance interval",
            spacing="linspace",
            schedule="cosine",
            labels=[4, 4],
            guidance=3.0,
            interval=(0.5, 5.0),
            steps=6,
        ),
        _sample_case("dpmpp_2m, eps, guidance", sampler="dpmpp_2m", steps=8, labels=[0, 5], guidance=1.35),
        _sample_case("dpmpp_2m, leading, 3 steps", sampler="dpmpp_2m", steps=3, spacing="leading"),
        _sample_case("heun (VP), v", sampler="heun", steps=5, prediction="v", labels=[2, 8], guidance=2.0),
        _sample_case("ddim, eta 0.5", eta=0.5, generator_seed=step_seed(3, 0), dtype=f32),
        _sample_case("ddpm ancestral", sampler="ddpm", steps=6, generator_seed=step_seed(11, 0), dtype=f32),
        _sample_case(
            "projection, ddim, student", steps=2, prediction="v", guidance_input=True, guidance=1.0, inpaint=True
        ),
        _sample_case("projection, dpmpp_2m", sampler="dpmpp_2m", steps=5, inpaint=True),
        _sample_case(
            "RePaint x3 with projection",
            steps=5,
            resample=3,
            inpaint=True,
            generator_seed=7919,
            dtype=f32,
            labels=[6, 6],
            guidance=1.35,
        ),
        _sample_case("flow euler, velocity", process="flow", sampler="euler", steps=4, prediction="velocity"),
        _sample_case(
            "flow heun, shift 3, guidance",
            process="flow",
            sampler="heun",
            steps=3,
            shift=3.0,
            prediction="velocity",
            labels=[1, 2],
            guidance=2.0,
        ),
        _sample_case(
            "flow midpoint, projection",
            process="flow",
            sampler="midpoint",
            steps=3,
            prediction="velocity",
            inpaint=True,
        ),
        _sample_case("meanflow, 1 step (one pass)", process="meanflow", sampler="meanflow", steps=1, labels=[3, 7]),
        _sample_case("meanflow, 2 steps, no label", process="meanflow", sampler="meanflow", steps=2),
        _sample_case(
            "meanflow, 3 steps, shift 3, projection",
            process="meanflow",
            sampler="meanflow",
            steps=3,
            shift=3.0,
            labels=[1, 2],
            inpaint=True,
        ),
        _sample_case(
            "meanflow, 5 steps, float32", process="meanflow", sampler="meanflow", steps=5, labels=[0, 9], dtype=f32
        ),
        _sample_case("tutorial", process="tutorial", sampler="tutorial", steps=5),
        _sample_case("tutorial, projection", process="tutorial", sampler="tutorial", steps=5, inpaint=True),
    ]
    return {
        "randn": randn,
        "digits": {
            "seeds": [str(s) for s in seeds],
            "classes": 10,
            "digits": [random.Random(s).randrange(10) for s in seeds],
        },
        "grids": grids,
        "alpha_bar": alpha_bar,
        "samples": samples,
    }


def test_the_vectors_are_not_trivial():
    vectors = make_vectors()
    for case in vectors["samples"]:
        moved = max(abs(a - b) for a, b in zip(case["x"], case["expected"]))
        assert moved > 0.05 and all(math.isfinite(v) for v in case["expected"]), case["name"]
        assert case["frames"], case["name"]
        if case["process"] == "meanflow":  # one network pass a step, every interval the step's
            assert len(case["inputs"]) == case["steps"] and all(i[1][0] > 0 for i in case["inputs"]), case["name"]
    assert len(set(vectors["digits"]["digits"])) == 10


@pytest.mark.skipif(NODE is None, reason="node is not installed (apt-get install nodejs)")
def test_the_javascript_samplers_match_the_python_ones(tmp_path):
    path = tmp_path / "vectors.json"
    path.write_text(json.dumps(make_vectors()))
    run = subprocess.run(
        [NODE, "--test", str(ROOT / "tests" / "js" / "samplers.test.js")],
        env={"VECTORS": str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# fail 0" in run.stdout and "# pass 0" not in run.stdout
