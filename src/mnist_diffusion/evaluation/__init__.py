"""Offline evaluation of generated digits: a small classifier's features (`network`), metrics on them
(`metrics`: FID, KID, precision/recall, class balance, label accuracy, memorisation), cached
reference statistics (`reference`), full reports with baselines (`report`) and an in-training
check (`quick`). The shipped evaluator weights are sha256-pinned (`registry`).
"""

from mnist_diffusion.evaluation.quick import quick_kid
from mnist_diffusion.evaluation.registry import load_evaluator
from mnist_diffusion.evaluation.report import evaluate_images, format_report, write_json

__all__ = ["evaluate_images", "format_report", "load_evaluator", "quick_kid", "write_json"]
