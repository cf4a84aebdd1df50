"""The shape of the package: no import circles, no import from a lower floor up to a higher one, and the
Layout section of docs/architecture.md names exactly the modules that exist."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mnist_diffusion"

# Floors, lowest first: a module may import from its own floor and the ones below, never from above.
FLOORS = [
    {"errors", "files", "config", "openmp", "cpu"},
    {"assets", "recipes", "device", "precision", "images", "data", "batches", "inpainting"},
    {"models", "diffusion", "checkpoint", "evaluation", "runtime"},
    {"latent", "sample_result", "sample_settings", "trajectory"},
    {"sample_space", "reconstructions", "export"},
    {"pipeline"},
    {"training"},
    {"api", "figures", "serve"},
    {"cli", "__main__", "__init__"},
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("mnist_diffusion",) + (parts[:-1] if parts[-1] == "__init__" else parts))
        out[name] = path
    return out


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The package modules `path` imports, at any depth of its code (function-local imports included)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found - {"mnist_diffusion"}  # the package root runs first for any import of it; not an edge


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _floor(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, floor in enumerate(FLOORS):
        if top in floor:
            return i
    raise AssertionError(f"{module} is on no floor; add it to FLOORS")


def test_no_import_circles():
    graph = _graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_import_from_a_higher_floor():
    upward = [(m, t) for m, targets in _graph().items() for t in targets if _floor(t) > _floor(m)]
    assert not upward, "imports from a higher floor: " + ", ".join(f"{m} -> {t}" for m, t in upward)


def test_architecture_page_layout_names_every_module_and_nothing_else():
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    listed, folder = set(), ""
    for line in block.splitlines():  # "  name.py  what it is" at the top level, "    name.py" inside "  folder/"
        match = re.match(r"^( {2}| {4})(\w+\.py|\w+/)", line)
        if not match:
            continue
        indent, item = len(match.group(1)), match.group(2)
        if item.endswith("/"):
            folder = item
        else:
            listed.add((folder if indent == 4 else "") + item)
    actual = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    assert listed == actual, (
        f"missing from docs/architecture.md: {sorted(actual - listed)}; not in the tree: {sorted(listed - actual)}"
    )
