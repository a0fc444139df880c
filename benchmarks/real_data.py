"""bayesrad against the baselines people use, on real public cohorts, on the same folds.

Writes ``benchmarks/results/real_data.json``:

- ``radmlbench``: the three radMLBench sets in ``../shared/data/tables/radmlbench``
  (Head-Neck-Radiomics-HN1 nodal status, WORC-Lipo, LGG-1p19qDeletion), stratified 5-fold x 3
  repeats, through ``bayesrad.evaluate.compare`` (every model on the same folds). bayesrad runs
  the README's path with defaults (``Cohort(..., id_column="ID")`` -> ``Graph.default`` ->
  ``HybridBN().fit`` -> ``predict``); the baselines are random forest and L1- / L2-logistic
  with C chosen by inner 5-fold CV on the training fold (log-loss). Per set: AUC per fold
  (mean, sd, each fold) and on the pooled out-of-fold predictions with its bootstrap 95% CI,
  the paired difference to the best baseline, ECE (10 equal-width bins; quantile bins too)
  with bayesrad's ECE noise floor, calibration slope and intercept, the sd of the predicted
  probabilities (a collapse to the base rate shows here), fit time per fold.
- ``hn1_survival``: HN1 overall survival (``../shared/data/tables/hn1_radiomics_survival``:
  clinical table + GTV-1 radiomics), the given train/test split and stratified 5-fold CV:
  Harrell's C of bayesrad (predicted median survival) and penalised CoxPH
  (``bayesrad.evaluate.baselines.CoxBaseline``: lifelines, the penalizer by inner CV), and
  S(2 years) predicted vs Kaplan-Meier on the test patients.
- ``missing_block``: HN1 survival, the GTV radiomics removed for the test patients: bayesrad
  fitted with the block and predicting without it, against bayesrad refitted without the block
  (the ideal for that pattern) and with it.
- ``wide_fit_time``: the default model's fit time on 200 patients x 1,000 columns beside the
  baselines' (median of 3 fits each, in the same run).
- ``ece_fold_sensitivity``: WORC-Lipo's ECE comparison on two more fold seeds.

Usage: ``python benchmarks/real_data.py [--quick] [--only SECTION ...]`` with SECTION among
``radmlbench hn1_survival missing_block wide_fit_time ece_fold_sensitivity`` (``--quick``: one
repeat of 5 folds). Everything uses one thread (torch and BLAS).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "tables"
RESULTS = REPO / "benchmarks" / "results" / "real_data.json"
RADMLBENCH = ("Head-Neck-Radiomics-HN1", "WORC-Lipo", "LGG-1p19qDeletion")
HN1_TIME, HN1_EVENT = "overall_survival_in_days", "event_overall_survival"
TWO_YEARS_DAYS = 730.0


# ----------------------------------------------------------------------------- data
def load_radmlbench(name: str):
    """One radMLBench set as a ``Cohort`` with one block ``table`` (the binary ``Target`` and
    every numeric feature), as a user would build it from the published CSV."""
    from bayesrad.data import Cohort

    frame = pd.read_csv(SHARED / "radmlbench" / "datasets" / f"{name}.csv.gz")
    numeric = [c for c in frame.columns if c not in ("ID", "Target")
               and pd.api.types.is_numeric_dtype(frame[c])]
    return Cohort({"table": frame[["ID", "Target"] + numeric]}, id_column="ID")


def load_hn1():
    """HN1: clinical (without outcomes and the split column), GTV-1 radiomics, OS outcome."""
    from bayesrad.data import Cohort

    folder = SHARED / "hn1_radiomics_survival"
    clinical = pd.read_csv(folder / "HN_ClinicalData.csv")
    outcome_cols = [c for c in clinical.columns
                    if any(k in c for k in ("survival", "recurrence", "metasta"))]
    split = clinical.set_index("id")["dataset"]
    radiomics = pd.read_csv(folder / "HN_Radiomics.csv")
    radiomics = (radiomics[radiomics["Structure"] == "GTV-1"]
                 .drop(columns=[radiomics.columns[0], "Structure"]))
    cohort = Cohort({
        "clinical": clinical.drop(columns=outcome_cols + ["dataset"]),
        "radiomics": radiomics,
        "outcome": clinical[["id", HN1_TIME, HN1_EVENT]],
    }, id_column="id")
    return cohort, split.astype(str)


# ----------------------------------------------------------------------------- models
def _fit_bayesrad(cohort, target: str, **settings):
    from bayesrad import Graph, HybridBN

    graph = Graph.default(cohort, target=target)
    return HybridBN(graph, num_threads=1, **settings).fit(cohort)


# ----------------------------------------------------------------------------- sections
def bench_radmlbench(quick: bool) -> dict:
    """bayesrad and the baselines through ``bayesrad.evaluate.compare`` (same folds)."""
    from bayesrad.evaluate.harness import compare, paired
    from bayesrad.evaluate.metrics import ece_noise_floor

    out = {}
    for name in RADMLBENCH:
        cohort = load_radmlbench(name)
        table = cohort.blocks["table"]
        result = compare(cohort, "Target", models=["bayesrad", "l1", "l2", "rf"],
                         cv="5x1" if quick else "5x3", seed=0, n_boot=1000)
        folds = result.attrs["folds"]
        entry = {"n_patients": int(len(table)), "n_features": int(table.shape[1] - 1),
                 "positive_share": float(table["Target"].mean()),
                 "n_folds": int(result.attrs["settings"]["n_folds"]), "models": {}}
        for model in ("bayesrad", "l1", "l2", "rf"):
            rows = result[result.model == model].set_index("metric")
            fold_auc = folds.loc[folds.model == model, "auc"].to_numpy()
            pooled = result.attrs["predictions"][model][:, 0]
            entry["models"][model] = {
                "auc_fold_mean": float(fold_auc.mean()), "auc_fold_sd": float(fold_auc.std()),
                "auc_folds": fold_auc.tolist(),
                **{f"{metric}": {"estimate": float(rows.loc[metric, "estimate"]),
                                 "ci_low": float(rows.loc[metric, "ci_low"]),
                                 "ci_high": float(rows.loc[metric, "ci_high"])}
                   for metric in rows.index},
                "sd_predicted_probability": float(pooled.std()),
                "fit_time_s_mean": result.attrs["fit_seconds"][model]}
            print(f"{name:28s} {model:9s} AUC/fold {fold_auc.mean():.3f} +- {fold_auc.std():.3f}  "
                  f"pooled AUC {rows.loc['auc', 'estimate']:.3f} [{rows.loc['auc', 'ci_low']:.3f}, "
                  f"{rows.loc['auc', 'ci_high']:.3f}]  ECE {rows.loc['ece', 'estimate']:.3f}  "
                  f"slope {rows.loc['calibration_slope', 'estimate']:.2f}  sd(p) {pooled.std():.3f}  "
                  f"fit {result.attrs['fit_seconds'][model]:.2f} s", flush=True)
        baselines = ("l1", "l2", "rf")
        best = max(baselines, key=lambda m: entry["models"][m]["auc_fold_mean"])
        diff = paired(result, "bayesrad", best, "auc", n_boot=2000)
        bayes_auc = entry["models"]["bayesrad"]["auc_fold_mean"]
        entry["best_baseline_auc"] = best
        entry["auc_vs_best"] = {**diff, "target": "bayesrad AUC >= best baseline's - 0.01",
                                "met": bool(bayes_auc >= entry["models"][best]["auc_fold_mean"] - 0.01)}
        best_ece = min(baselines, key=lambda m: entry["models"][m]["ece"]["estimate"])
        entry["ece_vs_best"] = {
            "bayesrad": entry["models"]["bayesrad"]["ece"]["estimate"], "best_baseline": best_ece,
            "best_baseline_ece": entry["models"][best_ece]["ece"]["estimate"],
            "bayesrad_noise_floor": ece_noise_floor(result.attrs["predictions"]["bayesrad"][:, 0],
                                                    strategy="uniform"),
            "met": bool(entry["models"]["bayesrad"]["ece"]["estimate"]
                        <= entry["models"][best_ece]["ece"]["estimate"]),
            # ECE on ~100-160 patients is noisy: the paired bootstrap says whether a gap is real
            "difference": paired(result, "bayesrad", best_ece, "ece", n_boot=2000)}
        out[name] = entry
    return out


def _km_at(time_days, event, t):
    from lifelines import KaplanMeierFitter

    km = KaplanMeierFitter().fit(time_days, event)
    value = float(km.survival_function_at_times(t).iloc[0])
    low, high = km.confidence_interval_survival_function_.pipe(
        lambda ci: ci[ci.index <= t].iloc[-1]).to_numpy()
    return value, float(low), float(high)


def bench_hn1_survival(quick: bool) -> dict:
    from lifelines.utils import concordance_index
    from sklearn.model_selection import StratifiedKFold

    from bayesrad.evaluate.baselines import CoxBaseline

    cohort, split = load_hn1()
    outcome = cohort.blocks["outcome"]
    ids = cohort.patient_ids
    splits = [("given", split.index[split == "train"].tolist(), split.index[split == "test"].tolist())]
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    for i, (a, b) in enumerate(cv.split(ids, outcome.loc[ids, HN1_EVENT])):
        if quick and i >= 2:
            break
        splits.append((f"cv{i}", ids[a].tolist(), ids[b].tolist()))
    rows = []
    for name, train, test in splits:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = _fit_bayesrad(cohort.subset(train), HN1_TIME)
        fit_s = time.perf_counter() - start
        blocks = {b: f.loc[f.index.intersection(test)] for b, f in cohort.blocks.items() if b != "outcome"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = model.predict(blocks, target=HN1_TIME, times=[TWO_YEARS_DAYS])
        y = outcome.loc[test]
        c_bayes = concordance_index(y[HN1_TIME], pred["median"].loc[test], y[HN1_EVENT])
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cox = CoxBaseline().fit(cohort.subset(train), HN1_TIME)
        cox_s = time.perf_counter() - start
        risk, penalizer = cox.predict(blocks)["risk"].loc[test].to_numpy(), cox.penalizer_
        c_cox = concordance_index(y[HN1_TIME], -risk, y[HN1_EVENT])
        km, km_low, km_high = _km_at(y[HN1_TIME], y[HN1_EVENT], TWO_YEARS_DAYS)
        s2 = float(pred[f"S@{TWO_YEARS_DAYS:g}"].mean())
        rows.append({"split": name, "n_train": len(train), "n_test": len(test),
                     "c_index_bayesrad": float(c_bayes), "c_index_coxph": float(c_cox),
                     "coxph_penalizer": penalizer,
                     "s_2y_predicted_mean": s2, "s_2y_kaplan_meier": km,
                     "s_2y_km_95ci": [km_low, km_high],
                     "s_2y_inside_km_ci": bool(km_low <= s2 <= km_high),
                     "fit_time_s_bayesrad": fit_s, "fit_time_s_coxph_with_inner_cv": cox_s})
        print(f"HN1 OS {name:6s} C bayesrad {c_bayes:.3f}  CoxPH {c_cox:.3f} (pen {penalizer})  "
              f"S(2y) {s2:.3f} vs KM {km:.3f} [{km_low:.3f}, {km_high:.3f}]  fit {fit_s:.1f} s",
              flush=True)
    cv_rows = [r for r in rows if r["split"] != "given"]
    return {"splits": rows,
            "cv_mean": {"c_index_bayesrad": float(np.mean([r["c_index_bayesrad"] for r in cv_rows])),
                        "c_index_coxph": float(np.mean([r["c_index_coxph"] for r in cv_rows]))},
            "target": "C-index >= penalised CoxPH's; S(2y) inside the Kaplan-Meier 95% CI"}


def bench_missing_block(quick: bool) -> dict:
    """HN1 OS on the given split: radiomics removed for the test patients."""
    from lifelines.utils import concordance_index

    cohort, split = load_hn1()
    train = split.index[split == "train"].tolist()
    test = split.index[split == "test"].tolist()
    outcome = cohort.blocks["outcome"].loc[test]
    clinical_only = {"clinical": cohort.blocks["clinical"].loc[test]}
    full = {"clinical": cohort.blocks["clinical"].loc[test],
            "radiomics": cohort.blocks["radiomics"].loc[test]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with_block = _fit_bayesrad(cohort.subset(train), HN1_TIME)
        train_blocks = {b: f.loc[f.index.intersection(train)] for b, f in cohort.blocks.items()
                        if b != "radiomics"}
        from bayesrad.data import Cohort

        without_block = _fit_bayesrad(Cohort(train_blocks), HN1_TIME)
        answers = {
            "fitted_with_block_predicted_with_it": with_block.predict(full, target=HN1_TIME),
            "fitted_with_block_predicted_without_it": with_block.predict(clinical_only, target=HN1_TIME),
            "refitted_without_block": without_block.predict(clinical_only, target=HN1_TIME),
        }
    out = {k: float(concordance_index(outcome[HN1_TIME], v["median"].loc[test], outcome[HN1_EVENT]))
           for k, v in answers.items()}
    out["c_index_lost_vs_refit"] = (out["refitted_without_block"]
                                    - out["fitted_with_block_predicted_without_it"])
    print("missing block (HN1 OS, given split):", json.dumps(out), flush=True)
    return {"metric": "Harrell's C on the 35 test patients", **out}


def bench_wide_fit_time(quick: bool) -> dict:
    """Fit time of the default model on 200 patients x 1,000 columns (a binary target from 5
    factors of skewed columns), against the baselines in the same run (median of 3 fits)."""
    from sklearn.metrics import roc_auc_score

    from bayesrad.data import Cohort

    rng = np.random.default_rng(0)
    n, p = 300, 1000
    z = rng.normal(size=(n, 5))
    x = np.exp(0.4 * z @ rng.normal(size=(5, p)) / np.sqrt(5) + 0.5 * rng.normal(size=(n, p)))
    prob = 1 / (1 + np.exp(-(1.2 * z[:, 0] - z[:, 1] + 0.6 * z[:, 2])))
    y = (rng.random(n) < prob).astype(int)
    frame = pd.DataFrame(x, columns=[f"feature_{j:04d}" for j in range(p)])
    frame.insert(0, "Target", y)
    frame.insert(0, "ID", [f"p{i:03d}" for i in range(n)])
    train, test = frame.iloc[:200], frame.iloc[200:]
    out = {"n_train": 200, "n_columns": p, "n_test": 100, "models": {}}
    from bayesrad.evaluate.baselines import make_model

    train_cohort = Cohort({"table": train}, id_column="ID")
    test_cohort = Cohort({"table": test.drop(columns="Target")}, id_column="ID")
    # every model through the evaluation baselines' one contract: fit(data, target), predict
    for name in ("bayesrad", "l2", "l1", "rf"):
        times, auc = [], None
        for _ in range(1 if quick else 3):
            model = make_model(name)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(train_cohort, "Target")
            times.append(time.perf_counter() - start)
            pred = model.predict(test_cohort)["mean"].to_numpy()
            auc = float(roc_auc_score(test["Target"], pred))
        out["models"][name] = {"fit_time_s_median": float(np.median(times)), "fit_times_s": times,
                               "test_auc": auc}
        print(f"wide 200x{p}: {name:9s} fit {np.median(times):.2f} s  AUC {auc:.3f}", flush=True)
    out["oracle_test_auc"] = float(roc_auc_score(test["Target"], prob[200:]))
    out["target"] = "bayesrad fit <= 5 s on this machine (2 cores)"
    return out


def bench_ece_fold_sensitivity(quick: bool) -> dict:
    """WORC-Lipo, where bayesrad's ECE missed the best baseline's at the primary fold seed (0):
    the same comparison on two more fold assignments (seeds 1 and 2, 5x3 each), to show
    whether the ordering of ECE is a property of the models or of the folds. The primary
    result (``radmlbench``, seed 0) stays the one reported against the target."""
    from bayesrad.evaluate.harness import compare, paired

    name, baselines = "WORC-Lipo", ("l1", "l2", "rf")
    cohort = load_radmlbench(name)
    out = {"dataset": name, "seeds": {}}
    for seed in (1,) if quick else (1, 2):
        result = compare(cohort, "Target", models=["bayesrad", *baselines],
                         cv="5x1" if quick else "5x3", seed=seed, n_boot=200)
        est = {m: {metric: float(result[(result.model == m) & (result.metric == metric)]
                                 ["estimate"].iloc[0]) for metric in ("ece", "auc", "brier")}
               for m in ("bayesrad", *baselines)}
        best = min(baselines, key=lambda m: est[m]["ece"])
        out["seeds"][str(seed)] = {
            "models": est, "best_baseline_ece": best,
            "ece_met": bool(est["bayesrad"]["ece"] <= est[best]["ece"]),
            "ece_difference_vs_best": paired(result, "bayesrad", best, "ece", n_boot=2000)}
        print(f"{name} fold seed {seed}: ECE bayesrad {est['bayesrad']['ece']:.3f}, "
              + ", ".join(f"{m} {est[m]['ece']:.3f}" for m in baselines), flush=True)
    return out


SECTIONS = {"radmlbench": bench_radmlbench, "hn1_survival": bench_hn1_survival,
            "missing_block": bench_missing_block, "wide_fit_time": bench_wide_fit_time,
            "ece_fold_sensitivity": bench_ece_fold_sensitivity}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", choices=sorted(SECTIONS))
    args = parser.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    # one thread for every model (torch and the BLAS behind numpy/scikit-learn), so fit times
    # compare like with like and the 2-core machine is not oversubscribed
    torch.set_num_threads(1)
    threadpool_limits(1)
    for name in args.only or SECTIONS:
        start = time.perf_counter()
        section = SECTIONS[name](args.quick)
        section["section_time_s"] = round(time.perf_counter() - start, 1)
        section["machine"] = machine_info()
        section["command"] = " ".join(["python benchmarks/real_data.py"] + sys.argv[1:])
        section["quick"] = args.quick
        # sections run separately (--only) update the file; re-read it just before writing
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        results[name] = section
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        tmp = RESULTS.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2))
        tmp.replace(RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
