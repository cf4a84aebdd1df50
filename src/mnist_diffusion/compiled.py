"""Deprecated module name: the compile wrapper is `runtime.CompiledNetwork`, beside the bf16 wrapper. Kept only
until every importer has moved to `mnist_diffusion.runtime`."""

from mnist_diffusion.runtime import CompiledNetwork  # noqa: F401 - the old import path, re-exported
