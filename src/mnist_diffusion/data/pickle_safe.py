"""Read numpy arrays from a pickle without letting the pickle run code.

A pickle is a small program: every `GLOBAL` opcode asks the loader for a callable, and `REDUCE`
calls it. `RestrictedUnpickler` answers only for the three names a pickled numpy array needs
(`_reconstruct`, `ndarray`, `dtype`); any other name (``os.system``, ``builtins.eval``, ...) is
refused with a `DataError` *before* anything is called. Persistent ids and the copyreg extension
registry go through the same gate or are refused by `pickle.Unpickler` itself.

Only use this on files whose sha256 has also been checked; the allowlist keeps a tampered file
from running code, the hash keeps it from feeding wrong data.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, BinaryIO

import numpy as np

from mnist_diffusion.errors import DataError


def _reconstruct() -> Any:
    """numpy's array-unpickling helper; it moved from numpy.core to numpy._core in numpy 2."""
    try:
        from numpy._core.multiarray import _reconstruct as fn  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as fn
    return fn


# (module, name) -> zero-argument resolver. Resolved lazily so that importing this module never
# touches the deprecated numpy.core alias.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only numpy's array-reconstruction names.

    `source` names the file in error messages.
    """

    def __init__(self, file: BinaryIO, source: str, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        resolver = _ALLOWED.get((module, name))
        if resolver is None:
            allowed = ", ".join(f"{m}.{n}" for m, n in _ALLOWED)
            raise DataError(
                f"{self.source} asks to load '{module}.{name}', which is not a numpy array "
                f"part; refusing to read it (only {allowed} are allowed)."
            )
        return resolver()

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(
            f"{self.source} uses a persistent id, which plain numpy arrays never need; refusing to read it."
        )


def load_numpy_pickle(data: bytes | BinaryIO, source: str) -> Any:
    """Unpickle `data` (bytes or a binary stream) allowing numpy arrays and builtin containers only.

    `encoding="latin1"` is what numpy documents for pickles written by Python 2 (byte strings
    holding raw array memory). Any object arrays in the result are rejected, since their elements
    would be arbitrary Python objects rather than numbers.
    """
    try:
        stream = io.BytesIO(data) if isinstance(data, bytes) else data
        obj = RestrictedUnpickler(stream, source, encoding="latin1").load()
    except DataError:
        raise
    except Exception as exc:  # any malformed stream: truncated, bad opcode, bad numpy state
        raise DataError(
            f"{source} is not a readable numpy pickle ({type(exc).__name__}: {exc}); "
            "reinstall it or point --data-dir at IDX files."
        ) from exc
    _reject_object_arrays(obj, source)
    return obj


def _reject_object_arrays(obj: Any, source: str) -> None:
    if isinstance(obj, (tuple, list)):
        for item in obj:
            _reject_object_arrays(item, source)
    elif isinstance(obj, np.ndarray) and obj.dtype.hasobject:
        raise DataError(f"{source} holds an object array; only numeric arrays are accepted.")
