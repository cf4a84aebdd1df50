"""The static edition of the page: one folder that any static server (GitHub Pages, `python -m http.server`)
serves, where the page runs the models itself. `build_site(pipes, out)` writes

    index.html     serve/page.html with the static edition's script tags (the same page as the served one)
    page.js        the front end, the served page's own (controls, drawing, slow motion, step-through)
    samplers.js    the samplers, schedules and random numbers of diffusion/ and batches.py, in JavaScript
    static.js      the engine: a denoising step in ONNX Runtime Web instead of the server's stream
    models.json    what the page offers of each model (the served page's /api/models and what samplers.js needs)
    models/*.onnx  each model's network (`export.onnx`, checked against PyTorch)
    ort/           ONNX Runtime Web's script and WebAssembly, from the npm package, pinned by version and hash

ONNX Runtime Web is fetched once with `npm pack` into a cache folder and copied from there: nothing is loaded
from another site when the page runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from mnist_diffusion.data.cache import cache_dir
from mnist_diffusion.diffusion import samplers
from mnist_diffusion.errors import UserError
from mnist_diffusion.export import page
from mnist_diffusion.export.onnx import export_onnx, input_names, refusal

ORT_PACKAGE = "onnxruntime-web"
ORT_VERSION = "1.30.0"
ORT_SHA256 = "d2228df7e4616bc3348bf504ee888f3bec43789a273f0a63f3e68d203ce3bf71"  # the npm tarball of that version
# The WebAssembly build alone (no WebGL/WebGPU): its script, the loader it imports and the binary.
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
SCRIPTS = ("samplers.js", "static.js", "page.js")  # after ort.wasm.min.js, in this order
# What samplers.js walks, by noise process; the registry's other samplers have no JavaScript port.
JS_SAMPLERS = {
    "ddpm": ("ddpm", "ddim", "dpmpp_2m", "heun"),
    "flow": ("euler", "heun", "midpoint"),
    "meanflow": ("meanflow",),
    "tutorial": ("tutorial",),
}
JS_SPACINGS = ("leading", "linspace", "trailing")
DRAWN_STROKES_STEPS = 50  # as the served page (serve/models.py): drawn strokes take more steps than erasures


def default_cache() -> Path:
    """Where ONNX Runtime Web is kept between builds: <the package's cache folder>/npm."""
    return cache_dir() / "npm"


def web_refusal(pipe) -> str | None:
    """Why the static page cannot run this model (one sentence), or None."""
    config = pipe.config
    if (why := refusal(config)) is not None:
        return why
    kind, sample = config.diffusion.kind, config.sample
    if kind not in JS_SAMPLERS:
        return f"the static page has no JavaScript sampler for a {kind!r} model yet; it runs {', '.join(JS_SAMPLERS)} models."
    if sample.sampler not in JS_SAMPLERS[kind]:
        return f"its sampler {sample.sampler!r} has no JavaScript port; the static page runs {', '.join(JS_SAMPLERS[kind])}."
    if kind == "ddpm" and sample.spacing not in JS_SPACINGS:
        return f"its {sample.spacing!r} timestep spacing has no JavaScript port; the static page takes {', '.join(JS_SPACINGS)}."
    return None


def describe(name: str, pipe, file: str) -> dict:
    """What the static page knows of a model: the fields of the served page's /api/models (serve/models.py) and
    what samplers.js needs to run it."""
    config = pipe.config
    kind, sample = config.diffusion.kind, config.sample
    distilled = config.distill is not None
    offered = [sample.sampler] if distilled else list(samplers.names(kind, for_any_model=True))
    offered = [s for s in offered if s in JS_SAMPLERS[kind]]
    can_resample = kind == "ddpm" and not distilled
    return {
        "name": name,
        "file": file,
        "kind": kind,
        "classes": pipe.num_classes,
        "sampler": sample.sampler,
        "steps": sample.steps,
        "inpaint_steps": pipe.inpaint_steps,
        "inpaint_resample": 3 if can_resample else 1,
        "drawn_steps": pipe.inpaint_steps if distilled else max(pipe.inpaint_steps, DRAWN_STROKES_STEPS),
        "guidance": sample.guidance if pipe.num_classes else 1.0,
        "samplers": offered,
        "resamplers": [s for s in offered if samplers.get(s).can_resample] if can_resample else [],
        "prediction": config.diffusion.prediction,
        "schedule": config.diffusion.schedule,
        "timesteps": config.diffusion.timesteps,
        "spacing": sample.spacing,
        "eta": sample.eta,
        "shift": getattr(sample, "shift", 1.0),
        "guidance_interval": None if sample.guidance_interval is None else list(sample.guidance_interval),
        "guidance_input": bool(config.model.guidance_input),
        "value_range": pipe.value_range,
        "noise": pipe.process.noise,
        "inputs": list(input_names(config)),
        "channels": config.model.in_channels,
        "size": config.model.in_channels * 28 * 28,
        "batch_size": 256 if config.model.guidance_input else 64,  # Pipeline.default_batch_size on a CPU
    }


def check_out(out: Path) -> None:
    """Refuse an output that exists and is not an empty folder (nothing in it is overwritten)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a file" if not out.is_dir() else "a folder that is not empty"
        raise UserError(f"{out} is {what}; give export-web a new or empty folder, so that nothing is overwritten.")


def onnxruntime_web(cache: Path, npm: str | None = None) -> Path:
    """The folder holding `ORT_FILES` of onnxruntime-web `ORT_VERSION`: from `cache`, or fetched with `npm pack`
    into it (the tarball checked against `ORT_SHA256`)."""
    folder = Path(cache) / f"{ORT_PACKAGE}-{ORT_VERSION}"
    if all((folder / f).is_file() for f in ORT_FILES):
        return folder
    npm = npm or shutil.which("npm")
    if npm is None:
        raise UserError(
            f"export-web fetches {ORT_PACKAGE} {ORT_VERSION} once with npm, which is not installed; install Node.js "
            f"and npm (e.g. apt-get install npm), or give --npm-cache a folder that already holds it."
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        run = subprocess.run(
            [npm, "pack", f"{ORT_PACKAGE}@{ORT_VERSION}", "--pack-destination", tmp, "--silent"],
            capture_output=True,
            text=True,
            timeout=900,
        )
        tarball = Path(tmp) / f"{ORT_PACKAGE}-{ORT_VERSION}.tgz"
        if run.returncode or not tarball.is_file():
            why = (run.stderr.strip().splitlines() or ["no tarball came back"])[-1]
            raise UserError(f"npm could not fetch {ORT_PACKAGE} {ORT_VERSION} ({why[:200]}).")
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        if digest != ORT_SHA256:
            raise UserError(f"npm's {ORT_PACKAGE} {ORT_VERSION} has sha256 {digest}, not the pinned {ORT_SHA256}.")
        unpacked = Path(tmp) / "files"
        with tarfile.open(tarball) as tar:
            for name in ORT_FILES:
                tar.extract(f"package/dist/{name}", unpacked, filter="data")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(unpacked / "package" / "dist", folder)
    return folder


def _file_name(name: str, taken: set[str]) -> str:
    """models/<a safe name>.onnx for a packaged name or a run directory, unique in the site."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).name).strip(".-") or "model"
    file, k = f"models/{stem}.onnx", 2
    while file in taken:
        file, k = f"models/{stem}-{k}.onnx", k + 1
    taken.add(file)
    return file


def build_site(pipes: list[tuple[str, object]], out: str | Path, cache: str | Path | None = None, npm=None) -> dict:
    """Write the static edition for `pipes` ((name, Pipeline) pairs, the first one the page opens at) into the new
    or empty folder `out`. Everything is checked before anything is written, and the site is built beside `out`
    and moved there when done. Returns {"out", "models" (what models.json lists), "checks" (each ONNX file's
    `OnnxExport`), "bytes" (the site's size)}."""
    out = Path(out)
    check_out(out)
    for name, pipe in pipes:
        if (why := web_refusal(pipe)) is not None:
            raise UserError(f"{name} cannot go on the static page: {why}")
    ort_folder = onnxruntime_web(Path(cache) if cache else default_cache(), npm)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        site = Path(tmp) / "site"
        (site / "ort").mkdir(parents=True)
        for name in ORT_FILES:
            shutil.copyfile(ort_folder / name, site / "ort" / name)
        described, checks, taken = [], [], set()
        for name, pipe in pipes:
            file = _file_name(name, taken)
            checks.append(export_onnx(pipe, site / file))
            checks[-1] = dataclasses.replace(checks[-1], path=out / file)  # where it will be
            described.append(describe(name, pipe, file))
        (site / "models.json").write_text(json.dumps({"models": described}, indent=1))
        scripts = {"ort/ort.wasm.min.js": (ort_folder / ORT_FILES[0]).read_bytes()}
        for name in SCRIPTS:
            scripts[name] = page.read(name)
            (site / name).write_bytes(scripts[name])
        (site / "index.html").write_text(page.with_scripts(scripts))
        size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(site, out)
    return {"out": out, "models": described, "checks": checks, "bytes": size}
