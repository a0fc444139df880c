"""Evaluation of bayesrad predictions: metrics and simulation-based calibration."""

from bayesrad.evaluate.metrics import auc, brier, concordance, coverage, ece, survival_calibration

__all__ = ["auc", "brier", "ece", "coverage", "concordance", "survival_calibration"]
