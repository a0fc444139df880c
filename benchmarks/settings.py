"""The figures the clinical-setting notebooks print, recomputed: ``benchmarks/results/settings.json``.

One function per notebook computes what the notebook prints; the notebook calls the same
function (it imports this file), so the JSON and the notebook's tables come from one code path
and the same seed (notebook 01, the tutorial, is executed whole and its figures kept). For
now: ``01_first_model`` and ``05_incomplete_multimodal`` (missing-modality curves of bayesrad
vs early and late fusion on the simulator's ``incomplete_multimodal`` scenario, through
``bayesrad.evaluate.harness.missing_modality_curve``, plus calibration slope and the mean 90%
interval width as the modality drops).

Usage: ``python benchmarks/settings.py [--quick] [--only KEY]`` (``--quick``: the notebooks' small settings,
which are also the default; the full run uses more patients and shares).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "settings.json"

# SVI settings that keep a 5-fold curve under ~90 s on 2 cores (the notebook runs in make test);
# the full benchmark uses the library's defaults.
FAST_SVI = {"num_steps": 400, "min_steps": 200, "num_samples": 200}

#: the calls each recording model received, keyed by its class name (see ``_Recording``)
_RECORD: dict[str, list[pd.DataFrame]] = {}


class _Recording(BaseEstimator):
    """Wraps a harness model and keeps every prediction it returns, so the curve's own
    out-of-fold predictions give the metrics ``missing_modality_curve`` does not report
    (calibration slope, interval width). The harness names a model by its class, hence one
    subclass per model (``_recording``)."""

    def __init__(self, inner=None):
        self.inner = inner

    def fit(self, data, target):
        from sklearn.base import clone

        self.model_ = clone(self.inner).fit(data, target)
        return self

    def predict(self, data, times=None):
        answer = self.model_.predict(data)
        _RECORD.setdefault(type(self).__name__, []).append(answer.copy())
        return answer


def _recording(name: str, inner) -> _Recording:
    return type(name, (_Recording,), {"__module__": __name__})(inner=inner)


def incomplete_multimodal_blocks(n_patients: int = 120, seed: int = 0) -> dict:
    """The simulated cohort's blocks, target ``response`` alone in its block. The 200-column
    gene block is left out: with it, one bayesrad fit and the early fusion's iterative
    imputation take minutes, too long for a notebook that runs in the test suite."""
    import bayesrad

    cohort = bayesrad.simulate("incomplete_multimodal", n_patients=n_patients, seed=seed).cohort
    blocks = {b: f for b, f in cohort.blocks.items() if b != "genes"}
    blocks["outcome"] = blocks["outcome"][["response"]]  # later outcomes are not features
    return blocks


def incomplete_multimodal_figures(n_patients: int = 120, seed: int = 0, block: str = "pet_radiomics",
                                  fractions=(0.0, 0.5, 1.0), cv: str = "5x1", n_boot: int = 200,
                                  svi: dict | None = None) -> dict:
    """Missing-modality curves: bayesrad vs early fusion (mean imputation) vs late fusion, the
    same folds, as a share ``fractions`` of the test patients loses ``block`` (MCAR).

    Returns ``{"curve": DataFrame (model, fraction, metric, estimate, ci_low, ci_high) with
    metrics auc / ece (bootstrap CIs, from the harness) and calibration_slope /
    interval_width_90 (point values on the pooled out-of-fold predictions; the width is the
    mean q95 - q05 of the patient's probability, probability units, bayesrad only: the
    baselines give no interval), "settings": dict, "seconds": float}``.
    """
    from bayesrad.evaluate import metrics as M
    from bayesrad.evaluate.baselines import BayesNet, make_model
    from bayesrad.evaluate.harness import missing_modality_curve

    blocks = incomplete_multimodal_blocks(n_patients, seed)
    settings = {"seed": seed, "num_threads": 1, **(FAST_SVI if svi is None else svi)}
    models = [_recording("bayesrad", BayesNet(settings=settings)),
              _recording("early_fusion", make_model("early_mean", seed)),
              _recording("late_fusion", make_model("late", seed))]
    _RECORD.clear()
    start = time.perf_counter()
    curve = missing_modality_curve(blocks, "response", block, models=models, fractions=fractions,
                                   cv=cv, seed=seed, n_boot=n_boot)
    seconds = time.perf_counter() - start
    y = blocks["outcome"]["response"].dropna()
    rows = []
    for name, calls in _RECORD.items():
        # the harness predicts fold by fold, and within a fold share by share
        for k, fraction in enumerate(fractions):
            pooled = pd.concat(calls[k::len(fractions)])
            truth = y.reindex(pooled.index).to_numpy(float)
            p = pooled["mean"].to_numpy(float)
            # the recorded predictions are the curve's own: their AUC is the harness's
            reported = curve.query("model == @name and fraction == @fraction and metric == 'auc'")
            if not np.isclose(M.auc(truth, p), reported["estimate"].iloc[0]):
                raise RuntimeError(f"{name} at share {fraction}: recorded predictions do not "
                                   "match the harness's (fold/share order changed?)")
            slope = M.calibration_line(truth, p)["slope"]
            width = float((pooled["q95"] - pooled["q05"]).mean()) if "q95" in pooled else float("nan")
            for metric, value in (("calibration_slope", slope), ("interval_width_90", width)):
                rows.append({"model": name, "fraction": fraction, "metric": metric,
                             "estimate": float(value), "ci_low": np.nan, "ci_high": np.nan})
    curve = pd.concat([curve, pd.DataFrame(rows)], ignore_index=True)
    return {"curve": curve, "seconds": seconds,
            "settings": {"n_patients": n_patients, "seed": seed, "block": block,
                         "fractions": list(fractions), "cv": cv, "n_boot": n_boot, "svi": settings}}


def wide(curve: pd.DataFrame) -> pd.DataFrame:
    """The curve as the notebook prints it: one row per (model, share), one column per metric."""
    return curve.pivot_table(index=["model", "fraction"], columns="metric", values="estimate").round(3)


def _incomplete_multimodal_record(full: bool) -> dict:
    """Notebook 05's entry of settings.json."""
    if full:
        figures = incomplete_multimodal_figures(n_patients=300, fractions=(0.0, 0.25, 0.5, 0.75, 1.0),
                                                n_boot=500, svi={})
    else:
        figures = incomplete_multimodal_figures()
    print(wide(figures["curve"]).to_string())
    return {"settings": figures["settings"], "seconds": figures["seconds"],
            "rows": figures["curve"].to_dict(orient="records")}


def _first_model_record(full: bool) -> dict:
    """Notebook 01's entry: the notebook is executed (nbclient, the kernel nbmake uses) and the
    figures its last cell gathers are kept. Its code is the tutorial itself, so the record runs
    that code rather than a copy of it; ``full`` changes nothing (its sizes are the tutorial's)."""
    import os

    import nbformat
    from nbclient import NotebookClient

    path = HERE.parent / "notebooks" / "01_first_model.ipynb"
    notebook = nbformat.read(path, as_version=4)
    env = {"BAYESRAD_RECORD_SETTINGS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    start = time.perf_counter()
    try:
        NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    printed = "".join(out.get("text", "") for out in notebook.cells[-1].outputs)
    line = next(l for l in printed.splitlines() if l.startswith("FIGURES "))
    figures = json.loads(line[len("FIGURES "):])
    print(json.dumps(figures, indent=1))
    return {"figures": figures, "seconds": time.perf_counter() - start}


#: one entry per notebook: its key in settings.json -> a function (full: bool) -> JSON-able dict.
#: A notebook adds its line here; ``--only KEY`` recomputes one entry and keeps the others.
NOTEBOOKS = {
    "01_first_model": _first_model_record,
    "05_incomplete_multimodal": _incomplete_multimodal_record,
}


def main() -> None:
    import torch
    from threadpoolctl import threadpool_limits

    sys.path.insert(0, str(HERE))
    from _machine import machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the notebooks' settings (default)")
    parser.add_argument("--full", action="store_true", help="larger cohorts, default SVI")
    parser.add_argument("--only", choices=sorted(NOTEBOOKS), action="append",
                        help="recompute these notebooks' entries only (repeatable); the others are kept")
    args = parser.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1)
    out = json.loads(RESULTS.read_text()) if RESULTS.exists() and args.only else {}
    if out and out.get("quick") != (not args.full):
        parser.error(f"{RESULTS} holds {'quick' if out.get('quick') else 'full'} figures; "
                     "recompute every entry (no --only) to switch")
    out.update({"machine": machine_info(), "quick": not args.full})
    for key in args.only or sorted(NOTEBOOKS):
        print(f"== {key}")
        out[key] = NOTEBOOKS[key](args.full)
    RESULTS.parent.mkdir(exist_ok=True)
    # written whole to a temporary name first: a failure leaves the previous file intact
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1, default=float))
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
