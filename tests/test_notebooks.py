"""The notebooks run top to bottom (at the tiny size the test suite can afford) and are stored without outputs,
exactly as notebooks/build.py writes them."""

import importlib.util
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
spec = importlib.util.spec_from_file_location("notebook_build", NOTEBOOKS / "build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)


def test_every_notebook_is_built_and_stored_without_outputs():
    stored = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert stored == sorted(build.NOTEBOOKS)
    for name, (_, cells, language) in build.NOTEBOOKS.items():
        nb = nbformat.read(str(NOTEBOOKS / name), as_version=4)
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
        expected = build.notebook(cells, language)
        assert [c.source for c in nb.cells] == [c.source for c in expected.cells], \
            f"{name} differs from notebooks/build.py; run `python notebooks/build.py write`"


def test_the_korean_edition_runs_the_same_code():
    def code(name):
        return [c.source for c in nbformat.read(str(NOTEBOOKS / name), as_version=4).cells if c.cell_type == "code"]

    english, korean = code("01_seed_retold.ipynb"), code("01_seed_retold_ko.ipynb")
    assert english == korean
    texts = [c.source for c in nbformat.read(str(NOTEBOOKS / "01_seed_retold_ko.ipynb"), as_version=4).cells
             if c.cell_type == "markdown"]
    assert all(any("\uac00" <= ch <= "\ud7a3" for ch in t) for t in texts)  # every markdown cell is in Hangul


@pytest.mark.parametrize("name", sorted(build.NOTEBOOKS))
def test_notebook_runs_at_tiny_size(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIFFUSION_NOTEBOOK_SIZE", "tiny")
    monkeypatch.setenv("MNIST_DIFFUSION_NOTEBOOK_FIGURES", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    nb = nbformat.read(str(NOTEBOOKS / name), as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    written = list(tmp_path.rglob("*.png"))
    assert written, f"{name} wrote no figures"
    setup = next(c for c in nb.cells if c.cell_type == "code")
    assert "tiny run" in "".join(o.get("text", "") for o in setup.outputs)
