"""Models outside Python: `onnx` writes a model's network as an ONNX file (checked against PyTorch), `web` builds
the static edition of the page around such files (ONNX Runtime Web in the browser, no server), and `page` puts
the page's script tags in, for the served page and the static edition alike (one front end, two engines)."""

from mnist_diffusion.export.onnx import OnnxExport, export_onnx

__all__ = ["OnnxExport", "export_onnx"]
