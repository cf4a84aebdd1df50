"""The page's one front end, for the served page and the static edition alike: serve/page.html with the script
tags of an edition put where it says `<!-- scripts -->`, each tag pinned by its file's sha256 (subresource
integrity), and the files themselves read from the package (serve/page.js, samplers.js, static.js)."""

from __future__ import annotations

import base64
import hashlib
from importlib import resources

MARK = "<!-- scripts -->"


def read(name: str) -> bytes:
    """A file of the page (serve/NAME) as bytes."""
    return (resources.files("mnist_diffusion") / "serve" / name).read_bytes()


def digest(data: bytes) -> str:
    """The 'sha256-...' source of `data`: what a tag's integrity and a content security policy name it by."""
    return "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode()


def with_scripts(scripts: dict[str, bytes]) -> str:
    """page.html with a <script src=NAME integrity=...> for each of `scripts` (name -> its bytes), in order."""
    page = read("page.html").decode()
    assert page.count(MARK) == 1, "page.html marks where its scripts go once"
    tags = "\n".join(f'<script src="{name}" integrity="{digest(data)}"></script>' for name, data in scripts.items())
    return page.replace(MARK, tags)
