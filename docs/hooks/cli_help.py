"""MkDocs hook: cli.md's `<!-- cli-help -->` becomes the parser's own help for the command and every subcommand,
rendered from `mnist_diffusion.cli.build_parser()` at build time, so the page cannot fall behind the options."""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- cli-help -->"


def _sections(parser: argparse.ArgumentParser, level: int = 2) -> list[str]:
    out = [f"{'#' * level} `{parser.prog}`", f"```text\n{parser.format_help().rstrip()}\n```"]
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                out += _sections(sub, level + 1 if level < 3 else level)
    return out


def help_markdown() -> str:
    from mnist_diffusion.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "110"  # argparse wraps to the terminal's width: the same page on every machine
    try:
        return "\n\n".join(_sections(build_parser()))
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def on_page_markdown(markdown, page, config, files):
    if MARKER in markdown:
        return markdown.replace(MARKER, help_markdown())
    return markdown
