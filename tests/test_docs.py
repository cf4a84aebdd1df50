"""The docs are right: the site builds offline with `mkdocs build --strict` (no broken link), the examples in
docs/api.md and the public modules' docstrings run as written, and every command line and Python snippet in the
README and the docs pages names commands, options and calls that exist."""

import ast
import builtins
import doctest
import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import mnist_diffusion
import mnist_diffusion.api
import mnist_diffusion.pipeline
from mnist_diffusion.cli import UsageError, build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md"] + sorted(DOCS.glob("*.md"))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def test_api_page_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testfile(str(DOCS / "api.md"), module_relative=False, optionflags=FLAGS)
    assert result.attempted > 10 and result.failed == 0


@pytest.mark.parametrize("module", [mnist_diffusion.api, mnist_diffusion.pipeline])
def test_docstring_examples(module):
    assert doctest.testmod(module, optionflags=FLAGS).failed == 0


def _blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), flags=re.DOTALL | re.MULTILINE)


def _command_lines(path: Path) -> list[str]:
    """The `mnist-diffusion ...` commands of a page's bash blocks (continuations joined, comments dropped)."""
    found = []
    for block in _blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                for i, word in enumerate(words):
                    if word.endswith("mnist-diffusion") or (word == "mnist_diffusion" and words[i - 1] == "-m"):
                        found.append(words[i + 1 :])
                        break
    return found


def test_every_command_line_in_the_docs_parses():
    parser = build_parser()
    checked = 0
    for page in PAGES:
        for words in _command_lines(page):
            try:
                parser.parse_args(words)
            except (UsageError, SystemExit) as e:
                pytest.fail(f"{page.name}: `mnist-diffusion {' '.join(words)}` does not parse: {e}")
            checked += 1
    assert checked >= 30


# Names the README's and the pages' Python snippets use, and what they stand for.
SNIPPET_NAMES = {
    "mnist_diffusion": mnist_diffusion,
    "md": mnist_diffusion,
    "pipe": mnist_diffusion.Pipeline,
    "out": mnist_diffusion.SampleResult,
    "done": mnist_diffusion.SampleResult,
}


def _has(owner, name: str) -> bool:
    """A module's or class's attribute, a dataclass field or an attribute its methods set on `self`."""
    if hasattr(owner, name) or name in getattr(owner, "__annotations__", {}):
        return True
    return inspect.isclass(owner) and re.search(rf"self\.{name}\s*[:=]", inspect.getsource(owner)) is not None


def _check_call(owner, name: str, call: ast.Call | None, where: str) -> None:
    assert _has(owner, name), f"{where}: {getattr(owner, '__name__', owner)} has no {name!r}"
    target = getattr(owner, name, None)
    if call is None or not callable(target):
        return
    params = inspect.signature(target).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    for keyword in call.keywords:
        assert keyword.arg in params, f"{where}: {name}() takes no {keyword.arg}="


def test_python_snippets_use_names_that_exist():
    checked = 0
    for page in PAGES:
        for block in _blocks(page, "python"):
            if ">>>" in block:
                continue  # doctests run above
            tree = ast.parse(block)
            calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id in SNIPPET_NAMES
                ):
                    _check_call(SNIPPET_NAMES[node.value.id], node.attr, calls.get(id(node)), page.name)
                    checked += 1
    assert checked >= 10


def _free_names(tree: ast.AST) -> set[str]:
    """Names a snippet reads that it never binds (assigns, imports, defines or takes as a parameter)."""
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else read).add(node.id)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return read - bound - set(dir(builtins))


def test_python_snippets_read_no_name_from_nowhere():
    """Each page's snippets, read top to bottom, bind every name they use: `pipe.inpaint(images, mask)` with
    `images` defined nowhere would fail here."""
    for page in PAGES:
        seen: set[str] = set()
        for block in _blocks(page, "python"):
            if ">>>" in block:
                continue  # doctests run above
            tree = ast.parse(block)
            missing = _free_names(tree) - seen
            assert not missing, f"{page.name}: a snippet uses {sorted(missing)} without defining them"
            seen |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
                (a.asname or a.name).split(".")[0] for a in ast.walk(tree) if isinstance(a, ast.alias)
            }


def test_readme_is_short_and_keeps_the_headline_markers():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) < 10_000
    start, end = text.index("<!-- benchmarks:headline:start -->"), text.index("<!-- benchmarks:headline:end -->")
    assert start < end


def test_site_builds_offline_and_strict(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason=f"{module} is not installed (the `docs` extra)")
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    cli = (site / "cli" / "index.html").read_text()
    for command in ("train", "sample", "inpaint", "serve", "figures", "evaluate", "classifier"):
        assert f"usage: mnist-diffusion {command}" in cli  # rendered from the parser, not typed
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        page = site / "tutorials" / notebook.stem / "index.html"
        assert page.exists() and "<img" in page.read_text(), f"no tutorial page with figures for {notebook.name}"
    assert "mnist_diffusion.Pipeline.sample" in (site / "reference" / "index.html").read_text()
    architecture = (site / "architecture" / "index.html").read_text()
    assert "<!-- floors -->" not in architecture and "<code>errors</code>" in architecture  # read from the test
    assert not [p for p in site.rglob("*.html") if "fonts.googleapis.com" in p.read_text()]
