"""What every notebook shares: the size switch, where its figures go, and showing a figure.

MNIST_DIFFUSION_NOTEBOOK_SIZE=tiny shrinks every N and step count, so the test suite runs a notebook in seconds;
MNIST_DIFFUSION_NOTEBOOK_FIGURES is the folder the figures go to (default out/notebooks).
"""

import os
from pathlib import Path

from IPython.display import Image, display

TINY = os.environ.get("MNIST_DIFFUSION_NOTEBOOK_SIZE", "full") == "tiny"


def size(full, tiny):
    """The full-size value, or the tiny one for the quick run."""
    return tiny if TINY else full


def figures_folder(name: str) -> Path:
    """The folder this notebook's figures go to, created; says which run this is."""
    folder = Path(os.environ.get("MNIST_DIFFUSION_NOTEBOOK_FIGURES", "../out/notebooks")) / name
    folder.mkdir(parents=True, exist_ok=True)
    print("tiny run" if TINY else "full run", "| figures in", os.path.relpath(folder))
    return folder


def show(path):
    """Show a PNG or GIF the notebook wrote."""
    display(Image(filename=str(path)))
