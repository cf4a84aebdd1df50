"""MkDocs hook: a page tutorials/NAME.md for each executed notebook notebooks/NAME.ipynb, with its outputs.

Markdown cells stay Markdown, code cells become Python blocks, text outputs text blocks, and figures (PNG, GIF,
JPEG) files beside the page; the notebook itself is offered for download. stderr (progress bars, warnings) is
left out. Nothing is executed here: the stored notebooks are the executed ones (`make notebooks`).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from mkdocs.structure.files import File

IMAGES = {"image/png": "png", "image/gif": "gif", "image/jpeg": "jpg"}


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def _fence(text: str, language: str = "text") -> str:
    return f"```{language}\n{text.rstrip()}\n```"


def convert(notebook: dict, stem: str) -> tuple[str, dict[str, bytes]]:
    """The page's Markdown and its figures (file name under `stem`/ -> bytes) for one notebook."""
    parts, figures = [], {}
    for i, cell in enumerate(notebook["cells"]):
        source = _text(cell["source"])
        if cell["cell_type"] == "markdown":
            parts.append(source)
            continue
        if cell["cell_type"] != "code" or not source.strip():
            continue
        parts.append(_fence(source, "python"))
        streamed = ""
        for k, output in enumerate(cell.get("outputs", [])):
            kind = output["output_type"]
            if kind == "stream":
                if output.get("name") == "stdout":
                    streamed += _text(output["text"])
                continue
            if streamed:
                parts.append(_fence(streamed))
                streamed = ""
            if kind == "error":
                parts.append(_fence(f"{output['ename']}: {output['evalue']}"))
                continue
            data = output.get("data", {})
            image = next((m for m in IMAGES if m in data), None)
            if image:
                name = f"cell{i:02d}-{k}.{IMAGES[image]}"
                figures[name] = base64.b64decode(_text(data[image]))
                parts.append(f"![output of cell {i}]({stem}/{name})")
            elif "text/markdown" in data:
                parts.append(_text(data["text/markdown"]))
            elif "text/plain" in data:
                parts.append(_fence(_text(data["text/plain"])))
        if streamed:
            parts.append(_fence(streamed))
    return "\n\n".join(parts) + "\n", figures


def on_files(files, config):
    root = Path(config["config_file_path"]).parent / "notebooks"
    for path in sorted(root.glob("*.ipynb")):
        stem = path.stem
        page, figures = convert(json.loads(path.read_text(encoding="utf-8")), stem)
        source = f"`notebooks/{stem}.py`"
        if stem.endswith("_ko"):  # a translated edition: the English script's code, its own prose
            source = f"`notebooks/{stem.removesuffix('_ko')}.py` with the prose of `notebooks/{stem}.md`"
        note = (
            f"*This page is the notebook `notebooks/{path.name}`, executed ([download it]({path.name})); "
            f"its source is {source}.*\n\n"
        )
        title, _, rest = page.partition("\n")
        files.append(File.generated(config, f"tutorials/{stem}.md", content=f"{title}\n\n{note}{rest}"))
        files.append(File.generated(config, f"tutorials/{path.name}", content=path.read_bytes()))
        for name, data in figures.items():
            files.append(File.generated(config, f"tutorials/{stem}/{name}", content=data))
    return files
