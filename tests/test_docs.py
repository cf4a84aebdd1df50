"""The examples in docs/api.md and in the public modules' docstrings run as written."""

import doctest
from pathlib import Path

import pytest

import mnist_diffusion.api
import mnist_diffusion.pipeline

DOCS = Path(__file__).resolve().parents[1] / "docs"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def test_api_page_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = doctest.testfile(str(DOCS / "api.md"), module_relative=False, optionflags=FLAGS)
    assert result.attempted > 10 and result.failed == 0


@pytest.mark.parametrize("module", [mnist_diffusion.api, mnist_diffusion.pipeline])
def test_docstring_examples(module):
    assert doctest.testmod(module, optionflags=FLAGS).failed == 0
