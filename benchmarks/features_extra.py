"""Speed and quality of the non-radiomics extractors: dosimetry, PET kinetics, gene modules, ComBat.

Usage: ``python benchmarks/features_extra.py [--quick]``.
Writes ``benchmarks/results/features_extra.json``. Each extractor is timed on a simulated
cohort against a baseline measured in the same run:

- dosimetry: ``extract_dosimetry`` (every structure of the DOSE row, all DVH metrics, EQD2,
  gEUD) vs the bare minimum (read dose and mask, GTV mean and 5th percentile with numpy);
- kinetics: ``extract_kinetics`` (ROI descriptors, pooled habitats, maps written) vs reading
  the 4D series and averaging the ROI curve; quality: Dice of habitat 1 vs the true
  aggressive subregion;
- gene modules: ``GeneModules`` hierarchical vs Leiden; quality: adjusted Rand index vs the
  simulator's modules;
- harmonisation: ``ComBatHarmonizer`` fit + transform vs calling neuroHarmonize directly
  (the wrapper's overhead); quality: centre-term p-values before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bayesrad.data.simulate import simulate
from bayesrad.features.dosimetry import extract_dosimetry
from bayesrad.features.genes import GeneModules
from bayesrad.features.harmonize import ComBatHarmonizer
from bayesrad.features.kinetics import extract_kinetics
from _machine import machine_info  # benchmarks/ is on sys.path when run as a script

RESULTS = Path(__file__).resolve().parent / "results" / "features_extra.json"


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def bench_dosimetry(n_patients: int, image_size: int, workdir: Path) -> dict:
    simulation = simulate("radiotherapy", n_patients=n_patients, seed=0, out=workdir / "rt", image_size=image_size)
    cohort = simulation.cohort
    dose_rows = cohort.images[cohort.images["modality"] == "DOSE"]

    def baseline():
        values = {}
        for _, row in dose_rows.iterrows():
            dose = sitk.GetArrayFromImage(sitk.ReadImage(row["path"]))
            mask = sitk.GetArrayFromImage(sitk.ReadImage(row["mask_path"])) == 1  # the GTV label
            values[row["patient_id"]] = (dose[mask].mean(), np.percentile(dose[mask], 5))
        return values

    _, baseline_s = _timed(baseline)
    table, bayesrad_s = _timed(extract_dosimetry, cohort, alpha_beta_gy=10.0, n_fractions=30, geud_a=-10)
    truth = cohort.blocks["dosimetry"].loc[table.index]
    return {
        "patients": int(len(table)),
        "features_per_patient": int(table.shape[1]),
        "bayesrad_s": round(bayesrad_s, 3),
        "baseline_mean_d95_only_s": round(baseline_s, 3),
        "bayesrad_over_baseline": round(bayesrad_s / baseline_s, 2),
        "per_patient_ms": round(1000 * bayesrad_s / len(table), 1),
        "max_abs_error_mean_gy": float(np.max(np.abs(table["dose_gtv_mean_gy"] - truth["dose_mean_gy"]))),
        "max_abs_error_d95_gy_vs_interpolated_percentile": float(np.max(np.abs(table["dose_gtv_d95_gy"] - truth["d95_gy"]))),
    }


def bench_kinetics(n_patients: int, image_size: int, workdir: Path) -> dict:
    simulation = simulate("glioma_pet", n_patients=n_patients, seed=0, out=workdir / "gl", image_size=image_size)
    cohort = simulation.cohort
    rows = cohort.images[cohort.images["modality"] == "DPET"]

    def baseline():
        curves = {}
        for _, row in rows.iterrows():
            series = sitk.GetArrayFromImage(sitk.ReadImage(row["path"]))
            mask = sitk.GetArrayFromImage(sitk.ReadImage(row["mask_path"])) > 0
            curves[row["patient_id"]] = series[:, mask].mean(axis=1)
        return curves

    _, baseline_s = _timed(baseline)
    maps = workdir / "habitats"
    table, bayesrad_s = _timed(extract_kinetics, cohort, habitat_dir=maps)
    truth_paths = simulation.truth.truth_images.set_index("patient_id")["path"]
    dices = []
    for patient in table.index:
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(maps / f"{patient}_habitats.nii.gz")))
        aggressive = sitk.GetArrayFromImage(sitk.ReadImage(truth_paths[patient])) > 0
        dices.append(2 * np.sum((labels == 1) & aggressive) / ((labels == 1).sum() + aggressive.sum()))
    return {
        "patients": int(len(table)),
        "bayesrad_s": round(bayesrad_s, 3),
        "baseline_roi_mean_curve_only_s": round(baseline_s, 3),
        "bayesrad_over_baseline": round(bayesrad_s / baseline_s, 2),
        "per_patient_ms": round(1000 * bayesrad_s / len(table), 1),
        "n_habitats": int(table.attrs["habitats"].n_habitats_),
        "dice_habitat1_vs_true_aggressive": {
            "median": round(float(np.median(dices)), 3),
            "min": round(float(np.min(dices)), 3),
        },
    }


def bench_genes(n_patients: int) -> dict:
    from sklearn.metrics import adjusted_rand_score

    simulation = simulate("radiotherapy", n_patients=n_patients, seed=0)
    counts = simulation.cohort.blocks["genes"]
    truth = simulation.truth.gene_modules.loc[counts.columns]
    result = {"patients": int(len(counts)), "genes": int(counts.shape[1])}
    for method in ("hierarchical", "leiden"):
        modules, seconds = _timed(GeneModules(method=method).fit, counts)
        in_module = truth.index[truth >= 0]
        result[method] = {
            "fit_s": round(seconds, 3),
            "n_modules": int(modules.n_modules_),
            "ari_all_genes": round(adjusted_rand_score(truth, modules.membership_.loc[truth.index, "module"]), 3),
            "ari_module_genes": round(adjusted_rand_score(truth[in_module], modules.membership_.loc[in_module, "module"]), 3),
        }
    result["leiden_over_hierarchical"] = round(result["leiden"]["fit_s"] / result["hierarchical"]["fit_s"], 2)
    return result


def bench_harmonize(n_patients: int) -> dict:
    import statsmodels.formula.api as smf
    from neuroHarmonize import harmonizationApply, harmonizationLearn
    from statsmodels.stats.anova import anova_lm

    simulation = simulate("wholebody_petct", n_patients=n_patients, seed=0)
    clinical, organs = simulation.cohort.blocks["clinical"], simulation.cohort.blocks["organ_suv"]
    table = clinical[["centre", "blood_glucose_mmol_l"]].join(organs)
    table["centre"] = table["centre"].astype(str)
    split = int(0.7 * len(table))
    train, test = table.iloc[:split], table.iloc[split:]
    features = list(organs.columns)

    def direct():
        covars = train[["centre", "blood_glucose_mmol_l"]].rename(columns={"centre": "SITE"}).reset_index(drop=True)
        test_covars = test[["centre", "blood_glucose_mmol_l"]].rename(columns={"centre": "SITE"}).reset_index(drop=True)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, _ = harmonizationLearn(train[features].to_numpy(), covars)
            return harmonizationApply(test[features].to_numpy(), test_covars, model)

    def wrapped():
        harmonizer = ComBatHarmonizer(batch_col="centre", covariates=["blood_glucose_mmol_l"], features=features).fit(train)
        return harmonizer.transform(test)

    _, direct_s = _timed(direct)
    harmonised, wrapped_s = _timed(wrapped)

    def centre_p(values):
        frame = test.assign(y=np.asarray(values))
        return float(anova_lm(smf.ols("y ~ blood_glucose_mmol_l + C(centre)", data=frame).fit(), typ=2).loc["C(centre)", "PR(>F)"])

    return {
        "train_patients": int(len(train)),
        "test_patients": int(len(test)),
        "features": len(features),
        "bayesrad_fit_transform_s": round(wrapped_s, 3),
        "neuroharmonize_direct_s": round(direct_s, 3),
        "bayesrad_over_direct": round(wrapped_s / direct_s, 2),
        "held_out_centre_p_before": {c: round(centre_p(test[c]), 5) for c in features},
        "held_out_centre_p_after": {c: round(centre_p(harmonised[c]), 3) for c in features},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer patients and 32^3 volumes")
    args = parser.parse_args()
    n_images, image_size, n_tabular = (10, 32, 300) if args.quick else (50, 48, 1000)
    # Import the heavy libraries before any clock starts, so no timing includes an import.
    import scanpy  # noqa: F401
    import sklearn.cluster  # noqa: F401
    import sklearn.mixture  # noqa: F401
    import statsmodels.formula.api  # noqa: F401

    workdir = Path(tempfile.mkdtemp(prefix="bayesrad_bench_features_extra_"))
    try:
        sections = {}
        for name, run in (
            ("dosimetry", lambda: bench_dosimetry(n_images, image_size, workdir)),
            ("kinetics", lambda: bench_kinetics(n_images, image_size, workdir)),
            ("genes", lambda: bench_genes(n_tabular)),
            ("harmonize", lambda: bench_harmonize(n_tabular)),
        ):
            sections[name] = run()
            print(name, json.dumps(sections[name]), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "benchmark": "features_extra",
        "quick": args.quick,
        "image_size": image_size,
        **sections,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
