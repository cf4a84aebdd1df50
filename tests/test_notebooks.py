"""Each notebook has one source, a percent script in notebooks/: the stored .ipynb is exactly its cells, executed at
full size (what the docs render), and every notebook runs top to bottom at the tiny size the test suite affords."""

import importlib.util
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
spec = importlib.util.spec_from_file_location("notebook_build", NOTEBOOKS / "build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)
DERIVED = build.notebooks()


def _stored(name):
    return nbformat.read(str(NOTEBOOKS / name), as_version=4)


def _setup_output(nb) -> str:
    """What the notebook's first code cell (the setup) printed."""
    setup = next(c for c in nb.cells if c.cell_type == "code")
    return "".join(o.get("text", "") for o in setup.get("outputs", []))


def test_every_stored_notebook_is_its_source():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(DERIVED)
    for name, nb in DERIVED.items():
        assert build.cells(_stored(name)) == build.cells(nb), (
            f"{name} differs from its source; run `python notebooks/build.py sync`, then `make notebooks`"
        )


@pytest.mark.parametrize("name", sorted(DERIVED))
def test_stored_notebook_is_executed_at_full_size(name):
    nb = _stored(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{name} is not executed; run `make notebooks`"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert "full run" in _setup_output(nb)
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), f"{name} shows no figure"


def test_the_korean_edition_runs_the_english_code_with_korean_prose():
    def code(nb):
        return [c.source for c in nb.cells if c.cell_type == "code"]

    english, korean = DERIVED["01_seed_retold.ipynb"], DERIVED["01_seed_retold_ko.ipynb"]
    assert code(english) == code(korean)
    texts = [c.source for c in korean.cells if c.cell_type == "markdown"]
    assert len(texts) == len([c for c in english.cells if c.cell_type == "markdown"])
    assert all(any("\uac00" <= ch <= "\ud7a3" for ch in t) for t in texts)  # every markdown cell is in Hangul


def test_a_translation_with_a_cell_missing_is_refused(tmp_path):
    cells = (NOTEBOOKS / "01_seed_retold_ko.md").read_text().split(build.CELL_SEPARATOR)
    short = tmp_path / "short.md"
    short.write_text(build.CELL_SEPARATOR.join(cells[:-1]))
    with pytest.raises(SystemExit, match="translate the cells"):
        build.translated(DERIVED["01_seed_retold.ipynb"], short)


# Notebooks whose every output, stderr included, must be free of warnings (the first a learner opens).
WITHOUT_WARNINGS = ("01_seed_retold.ipynb", "01_seed_retold_ko.ipynb")


def _warnings(nb) -> list[str]:
    """The lines of `nb`'s outputs (stdout and stderr) that name a warning."""
    text = "".join(
        o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "stream"
    )
    return [line for line in text.splitlines() if "Warning" in line or "warnings.warn" in line]


@pytest.mark.parametrize("name", sorted(DERIVED))
def test_notebook_runs_at_tiny_size(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIFFUSION_NOTEBOOK_SIZE", "tiny")
    monkeypatch.setenv("MNIST_DIFFUSION_NOTEBOOK_FIGURES", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    nb = nbformat.from_dict(DERIVED[name])
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()  # build.execute would drop stderr, where warnings go
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    if name in WITHOUT_WARNINGS:
        assert not _warnings(nb), f"{name} printed warnings: {_warnings(nb)}"
    assert list(tmp_path.rglob("*.png")), f"{name} wrote no figures"
    assert "tiny run" in _setup_output(nb)
