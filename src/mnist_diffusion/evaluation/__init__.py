"""Offline evaluation of generated digits: a small classifier's features (`network`), metrics on them
(`metrics`: FID, KID, precision/recall, class balance, label accuracy, memorisation), cached
reference statistics (`reference`), full reports with baselines (`report`) and an in-training
check (`quick`). Evaluator files are loaded hash-checked (`evaluator_file`).
"""

from mnist_diffusion.evaluation.evaluator_file import load_evaluator
from mnist_diffusion.evaluation.quick import quick_kid
from mnist_diffusion.evaluation.report import evaluate_images, format_report, write_json

__all__ = ["evaluate_images", "format_report", "load_evaluator", "quick_kid", "write_json"]
