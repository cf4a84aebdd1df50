"""MkDocs hook: architecture.md's `<!-- floors -->` becomes the table of floors that tests/test_layout.py checks,
read from that test's FLOORS at build time."""

from __future__ import annotations

import ast
from pathlib import Path

MARKER = "<!-- floors -->"


def floors(test_file: Path) -> list[list[str]]:
    for node in ast.parse(test_file.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "FLOORS" for t in node.targets):
            return [sorted(floor) for floor in ast.literal_eval(node.value)]
    raise ValueError(f"{test_file} defines no FLOORS")


def on_page_markdown(markdown, page, config, files):
    if MARKER not in markdown:
        return markdown
    rows = floors(Path(config["config_file_path"]).parent / "tests" / "test_layout.py")
    table = ["| floor | modules and packages |", "|---:|---|"]
    table += [f"| {i} | {', '.join(f'`{m}`' for m in floor)} |" for i, floor in reversed(list(enumerate(rows)))]
    return markdown.replace(MARKER, "\n".join(table))
