"""Evaluation of bayesrad predictions: metrics with bootstrap CIs, the baselines people use
behind one contract, a resampling harness on shared folds, missing-modality curves, an HTML
report, and simulation-based calibration."""

from bayesrad.evaluate.metrics import (auc, bootstrap_ci, brier, calibration_line, concordance,
                                       coverage, ece, ece_noise_floor, integrated_brier, log_loss,
                                       multiclass_metrics, survival_calibration, threshold_metrics,
                                       time_dependent_auc, uno_c)

__all__ = ["auc", "brier", "ece", "coverage", "concordance", "survival_calibration", "log_loss",
           "calibration_line", "threshold_metrics", "ece_noise_floor", "multiclass_metrics",
           "uno_c", "time_dependent_auc", "integrated_brier", "bootstrap_ci", "compare", "paired",
           "missing_modality_curve", "write_report"]


def __getattr__(name):
    # the harness imports the model layer; load it only when asked for
    if name in ("compare", "paired", "missing_modality_curve"):
        from bayesrad.evaluate import harness as _harness

        return getattr(_harness, name)
    if name == "write_report":
        from bayesrad.evaluate.report import write_report

        return write_report
    raise AttributeError(f"module 'bayesrad.evaluate' has no attribute {name!r}")
