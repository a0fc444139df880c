"""Feature-extraction benchmark: ROIs per minute, plain pyradiomics vs bayesrad's cohort runner.

Two workloads, each timed in the same run:
  real       the pyradiomics example cases (brain1, brain2, breast1, lung1, lung2: MR and CT)
  simulated  the radiotherapy scenario of the simulator (CT + PET per patient, 48^3 voxels)
Each is extracted (every original-image feature class; presets CT ``pyradiomics_default``,
MR ``mr_normalised``, PET ``pet_suv``) by
  baseline   a plain sequential loop over pyradiomics' RadiomicsFeatureExtractor.execute
             (pyradiomics defaults, diagnostics on)
  n_jobs=1   bayesrad.features.extract.extract_cohort in this process (cold cache); it turns
             pyradiomics' per-ROI diagnostics off (identical feature values, less work)
  n_jobs=2   the same with 2 worker processes (cold cache)
  cached     the n_jobs=2 run repeated (every ROI read from the cache)
Ratios are against the baseline of the same run. Results: benchmarks/results/features.json.

    python benchmarks/features.py            # 100 simulated patients (a few minutes on 2 cores)
    python benchmarks/features.py --quick    # 16 simulated patients, real cases brain1 and breast1 only
    python benchmarks/features.py --validation   # also regenerate docs/radiomics_validation.md (~2 min)
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
from _machine import machine_info  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "data" / "radiomics_reference"


def _machine() -> dict:
    import radiomics

    return machine_info(pyradiomics=radiomics.__version__)


def _plain_pyradiomics(images: pd.DataFrame) -> float:
    """Seconds for the baseline: one extractor per modality, a loop over ROIs (label 1)."""
    import radiomics
    from radiomics import featureextractor

    from bayesrad.features.radiomics import DEFAULT_MODALITY_SETTINGS, PRESET_DIR

    radiomics.setVerbosity(logging.ERROR)
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    extractors = {}
    started = time.perf_counter()
    for row in images.itertuples():
        modality = row.modality.split("_")[0].upper()
        if modality not in extractors:
            extractors[modality] = featureextractor.RadiomicsFeatureExtractor(str(PRESET_DIR / f"{DEFAULT_MODALITY_SETTINGS[modality]}.yaml"))
        extractors[modality].execute(row.path, row.mask_path, label=int(row.mask_labels))
    return time.perf_counter() - started


def _bayesrad_runs(images: pd.DataFrame, workdir: Path) -> dict:
    from bayesrad.features.extract import extract_cohort, radiomics_step

    out = {}
    for label, n_jobs, out_dir in (("n_jobs=1", 1, workdir / "cold1"), ("n_jobs=2", 2, workdir / "cold2"), ("cached", 2, workdir / "cold2")):
        started = time.perf_counter()
        result = extract_cohort(images, out_dir, steps=[radiomics_step()], n_jobs=n_jobs, progress=False)
        seconds = time.perf_counter() - started
        out[label] = {"seconds": seconds, "n_rois": result.n_units, "n_cached": result.n_cached,
                      "n_failures": int(len(result.failures))}
    return out


def _workload(name: str, images: pd.DataFrame, workdir: Path) -> dict:
    n_rois = len(images)
    baseline_s = _plain_pyradiomics(images)
    runs = _bayesrad_runs(images, workdir / name)
    report = {"n_rois": n_rois, "baseline_plain_pyradiomics": {"seconds": baseline_s, "rois_per_minute": 60 * n_rois / baseline_s,
                                                               "seconds_per_roi": baseline_s / n_rois}}
    for label, run in runs.items():
        run["rois_per_minute"] = 60 * n_rois / run["seconds"]
        run["speedup_vs_baseline"] = baseline_s / run["seconds"]
        report[label] = run
    report["cached_over_cold_n_jobs2"] = runs["cached"]["seconds"] / runs["n_jobs=2"]["seconds"]
    return report


def _real_images(cases) -> pd.DataFrame:
    data = REFERENCE / "pyradiomics" / "data"
    rows = []
    for case in cases:
        modality = "MR" if case.startswith(("brain", "breast")) else "CT"
        rows.append({"patient_id": case, "modality": modality, "path": str(data / f"{case}_image.nrrd"),
                     "mask_path": str(data / f"{case}_label.nrrd"), "mask_labels": "1", "roi": "tumour", "units": ""})
    return pd.DataFrame(rows)


def _simulated_images(n_patients: int, workdir: Path) -> pd.DataFrame:
    import bayesrad

    simulation = bayesrad.simulate("radiotherapy", n_patients=n_patients, seed=0, missing=0.0, out=workdir / "sim", image_size=48)
    images = simulation.cohort.images
    return images[images["modality"].isin(["CT", "PET"])].reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="16 simulated patients, 2 real cases")
    parser.add_argument("--patients", type=int, default=None, help="simulated patients (default 100, quick 16)")
    parser.add_argument("--validation", action="store_true", help="regenerate docs/radiomics_validation.md")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "features.json"))
    args = parser.parse_args()

    n_patients = args.patients or (16 if args.quick else 100)
    cases = ["brain1", "breast1"] if args.quick else ["brain1", "brain2", "breast1", "lung1", "lung2"]
    report = {"benchmark": "features", "machine": _machine(), "quick": args.quick,
              "settings": "every original-image class; CT pyradiomics_default, MR mr_normalised, PET pet_suv"}
    workdir = Path(tempfile.mkdtemp(prefix="bayesrad_features_bench_"))
    try:
        if REFERENCE.exists():
            report["real_pyradiomics_cases"] = {"cases": cases, **_workload("real", _real_images(cases), workdir)}
        started = time.perf_counter()
        images = _simulated_images(n_patients, workdir)
        report["simulated_radiotherapy"] = {"n_patients": n_patients, "simulate_seconds": time.perf_counter() - started,
                                            **_workload("simulated", images, workdir)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    if args.validation:
        from radiomics_report import validation_report  # benchmarks/ on sys.path

        from bayesrad.features.radiomics import ibsi_validation, reproduce_pyradiomics_baseline

        started = time.perf_counter()
        baseline = reproduce_pyradiomics_baseline(REFERENCE)
        ibsi = ibsi_validation(REFERENCE)
        (ROOT / "docs" / "radiomics_validation.md").write_text(validation_report(REFERENCE, baseline, ibsi))
        counts = ibsi.groupby(["dataset", "status"]).size().unstack(fill_value=0)
        report["validation"] = {
            "seconds": time.perf_counter() - started,
            "pyradiomics_baseline": {"values": len(baseline), "match_rel_1e-6": int(baseline["match"].sum())},
            "ibsi": {d: {k: int(v) for k, v in counts.loc[d].items()} for d in counts.index},
        }

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
