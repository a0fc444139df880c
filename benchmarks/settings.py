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


# ---------------------------------------------------------------- 04_liver_weak_labels (block start)
LIVER_PHASES = ("CT_arterial", "CT_portal", "CT_delayed")
# first-order statistics (HU) of the lesion in each phase, shape once (it is the same mask)
_FIRST_ORDER = {"setting": {"binWidth": 25}, "featureClass": {"firstorder": None}}
LIVER_RADIOMICS = {"CT_arterial": {"setting": {"binWidth": 25}, "featureClass": {"firstorder": None, "shape": None}},
                   "CT_portal": _FIRST_ORDER, "CT_delayed": _FIRST_ORDER}
# MIL settings: the imaging benchmark's architecture (tuned there on other seeds, not on this
# cohort) at half its width, so that five folds fit the notebook's time budget
LIVER_MIL = {"instance": "patch", "patch_size": 4, "embed_dim": 16, "attention_dim": 8, "epochs": 30,
             "patience": 10, "validation_fraction": 0.2}


def _liver_feature_name(column: str) -> str:
    """``ct_arterial_lesion_original_firstorder_mean`` -> ``arterial_mean``."""
    phase, rest = column.removeprefix("ct_").split("_lesion_original_")
    return f"{phase}_{rest.removeprefix('firstorder_').removeprefix('shape_')}"


def _macro_auc(y, probs) -> float:
    """Mean over classes of the one-vs-rest AUC (``bayesrad.evaluate.metrics.auc``)."""
    from bayesrad.evaluate import metrics as M

    return float(np.mean([M.auc((y == k).astype(float), probs[:, k]) for k in range(probs.shape[1])]))


def _top_label_ece(y, probs) -> float:
    """ECE of the top class's probability for 'the top class is right' (10 uniform bins), as in
    ``bayesrad.evaluate.metrics.multiclass_metrics``."""
    from bayesrad.evaluate import metrics as M

    return M.ece((probs.argmax(1) == y).astype(float), probs.max(1), 10, "uniform")


def _balanced_accuracy(y, probs) -> float:
    """Mean over the classes present of the share of their patients predicted right."""
    pred = probs.argmax(1)
    return float(np.mean([np.mean(pred[y == k] == k) for k in np.unique(y)]))


#: the metrics of notebook 04, each a function (class codes (n,), probabilities (n, K)) -> float;
#: cheap ones, since each runs once per bootstrap resample
LIVER_METRICS = {"accuracy": lambda y, probs: float(np.mean(probs.argmax(1) == y)),
                 "balanced_accuracy": _balanced_accuracy, "macro_auc": _macro_auc,
                 "top_label_ece": _top_label_ece}


def _attention_shares(attention: np.ndarray, masks: torch.Tensor, patch_size: int) -> pd.DataFrame:
    """Per patient: the attention mass on patches that hold lesion voxels, and the same share
    under uniform attention (the fraction of such patches: what attention blind to the lesion
    would give). ``attention`` (N, K) in ``to_instances`` order, ``masks`` (N, 1, S, S, S)."""
    from bayesrad.imaging.mil import to_instances

    lesion_patches = to_instances(masks, "patch", patch_size).flatten(2).amax(2).numpy() > 0.5  # (N, K)
    return pd.DataFrame({"attention_on_lesion": (attention * lesion_patches).sum(1),
                         "uniform_on_lesion": lesion_patches.mean(1)})


def liver_figures(n_patients: int = 120, seed: int = 0, image_size: int = 32, folds: int = 5,
                  n_boot: int = 200, n_examples: int = 3) -> dict:
    """Attention-MIL on the three CT phases vs radiomics + multinomial logistic regression on the
    simulator's ``liver_multiphase`` scenario (HCC / iCCA / mixed; the label is the patient's
    only), on the same stratified folds.

    - ``attention_mil``: ``AttentionMILClassifier`` (``LIVER_MIL``) on the preprocessed
      3-channel volume (arterial, portal, delayed; 16^3 voxels of 4 mm around the lesion,
      window -200..250 HU); no mask is given to the model.
    - ``radiomics_logistic``: pyradiomics on the rendered images and the lesion mask
      (first order in each phase, shape once; ``LIVER_RADIOMICS``), standardised, L2
      multinomial logistic regression with C by inner 5-fold CV (log loss) on the training fold.
    - ``true_latents_logistic``: the same regression on the simulator's latent lesion
      phenotype (not observable): the ceiling of a read-out of what the images encode.

    Returns ``{"metrics": DataFrame (model, metric, estimate, ci_low, ci_high): accuracy,
    balanced_accuracy, macro_auc (one-vs-rest), top_label_ece (10 uniform bins), percentile
    bootstrap 95% CIs stratified by class, plus rows model ``mil_minus_radiomics`` (paired
    bootstrap of the difference); "attention": DataFrame per patient (class, attention mass on
    lesion patches, the uniform share; out-of-fold attention); "coefficients": DataFrame
    (feature x class) of the logistic model's standardised coefficients fitted on every patient;
    "phase_hu": DataFrame (class x phase) of the mean lesion HU measured by pyradiomics next to
    the simulator's generating mean; "examples": list of dicts (patient, class, predicted
    probabilities, axial slices (x, y) of the arterial channel, lesion mask and attention, 4 mm
    pixels) for one patient per class, the one of median lesion size; "probabilities": {model: (n, 3)
    out-of-fold class probabilities}, "labels": (n,) class names; "settings", "seconds": {step: s}}``.
    """
    import tempfile

    import bayesrad
    from bayesrad.data.simulate.liver_multiphase import CLASSES, LESION_HU
    from bayesrad.evaluate import metrics as M
    from bayesrad.evaluate.baselines import _logistic_pipeline
    from bayesrad.features.extract import extract_cohort, radiomics_step
    from bayesrad.imaging import AttentionMILClassifier, PreprocessConfig, preprocess_cohort
    from sklearn.model_selection import StratifiedKFold

    seconds = {}
    start = time.perf_counter()
    config = PreprocessConfig(modalities=LIVER_PHASES, size=16, spacing_mm=4.0, margin_mm=8.0)
    with tempfile.TemporaryDirectory() as tmp:
        sim = bayesrad.simulate("liver_multiphase", n_patients=n_patients, seed=seed, out=Path(tmp) / "liver",
                                image_size=image_size)
        volumes, masks, ids = preprocess_cohort(sim.cohort, config)
        seconds["simulate_and_preprocess"] = time.perf_counter() - start
        start = time.perf_counter()
        extracted = extract_cohort(sim.cohort, steps=[radiomics_step(LIVER_RADIOMICS, modalities=("CT",))],
                                   progress=False)
        seconds["radiomics_extraction"] = time.perf_counter() - start
    radiomics = extracted.blocks["radiomics"].reindex(ids)
    radiomics.columns = [_liver_feature_name(c) for c in radiomics.columns]
    labels = sim.cohort.blocks["outcome"]["tumour_class"].reindex(ids).astype(str).to_numpy()
    y = np.searchsorted(CLASSES, labels)  # CLASSES is sorted: codes follow the models' classes_
    latents = sim.truth.latents.loc[ids, ["radiomics[0]", "radiomics[1]", "radiomics[2]"]]
    inputs = {"radiomics_logistic": radiomics, "true_latents_logistic": latents}
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(ids, y))

    probs = {name: np.zeros((len(ids), len(CLASSES))) for name in ("attention_mil", *inputs)}
    attention = np.zeros((len(ids), (config.size // LIVER_MIL["patch_size"]) ** 3))
    seconds["attention_mil"] = seconds["logistic"] = 0.0
    for train, test in splits:
        start = time.perf_counter()
        mil = AttentionMILClassifier(**LIVER_MIL, seed=seed, device="cpu").fit(volumes[train], y[train])
        probs["attention_mil"][test] = mil.predict_proba(volumes[test])
        attention[test] = mil.attention(volumes[test])
        seconds["attention_mil"] += time.perf_counter() - start
        start = time.perf_counter()
        for name, table in inputs.items():
            model = _logistic_pipeline("l2", 10, 5, seed).fit(table.iloc[train], y[train])
            probs[name][test] = model.predict_proba(table.iloc[test])
        seconds["logistic"] += time.perf_counter() - start

    rows = []
    for name, p in probs.items():
        for metric, function in LIVER_METRICS.items():
            ci = M.bootstrap_ci(function, y, p, n_boot=n_boot, seed=seed, stratify=y)
            rows.append({"model": name, "metric": metric, **ci})
    for metric in ("accuracy", "macro_auc", "top_label_ece"):
        def difference(codes, p_mil, p_radiomics, function=LIVER_METRICS[metric]):
            return function(codes, p_mil) - function(codes, p_radiomics)
        # paired: both models scored on the same resampled patients
        ci = M.bootstrap_ci(difference, y, probs["attention_mil"], probs["radiomics_logistic"], n_boot=n_boot,
                            seed=seed, stratify=y)
        rows.append({"model": "mil_minus_radiomics", "metric": metric, **ci})
    metrics = pd.DataFrame(rows).drop(columns="n_boot")

    shares = _attention_shares(attention, masks, LIVER_MIL["patch_size"])
    shares.insert(0, "tumour_class", labels)
    shares.index = pd.Index(ids, name="patient_id")

    # the interpretation: one model on every patient, C again by inner CV
    full_model = _logistic_pipeline("l2", 10, 5, seed).fit(radiomics, y)
    coefficients = pd.DataFrame(full_model[-1].coef_.T, index=radiomics.columns, columns=list(CLASSES))
    # the same read-out of the true latents: which generating dimension separates which class
    latent_model = _logistic_pipeline("l2", 10, 5, seed).fit(latents, y)
    latent_coefficients = pd.DataFrame(latent_model[-1].coef_.T, columns=list(CLASSES),
                                       index=["size", "arterial_washout", "delayed_enhancement"])

    # the simulator's lesion HU per class: the phase's intercept + loadings x the class's mean latent
    class_latent = sim.truth.latents.loc[ids, ["radiomics[1]", "radiomics[2]"]].groupby(labels).mean()
    phase_hu = {}
    for phase in ("arterial", "portal", "delayed"):
        a, b, c = LESION_HU[phase]
        phase_hu[f"{phase}_measured"] = radiomics[f"{phase}_mean"].groupby(labels).mean()
        phase_hu[f"{phase}_simulated"] = a + b * class_latent["radiomics[1]"] + c * class_latent["radiomics[2]"]
    phase_hu = pd.DataFrame(phase_hu).loc[list(CLASSES)]

    examples = []
    for k, name in enumerate(CLASSES):
        # the patient of the class whose lesion size is the class's median: a typical case (the
        # largest lesions fill the whole crop)
        members = np.flatnonzero(y == k)
        sizes = masks[members].flatten(1).sum(1).numpy()
        i = int(members[np.abs(sizes - np.median(sizes)).argmin()])
        lesion = masks[i, 0].numpy() > 0.5
        z = int(lesion.sum((0, 1)).argmax())
        g, patch = config.size // LIVER_MIL["patch_size"], LIVER_MIL["patch_size"]
        # patches are in (x, y, z) raster order (``to_instances``), as the volume's axes
        volume_map = np.repeat(np.repeat(np.repeat(attention[i].reshape((g, g, g)), patch, 0), patch, 1), patch, 2)
        examples.append({"patient_id": ids[i], "tumour_class": name, "probabilities": dict(zip(CLASSES, probs["attention_mil"][i])),
                         "arterial": volumes[i, 0, :, :, z].numpy(), "delayed": volumes[i, 2, :, :, z].numpy(),
                         "lesion": lesion[:, :, z], "attention": volume_map[:, :, z],
                         "attention_on_lesion": float(shares["attention_on_lesion"].iloc[i])})
    return {"metrics": metrics, "attention": shares, "coefficients": coefficients,
            "latent_coefficients": latent_coefficients, "phase_hu": phase_hu,
            "examples": examples[:n_examples], "probabilities": probs, "labels": labels, "seconds": seconds,
            "settings": {"n_patients": n_patients, "seed": seed, "image_size": image_size, "folds": folds,
                         "n_boot": n_boot, "class_counts": {c: int((labels == c).sum()) for c in CLASSES},
                         "preprocess": config.to_dict(), "mil": LIVER_MIL,
                         "radiomics_columns": int(radiomics.shape[1]),
                         "radiomics_failures": int(len(extracted.failures))}}


#: lesion intensity-level features (HU): they all rise with the lesion's enhancement in that phase
_LEVEL_FEATURES = ("mean", "median", "10_percentile", "90_percentile", "root_mean_squared", "minimum", "maximum")


def liver_tables(figures: dict) -> dict[str, pd.DataFrame]:
    """The tables notebook 04 prints (and settings.json keeps), rounded: ``metrics`` (model x
    metric, point estimates), ``recall`` (model x class: share of the class's patients
    predicted as it), ``attention`` (class x shares, means), ``phase_hu`` (HU), ``phase_level``
    (class x phase: sum of the standardised coefficients of the phase's intensity-level
    features, ``_LEVEL_FEATURES``), ``latent_coefficients`` and ``top_coefficients`` (the 4
    largest |coefficient| per class)."""
    from bayesrad.data.simulate.liver_multiphase import CLASSES

    metrics = figures["metrics"].pivot(index="model", columns="metric", values="estimate")
    codes = np.searchsorted(CLASSES, figures["labels"])
    recall = pd.DataFrame({name: [np.mean(p[codes == k].argmax(1) == k) for k in range(len(CLASSES))]
                           for name, p in figures["probabilities"].items()}, index=list(CLASSES)).T
    attention = figures["attention"].groupby("tumour_class")[["attention_on_lesion", "uniform_on_lesion"]].mean()
    attention.loc["all"] = figures["attention"][["attention_on_lesion", "uniform_on_lesion"]].mean()
    coefficients = figures["coefficients"]
    level = pd.DataFrame({phase: coefficients.loc[[f"{phase}_{f}" for f in _LEVEL_FEATURES]].sum()
                          for phase in ("arterial", "portal", "delayed")})
    top = pd.concat({c: coefficients[c].reindex(coefficients[c].abs().sort_values(ascending=False).index[:4])
                     .reset_index().set_axis(["feature", "coefficient"], axis=1) for c in coefficients})
    return {"metrics": metrics.round(3), "recall": recall.round(3), "attention": attention.round(3),
            "phase_hu": figures["phase_hu"].round(1), "phase_level": level.round(3),
            "latent_coefficients": figures["latent_coefficients"].round(3), "top_coefficients": top.round(3)}


def _liver_record(full: bool) -> dict:
    """Notebook 04's entry of settings.json."""
    figures = liver_figures(n_patients=300, image_size=48, n_boot=500) if full else liver_figures()
    tables = liver_tables(figures)
    for name, table in tables.items():
        print(table.to_string())
    return {"settings": figures["settings"], "seconds": figures["seconds"],
            "metrics": figures["metrics"].to_dict(orient="records"),
            **{name: tables[name].reset_index().to_dict(orient="records")
               for name in ("recall", "attention", "phase_hu", "phase_level", "latent_coefficients",
                            "top_coefficients")}}
# ---------------------------------------------------------------- 04_liver_weak_labels (block end)


#: one entry per notebook: its key in settings.json -> a function (full: bool) -> JSON-able dict.
#: A notebook adds its line here; ``--only KEY`` recomputes one entry and keeps the others.
NOTEBOOKS = {
    "01_first_model": _first_model_record,
    "04_liver_weak_labels": _liver_record,
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
