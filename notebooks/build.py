"""The notebooks from their one source: each NN_name.py here is a jupytext percent script (`# %%` code cells,
`# %% [markdown]` prose) and NN_name.ipynb is derived from it. The Korean edition of notebook 01 is the English
script's code with the markdown cells of 01_seed_retold_ko.md in place of the English ones.

    python notebooks/build.py sync                       # write each .ipynb whose cells differ from its source
    python notebooks/build.py run [--tiny] [NAME ...]    # execute them and store the executed .ipynb

The stored .ipynb are executed at full size, so the docs render them with their outputs and figures (`make
notebooks` runs them all; a few minutes each on 2 cores). `--tiny` sets MNIST_DIFFUSION_NOTEBOOK_SIZE=tiny, which
shrinks every N and step count so a notebook runs in seconds (what tests/test_notebooks.py does), and writes the
executed copies under out/notebooks/tiny instead. MNIST_DIFFUSION_NOTEBOOK_FIGURES (`--figures`) is where the
notebooks write their figures as files (default out/notebooks).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat

HERE = Path(__file__).resolve().parent
SOURCES = sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))
# edition -> (source script, markdown cells in the edition's language)
TRANSLATIONS = {"01_seed_retold_ko.ipynb": ("01_seed_retold.py", "01_seed_retold_ko.md")}
CELL_SEPARATOR = "<!-- cell -->"


def from_source(path: Path) -> nbformat.NotebookNode:
    """The notebook a percent script describes, without outputs, with stable cell ids."""
    nb = jupytext.read(path, fmt="py:percent")
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    for i, cell in enumerate(nb.cells):
        cell.metadata = {}
        cell["id"] = f"cell-{i:02d}"
    return nb


def translated(nb: nbformat.NotebookNode, cells_file: Path) -> nbformat.NotebookNode:
    """`nb` with its markdown cells replaced, in order, by those of `cells_file`; code cells and outputs kept."""
    texts = [t.strip() for t in cells_file.read_text().split(CELL_SEPARATOR)[1:]]
    markdown = [c for c in nb.cells if c.cell_type == "markdown"]
    if len(texts) != len(markdown):
        raise SystemExit(f"{cells_file.name} has {len(texts)} markdown cells and its source {len(markdown)}; "
                         "translate the cells that were added or removed.")
    out = copy.deepcopy(nb)
    for cell, text in zip((c for c in out.cells if c.cell_type == "markdown"), texts):
        cell.source = text
    return out


def notebooks() -> dict[str, nbformat.NotebookNode]:
    """Every notebook's name and its cells from the sources, without outputs."""
    out = {p.with_suffix(".ipynb").name: from_source(p) for p in SOURCES}
    for name, (source, cells_file) in TRANSLATIONS.items():
        out[name] = translated(out[Path(source).with_suffix(".ipynb").name], HERE / cells_file)
    return out


def cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def sync() -> list[str]:
    """Write each .ipynb whose cells differ from its source (without outputs: run it again); the names written."""
    written = []
    for name, nb in notebooks().items():
        path = HERE / name
        if not path.exists() or cells(nbformat.read(path, as_version=4)) != cells(nb):
            nbformat.write(nb, path)
            written.append(name)
    return written


def execute(nb: nbformat.NotebookNode, timeout: int = 900) -> nbformat.NotebookNode:
    """Run `nb` top to bottom in a fresh kernel whose working folder is notebooks/ (outputs written into it)."""
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(HERE)}}).execute()
    return without_stderr(nb)


def without_stderr(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """`nb` without what its cells wrote to stderr: progress bars and warnings, which name this machine's paths."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
    return nb


def run(names=(), tiny: bool = False, figures: Path | None = None, timeout: int = 900) -> None:
    """Execute the notebooks from their sources; a translated edition takes its source's outputs, as its code is
    the same. Full size: stored here; tiny: under out/notebooks/tiny."""
    if tiny:
        os.environ["MNIST_DIFFUSION_NOTEBOOK_SIZE"] = "tiny"
    if figures is not None:
        os.environ["MNIST_DIFFUSION_NOTEBOOK_FIGURES"] = str(Path(figures).resolve())
    target = HERE.parent / "out" / "notebooks" / "tiny" if tiny else HERE
    target.mkdir(parents=True, exist_ok=True)
    wanted = set(names) or set(notebooks())
    sources = {p.with_suffix(".ipynb").name: p for p in SOURCES}
    for name, path in sources.items():
        editions = [e for e, (source, _) in TRANSLATIONS.items() if source == path.name and e in wanted]
        if name not in wanted and not editions:
            continue
        started = time.perf_counter()
        nb = execute(from_source(path), timeout)
        print(f"{name}: ran in {time.perf_counter() - started:.0f} s", flush=True)
        nbformat.write(nb, target / name)
        for edition in editions:
            nbformat.write(translated(nb, HERE / TRANSLATIONS[edition][1]), target / edition)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("sync", help="write each .ipynb whose cells differ from its source")
    r = sub.add_parser("run", help="execute the notebooks and store them executed")
    r.add_argument("names", nargs="*", help="notebook file names (default: all)")
    r.add_argument("--tiny", action="store_true", help="the test suite's quick size; executed copies under out/")
    r.add_argument("--figures", type=Path, help="where the figures go (default out/notebooks)")
    args = p.parse_args(argv)
    if args.command == "sync":
        for name in sync():
            print("wrote", name)
        return 0
    unknown = set(args.names) - set(notebooks())
    if unknown:
        p.error(f"no notebook named {', '.join(sorted(unknown))}; the notebooks: {', '.join(sorted(notebooks()))}")
    run(args.names, args.tiny, args.figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
