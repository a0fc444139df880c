"""The figures the clinical-setting notebooks print, recomputed: ``benchmarks/results/settings.json``.

One function per notebook computes what the notebook prints; the notebook calls the same
function (it imports this file), so the JSON and the notebook's tables come from one code path
and the same seed (notebook 01, the tutorial, is executed whole and its figures kept). For
now: ``01_first_model`` and ``05_incomplete_multimodal`` (missing-modality curves of bayesrad
vs early and late fusion on the simulator's ``incomplete_multimodal`` scenario, through
``bayesrad.evaluate.harness.missing_modality_curve``, plus calibration slope and the mean 90%
interval width as the modality drops), and ``02_glioma_fdopa`` (``glioma_figures``: habitat
Dice and four progression-vs-radionecrosis models on an internal split and a held-out centre).

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


# ---------------------------------------------------------------------- 02_glioma_fdopa
#: the kinetic features the models see: whole-lesion curve descriptors and the washout
#: habitat's share and curve (habitat 1, the most washing-out, see ``KineticHabitats``)
GLIOMA_KINETIC_COLUMNS = (
    "dpet_lesion_peak_suv", "dpet_lesion_time_to_peak_s", "dpet_lesion_late_slope_suv_per_h",
    "dpet_lesion_habitat1_fraction", "dpet_lesion_habitat1_time_to_peak_s",
    "dpet_lesion_habitat1_late_slope_suv_per_h",
)
#: early (5-15 min) and late (20-40 min) PET as the two image channels, the pair a reader
#: compares on FET/FDOPA; the 3 mm / 32^3 cube is the packaged encoder's input
GLIOMA_VOLUMES = {"modalities": ("DPET", "PET"), "spacing_mm": 3.0, "size": 32, "margin_mm": 10.0,
                  "dynamic_window_s": (300.0, 900.0)}
#: the decision threshold of every model: fixed before any test patient is seen
GLIOMA_THRESHOLD = 0.5


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / total) if total else float("nan")


def glioma_kinetics(sim, train_ids, seed: int = 0):
    """Kinetics and habitats of every patient, the habitat model fitted on ``train_ids`` only.

    Returns ``(features DataFrame patient x kinetic features, dice Series patient -> Dice of
    habitat 1 against the true aggressive subregion, habitats (fitted KineticHabitats),
    example dict for a figure: the middle lesion slice of habitat 1, the truth and late PET)``.
    """
    import SimpleITK as sitk

    from bayesrad.data.simulate.glioma_pet import FRAME_END_S
    from bayesrad.features.kinetics import (KineticHabitats, frame_mid_times, habitat_features,
                                            parse_frame_times, roi_kinetics, voxel_curves)

    images = sim.cohort.images
    dynamic = images[images["modality"] == "DPET"].set_index("patient_id")
    times = frame_mid_times(parse_frame_times(dynamic["frame_times"].iloc[0]), FRAME_END_S)
    series = {pid: (sitk.GetArrayFromImage(sitk.ReadImage(row["path"])).astype(float),
                    sitk.GetArrayFromImage(sitk.ReadImage(row["mask_path"])) != 0)
              for pid, row in dynamic.iterrows()}
    # Two habitats: the question is washout (tumour) against accumulation (treatment effect).
    habitats = KineticHabitats(n_habitats=2, random_state=seed).fit(
        [voxel_curves(*series[pid]) for pid in train_ids], times)
    truth = sim.truth.aggressive_masks
    rows, dice, example = {}, {}, None
    for pid, (pet, mask) in series.items():
        values = roi_kinetics(pet, mask, times, prefix="dpet", roi="lesion")
        habitat_values, labels = habitat_features(pet, mask, times, habitats, prefix="dpet", roi="lesion")
        rows[pid] = {**values, **habitat_values}
        aggressive = sitk.GetArrayFromImage(sitk.ReadImage(truth[pid])) != 0
        dice[pid] = _dice(labels == 1, aggressive)
        if example is None and mask.sum() >= 40:
            z = int(np.median(np.nonzero(mask)[0]))
            example = {"patient_id": pid, "pet_late": pet[-1, z], "habitat1": labels[z] == 1,
                       "truth": aggressive[z], "lesion": mask[z]}
    features = pd.DataFrame.from_dict(rows, orient="index").rename_axis("patient_id")
    return features, pd.Series(dice, name="dice").rename_axis("patient_id"), habitats, example


def _volume_model(name: str, seed: int, epochs: int):
    from bayesrad.imaging.embed import packaged_encoder
    from bayesrad.imaging.finetune import VolumeRegressor

    # Both networks regress the 0/1 label (mean squared error: a linear-probability score),
    # with the same epochs, early stopping on 20% of the training patients and augmentation.
    if name == "cnn_scratch":
        return VolumeRegressor(encoder="resnet", width=4, epochs=epochs, patience=epochs, lr=2e-3,
                               seed=seed, device="cpu")
    return VolumeRegressor(encoder_dir=packaged_encoder("encoder_small"), epochs=epochs, patience=epochs,
                           lr=5e-4, seed=seed, device="cpu")


def glioma_figures(n_patients: int = 160, seed: int = 0, image_size: int = 32, held_out: str = "centre_D",
                   internal_fraction: float = 0.25, epochs: int = 6, n_boot: int = 200,
                   svi: dict | None = None, out=None) -> dict:
    """Radionecrosis vs progression on the ``glioma_pet`` scenario (four centres): four models
    trained once on the same patients, tested on an internal split and on a held-out centre.

    Training patients: the centres other than ``held_out``, less a stratified
    ``internal_fraction`` kept as the internal test set. The external test set is every patient
    of ``held_out``, whose scanner reads PET ``exp(0.30)`` = 1.35 times higher. Models:

    - ``bayesrad``: ``BayesNet`` (the default graph over the blocks clinical, radiomics,
      kinetics and deep; HybridBN, SVI) with ``svi`` settings;
    - ``radiomics_rf``: random forest on clinical, radiomics and kinetics (engineered features);
    - ``cnn_scratch``: a 3D ResNet (width 4) from random weights on the early/late PET cube;
    - ``ssl_finetuned``: the packaged self-supervised encoder fine-tuned on the same cubes.

    The ``deep`` block is the frozen packaged encoder's embedding, reduced to 3 principal
    components fitted on the training patients. Habitats are fitted on the training
    patients' voxels. Sensitivity and specificity at ``GLIOMA_THRESHOLD`` (0.5, fixed in
    advance), AUC; each with a percentile bootstrap 95% CI (``n_boot`` resamples, stratified
    by outcome).

    Returns ``{"metrics": DataFrame (test_set, model, metric, estimate, ci_low, ci_high),
    "dice": DataFrame (centre, n, mean, min, q25, median), "centres": DataFrame (centre, n,
    progression share, background log SUV mean), "predictions": DataFrame, "example": dict of
    2D arrays, "settings": dict, "seconds": float}``.
    """
    import tempfile

    import torch
    from sklearn.decomposition import PCA
    from sklearn.model_selection import train_test_split

    import bayesrad
    from bayesrad.evaluate import metrics as M
    from bayesrad.evaluate.baselines import BayesNet, RandomForestBaseline
    from bayesrad.imaging.embed import embed_volumes, packaged_encoder
    from bayesrad.imaging.encoders import load_encoder
    from bayesrad.imaging.transforms import PreprocessConfig, preprocess_cohort

    start = time.perf_counter()
    torch.manual_seed(seed)
    folder = tempfile.TemporaryDirectory() if out is None else None
    sim = bayesrad.simulate("glioma_pet", n_patients=n_patients, seed=seed, image_size=image_size,
                            missing=0.0, out=folder.name if folder else out)
    blocks = sim.cohort.blocks
    centre = blocks["clinical"]["centre"].astype(str)
    y_all = blocks["outcome"]["progression"].astype(int)
    external = list(centre.index[centre == held_out])
    others = centre.index[centre != held_out]
    train, internal = train_test_split(list(others), test_size=internal_fraction, random_state=seed,
                                       stratify=y_all[others])
    kinetics, dice, habitats, example = glioma_kinetics(sim, train, seed)

    volumes, _, ids = preprocess_cohort(sim.cohort, PreprocessConfig(**GLIOMA_VOLUMES))
    volumes = pd.Series(list(volumes), index=ids)
    encoder, _ = load_encoder(packaged_encoder("encoder_small"))
    embedding = embed_volumes(encoder, torch.stack(list(volumes)), device="cpu")
    pca = PCA(n_components=3, random_state=seed).fit(embedding[[ids.index(p) for p in train]])
    deep = pd.DataFrame(pca.transform(embedding), index=pd.Index(ids, name="patient_id"),
                        columns=[f"pet_deep_pc{j + 1}" for j in range(3)])

    # The centre and its reference-region SUV are left out: the held-out centre is a level no
    # model has seen, and the question is whether the features transfer without it.
    features = {"clinical": blocks["clinical"].drop(columns=["centre"]), "radiomics": blocks["radiomics"],
                "kinetics": kinetics[list(GLIOMA_KINETIC_COLUMNS)], "deep": deep}

    def subset(names, patients):
        return {b: features[b].loc[patients] for b in names} | {"outcome": blocks["outcome"][["progression"]].loc[patients]}

    settings = {"seed": seed, "num_threads": 1, **(FAST_SVI if svi is None else svi)}
    tests = {"internal": internal, "external": external}
    scores: dict[str, dict[str, np.ndarray]] = {}
    fit_seconds = {}
    t = time.perf_counter()
    model = BayesNet(settings=settings).fit(subset(["clinical", "radiomics", "kinetics", "deep"], train), "progression")
    scores["bayesrad"] = {k: model.predict(subset(["clinical", "radiomics", "kinetics", "deep"], v))["mean"]
                          .reindex(v).to_numpy(float) for k, v in tests.items()}
    fit_seconds["bayesrad"] = time.perf_counter() - t
    t = time.perf_counter()
    model = RandomForestBaseline(seed=seed).fit(subset(["clinical", "radiomics", "kinetics"], train), "progression")
    scores["radiomics_rf"] = {k: model.predict(subset(["clinical", "radiomics", "kinetics"], v))["mean"]
                              .reindex(v).to_numpy(float) for k, v in tests.items()}
    fit_seconds["radiomics_rf"] = time.perf_counter() - t
    for name in ("cnn_scratch", "ssl_finetuned"):
        t = time.perf_counter()
        model = _volume_model(name, seed, epochs).fit(torch.stack(list(volumes[train])), y_all[train].to_numpy(float))
        scores[name] = {k: model.predict(torch.stack(list(volumes[v]))) for k, v in tests.items()}
        fit_seconds[name] = time.perf_counter() - t

    def at_threshold(key):
        return lambda y, p: M.threshold_metrics(y, p, GLIOMA_THRESHOLD)[key]

    rows, predictions = [], []
    for test_set, patients in tests.items():
        y = y_all[patients].to_numpy(int)
        for name, by_set in scores.items():
            p = by_set[test_set]
            predictions.append(pd.DataFrame({"test_set": test_set, "model": name, "patient_id": patients,
                                             "progression": y, "score": p}))
            for metric, fn in (("auc", M.auc), ("sensitivity", at_threshold("sensitivity")),
                               ("specificity", at_threshold("specificity"))):
                ci = M.bootstrap_ci(fn, y, p, n_boot=n_boot, seed=seed, stratify=y)
                rows.append({"test_set": test_set, "model": name, "metric": metric, "n": len(y),
                             "estimate": ci["estimate"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"]})
    dice_rows = []
    for group, values in [(c, dice[centre.index[centre == c]]) for c in sorted(centre.unique())] + [("all", dice)]:
        dice_rows.append({"centre": group, "n": int(values.size), "mean": float(values.mean()),
                          "min": float(values.min()), "q25": float(values.quantile(0.25)),
                          "median": float(values.median())})
    background = blocks["pet_reference"]["pet_background_log_suv"]
    centres = pd.DataFrame({"n": centre.value_counts(), "progression_share": y_all.groupby(centre).mean(),
                            "background_log_suv": background.groupby(centre).mean(),
                            "lesion_peak_suv_median": kinetics["dpet_lesion_peak_suv"].groupby(centre).median()})
    centres = centres.rename_axis("centre").reset_index()
    if folder is not None:
        folder.cleanup()
    return {"metrics": pd.DataFrame(rows), "dice": pd.DataFrame(dice_rows), "centres": centres,
            "predictions": pd.concat(predictions, ignore_index=True), "example": example,
            "seconds": time.perf_counter() - start, "fit_seconds": fit_seconds,
            "settings": {"n_patients": n_patients, "seed": seed, "image_size": image_size, "held_out": held_out,
                         "internal_fraction": internal_fraction, "n_train": len(train), "n_internal": len(internal),
                         "n_external": len(external), "epochs": epochs, "n_boot": n_boot,
                         "threshold": GLIOMA_THRESHOLD, "n_habitats": int(habitats.n_habitats_),
                         "kinetic_columns": list(GLIOMA_KINETIC_COLUMNS), "svi": settings}}


def glioma_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The metrics as the notebook prints them: one row per (test set, model), "est [lo, hi]"."""
    text = metrics.assign(value=[f"{e:.2f} [{lo:.2f}, {hi:.2f}]" for e, lo, hi in
                                 metrics[["estimate", "ci_low", "ci_high"]].to_numpy()])
    return text.pivot(index=["test_set", "model"], columns="metric", values="value")[["auc", "sensitivity", "specificity"]]


def _glioma_record(full: bool) -> dict:
    """Notebook 02's entry of settings.json."""
    figures = glioma_figures(n_patients=400, epochs=20, n_boot=1000, svi={}) if full else glioma_figures()
    print(glioma_table(figures["metrics"]).to_string())
    print(figures["dice"].round(3).to_string())
    return {"settings": figures["settings"], "seconds": figures["seconds"], "fit_seconds": figures["fit_seconds"],
            "metrics": figures["metrics"].to_dict(orient="records"), "dice": figures["dice"].to_dict(orient="records"),
            "centres": figures["centres"].to_dict(orient="records")}


#: one entry per notebook: its key in settings.json -> a function (full: bool) -> JSON-able dict.
#: A notebook adds its line here; ``--only KEY`` recomputes one entry and keeps the others.
NOTEBOOKS = {
    "01_first_model": _first_model_record,
    "05_incomplete_multimodal": _incomplete_multimodal_record,
    "02_glioma_fdopa": _glioma_record,
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
