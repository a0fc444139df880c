"""Validity checks of HybridBN on the simulator (issue 5), written to
benchmarks/results/validity.json with one key per check.

    .venv/bin/python benchmarks/validity.py [--quick] [--only default_settings]

Checks: parameter_recovery (radiotherapy, 500 patients), vi_vs_nuts (small graph),
calibration (2000 held-out radiotherapy patients: ECE, AUC vs the oracle, 90% PI coverage of
continuous nodes), missing_mcar / missing_mar (40% of patients without imaging),
sbc (small graph), survival (C-index vs the true model, S(t) at the median follow-up),
default_settings (recovery and calibration with HybridBN's defaults; ``--only
default_settings`` re-runs it alone).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bayesrad.data.simulate import simulate
from bayesrad.evaluate import auc, concordance, coverage, ece, survival_calibration
from bayesrad.evaluate.recovery import recovery, true_coefficients
from bayesrad.evaluate.sbc import simulation_based_calibration
from bayesrad.graph.graph import Graph, NodeSpec
from bayesrad.model import HybridBN
from _machine import machine_info  # benchmarks/ is on sys.path when run as a script

RESULTS = Path(__file__).resolve().parent / "results"
N_TRAIN, N_TEST = 500, 2000


def _machine() -> dict:
    return machine_info(torch_device="cpu")  # the validity checks fit on the CPU


def _split(cohort, n_train):
    ids = list(cohort.patient_ids)
    train = {k: v.loc[v.index.isin(ids[:n_train])] for k, v in cohort.blocks.items()}
    test = {k: v.loc[v.index.isin(ids[n_train:])] for k, v in cohort.blocks.items()}
    return train, test


def _fit(graph, blocks, steps, seed=0):
    return HybridBN(graph, num_steps=steps, learning_rate=0.03, seed=seed, num_threads=1,
                    n_samples=1000, tol=1e-5).fit(blocks)


def check_recovery_and_calibration(steps: int) -> dict:
    sim = simulate("radiotherapy", n_patients=N_TRAIN + N_TEST, seed=0)
    graph = Graph.from_networkx(sim.truth.graph)
    train, test = _split(sim.cohort, N_TRAIN)
    start = time.perf_counter()
    model = _fit(graph, train, steps)
    fit_s = time.perf_counter() - start
    # the gene modules' axes are identified only up to rotation: their edges are left out
    table = recovery(model.coefficients(), true_coefficients(sim.truth.parameters, ("genes",)))
    recovery_out = {
        "rate_inside_90ci": float(table["inside"].mean()), "target": ">= 0.8",
        "n_coefficients": len(table), "fit_seconds": fit_s, "n_steps": int(model.n_steps_),
        "excluded": "edges of the genes latent",
        "coefficients": {f"{p} -> {c}": {k: (bool(v) if k == "inside" else float(v))
                                         for k, v in row.items()}
                         for (p, c), row in table.iterrows()}}

    outcome = test["outcome"]
    y = outcome["local_control"]
    # at baseline a patient's survival is not yet known: it is no evidence about local control
    pred = model.predict(test, "local_control", ignore=["overall_survival"])
    oracle = sim.truth.outcome_probability.loc[y.index, "local_control"]
    covered = {}
    for node, block in (("dose_mean_gy", "dosimetry"), ("d95_gy", "dosimetry"),
                        ("age_years", "clinical")):
        p = model.predict(test, node)
        observed = test[block][node].reindex(p.index)
        keep = observed.notna()
        covered[node] = coverage(observed[keep], p["q05"][keep], p["q95"][keep])
    # ECE has a floor from the outcomes' own noise: that of the true probabilities on these
    # patients, and its mean and sd over outcomes redrawn from them (200 draws)
    rng = np.random.default_rng(0)
    redrawn = [ece((rng.random(len(y)) < oracle.to_numpy()).astype(float), oracle)
               for _ in range(200)]
    calibration = {"n_test": int(len(y)), "ece": ece(y, pred["mean"]), "ece_oracle": ece(y, oracle),
                   "ece_calibrated_mean_sd": [float(np.mean(redrawn)), float(np.std(redrawn))],
                   "auc": auc(y, pred["mean"]), "auc_oracle": auc(y, oracle),
                   "auc_gap": auc(y, oracle) - auc(y, pred["mean"]), "coverage_90": covered}

    follow_up = float(np.median(outcome["overall_survival"]))
    surv = model.predict(test, "overall_survival", times=[follow_up])
    # the true model's risk score: its linear predictor of log time, from the truth graph
    true_c = concordance(outcome["overall_survival"], outcome["overall_survival_event"],
                         _true_log_time(sim, outcome.index))
    # S(t) of every patient under 40 single posterior draws: the posterior sd of their mean
    draws = np.stack([model.survival_function(test, "overall_survival", [follow_up],
                                              n_samples=1, seed=100 + s)[:, 0]
                      for s in range(40)])
    calib = survival_calibration(outcome["overall_survival"], outcome["overall_survival_event"],
                                 surv[f"S@{follow_up:g}"], follow_up, draws=draws)
    calib["calibrated_at_0.01"] = bool(abs(calib["z"]) < 2.576)
    survival = {"c_index": concordance(outcome["overall_survival"],
                                       outcome["overall_survival_event"], surv["median"]),
                "c_index_true_model": true_c, "s_at_median_follow_up": calib,
                "median_follow_up_days": follow_up}
    survival["c_index_gap"] = survival["c_index_true_model"] - survival["c_index"]
    return {"parameter_recovery": recovery_out, "calibration": calibration, "survival": survival,
            "_model": model, "_test": test}


def _true_log_time(sim, index) -> pd.Series:
    """intercept + sum coef * parent (original units) + group effect, per patient."""
    params = sim.truth.parameters
    blocks = {k: v.reindex(index) for k, v in sim.cohort.blocks.items()}
    latents = sim.truth.latents.reindex(index)
    eta = pd.Series(params["intercept"]["overall_survival"], index=index)
    for (parent, child), c in params["coef"].items():
        if child != "overall_survival":
            continue
        if parent in latents.columns:
            values = latents[parent]
        else:
            values = next(b[parent] for b in blocks.values() if parent in b.columns).astype(float)
        eta = eta + c * values
    effects = params["group_effects"].get(("centre", "overall_survival"), {})
    centre = blocks["clinical"]["centre"].astype(str)
    return eta + centre.map(effects).astype(float)


MISSING_DEFINITION = (
    "Two models of the same graph, fitted with the same settings on the same 500 training "
    "patients: 'reference' on complete imaging, 'model' with 40% of them missing imaging "
    "(the mechanism named). auc_drop = AUC(reference) - AUC(model) on the same 2000 held-out "
    "patients with complete data: what the missing training data cost the fit. "
    "auc_drop_missing_test: the same on those patients with imaging missing as in training "
    "(both models answer patients without imaging). auc_drop_vs_complete_pipeline = "
    "AUC(reference, complete held-out) - AUC(model, held-out missing imaging): adds the "
    "information the absent images would have given each patient, which no method recovers. "
    "ece: the model's on the held-out patients missing imaging. The target (drop <= 0.03, "
    "ece <= 0.06) applies to auc_drop, auc_drop_missing_test and ece.")


def check_missing(steps: int, mechanism: str) -> dict:
    spec = {"imaging": {"rate": 0.4, "mechanism": mechanism, "depends_on": "age_years"}
            if mechanism == "MAR" else 0.4, "genes": 0.2}
    sim = simulate("radiotherapy", n_patients=N_TRAIN + N_TEST, seed=0, missing=spec)
    complete = simulate("radiotherapy", n_patients=N_TRAIN + N_TEST, seed=0,
                        missing={"genes": 0.2})
    # the same patients and values; only the imaging blocks differ
    pd.testing.assert_frame_equal(sim.cohort.blocks["outcome"], complete.cohort.blocks["outcome"])
    graph = Graph.from_networkx(sim.truth.graph)
    train, test = _split(sim.cohort, N_TRAIN)
    train_complete, test_complete = _split(complete.cohort, N_TRAIN)
    model = _fit(graph, train, steps)
    reference = _fit(graph, train_complete, steps)
    y = test["outcome"]["local_control"]

    def predicted(fitted, blocks):
        return fitted.predict(blocks, "local_control",
                              ignore=["overall_survival"])["mean"].reindex(y.index)

    p_model, p_ref = predicted(model, test), predicted(reference, test)
    p_model_full, p_ref_full = predicted(model, test_complete), predicted(reference, test_complete)
    test_ids = set(y.index)
    out = {"definition": MISSING_DEFINITION,
           "share_missing_imaging_train": 1 - len(train["radiomics"]) / N_TRAIN,
           "share_missing_imaging_test": 1 - len(set(test["radiomics"].index) & test_ids) / len(y),
           "auc_reference_complete_test": auc(y, p_ref_full),
           "auc_model_complete_test": auc(y, p_model_full),
           "auc_drop": auc(y, p_ref_full) - auc(y, p_model_full),
           "auc_reference_missing_test": auc(y, p_ref), "auc_model_missing_test": auc(y, p_model),
           "auc_drop_missing_test": auc(y, p_ref) - auc(y, p_model),
           "auc_drop_vs_complete_pipeline": auc(y, p_ref_full) - auc(y, p_model),
           "ece": ece(y, p_model), "ece_complete_test": ece(y, p_model_full),
           "ece_reference_missing_test": ece(y, p_ref)}
    out["meets_target"] = bool(out["auc_drop"] <= 0.03 and out["auc_drop_missing_test"] <= 0.03
                               and out["ece"] <= 0.06)
    return out


def check_vi_vs_nuts(steps: int, quick: bool) -> dict:
    rng = np.random.default_rng(0)
    n = 300
    ids = pd.Index([f"S{i:04d}" for i in range(n)], name="patient_id")
    age = rng.normal(65, 9, n)
    stage = rng.choice([1.0, 2.0, 3.0], n, p=[0.4, 0.35, 0.25])
    dose = 60 - 0.1 * (age - 65) + 1.5 * stage + rng.normal(0, 3, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-0.5 + 0.15 * (dose - 62) - 0.6 * (stage - 2))))).astype(float)
    blocks = {"clinical": pd.DataFrame({"age_years": age, "stage": stage, "dose_mean_gy": dose},
                                       index=ids),
              "outcome": pd.DataFrame({"local_control": y}, index=ids)}
    graph = Graph([NodeSpec("age_years", "continuous"), NodeSpec("stage", "ordinal"),
                   NodeSpec("dose_mean_gy", "continuous"), NodeSpec("local_control", "binary")],
                  [("age_years", "dose_mean_gy"), ("stage", "dose_mean_gy"),
                   ("dose_mean_gy", "local_control"), ("stage", "local_control")])
    nuts = HybridBN(graph, method="nuts", num_warmup=400 if quick else 1000,
                    num_samples=600 if quick else 1500, num_chains=2, seed=0, num_threads=1)
    vi = HybridBN(graph, num_steps=3000, learning_rate=0.02, seed=0, num_threads=1,
                  n_samples=4000, tol=0.0)
    return _vi_against_nuts(vi, nuts, blocks, nuts_draws=1200)


def _vi_against_nuts(vi: HybridBN, nuts: HybridBN, data, nuts_draws: int) -> dict:
    """Fit both and compare every coefficient on the model scale: |mean difference| in NUTS
    sds, the sd ratio VI / NUTS, and whether the signs agree where NUTS is clear of 0."""
    start = time.perf_counter()
    nuts.fit(data)
    nuts_s = time.perf_counter() - start
    start = time.perf_counter()
    vi.fit(data)
    vi_s = time.perf_counter() - start
    ref, approx = nuts.coefficients(n_samples=nuts_draws), vi.coefficients()
    z = (approx["std_mean"] - ref["std_mean"]).abs() / ref["std_sd"]
    ratio = approx["std_sd"] / ref["std_sd"]
    same_sign = (np.sign(approx["mean"]) == np.sign(ref["mean"])) | (ref["mean"].abs() < ref["sd"])
    return {"max_abs_mean_diff_in_nuts_sd": float(z.max()),
            "sd_ratio_min": float(ratio.min()), "sd_ratio_max": float(ratio.max()),
            "signs_agree_where_nuts_is_clear": bool(same_sign.all()),
            "per_coefficient": {f"{p} -> {c}": {"z": float(z[(p, c)]), "sd_ratio": float(ratio[(p, c)]),
                                                 "vi_mean": float(approx.loc[(p, c), "mean"]),
                                                 "nuts_mean": float(ref.loc[(p, c), "mean"])}
                                for p, c in z.index},
            "nuts_seconds": nuts_s, "vi_seconds": vi_s}


def check_vi_vs_nuts_factors(quick: bool) -> dict:
    """VI against NUTS on ``Graph.default``'s wide-block model: empirical-Bayes factors (fixed,
    signed loadings) under ridge shrinkage. The latent coefficients are comparable because
    both samplers see the same factors (before, every ``radiomics[0]`` coefficient's sign
    flipped between them)."""
    from bayesrad.data import Cohort

    rng = np.random.default_rng(1)
    n, p = 150, 40
    z = rng.normal(size=(n, 3))
    x = z @ rng.normal(size=(3, p)) + 0.7 * rng.normal(size=(n, p))
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.0 * z[:, 0] - 0.8 * z[:, 1])))).astype(float)
    frame = pd.DataFrame(x, columns=[f"feature_{j:02d}" for j in range(p)])
    frame.insert(0, "Target", y)
    frame.insert(0, "ID", [f"W{i:03d}" for i in range(n)])
    cohort = Cohort({"table": frame}, id_column="ID")
    graph = Graph.default(cohort, target="Target")
    nuts = HybridBN(graph, method="nuts", num_warmup=300 if quick else 800,
                    num_samples=400 if quick else 1000, num_chains=2, seed=0, num_threads=1)
    vi = HybridBN(graph, seed=0, num_threads=1, n_samples=4000)
    out = _vi_against_nuts(vi, nuts, cohort, nuts_draws=800)
    return {"factors": int(vi.layout_.latent_dim["table"]), **out}


def check_sbc(quick: bool) -> dict:
    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(60)]
    template = {"clinical": pd.DataFrame({"age_years": rng.normal(65, 9, 60),
                                          "dose_mean_gy": rng.normal(60, 4, 60)}, index=ids),
                "outcome": pd.DataFrame({"local_control": rng.integers(0, 2, 60).astype(float)},
                                        index=ids)}
    graph = Graph([NodeSpec("age_years", "continuous"), NodeSpec("dose_mean_gy", "continuous"),
                   NodeSpec("local_control", "binary")],
                  [("age_years", "dose_mean_gy"), ("dose_mean_gy", "local_control")])
    replicates = 20 if quick else 100
    # the fits use HybridBN's default settings: SBC checks inference as it is run (with 400
    # steps instead, 100 replicates rejected uniformity at p < 1e-6: unconverged fits)
    result = simulation_based_calibration(graph, template, n_replicates=replicates, n_draws=99,
                                          n_bins=5 if quick else 10, seed=0, num_threads=1)
    n_tests = len(result.tests)
    return {"n_replicates": replicates, "n_bins": 5 if quick else 10,
            "min_p_value": result.min_p_value,
            "rejected_at_0.01": bool(result.min_p_value < 0.01),
            "min_p_value_bonferroni": min(1.0, n_tests * result.min_p_value),
            "p_values": result.tests["p_value"].to_dict()}


def check_default_settings() -> dict:
    """Recovery and calibration of a fit with HybridBN's default settings (convergence at
    tol 1e-4, usually well before the 3000 steps the other checks run), on the same patients
    as ``parameter_recovery`` / ``calibration``: the figures a user gets without tuning."""
    sim = simulate("radiotherapy", n_patients=N_TRAIN + N_TEST, seed=0)
    graph = Graph.from_networkx(sim.truth.graph)
    train, test = _split(sim.cohort, N_TRAIN)
    start = time.perf_counter()
    model = HybridBN(graph, seed=0, num_threads=1).fit(train)
    fit_s = time.perf_counter() - start
    table = recovery(model.coefficients(), true_coefficients(sim.truth.parameters, ("genes",)))
    y = test["outcome"]["local_control"]
    p = model.predict(test, "local_control", ignore=["overall_survival"])["mean"]
    oracle = sim.truth.outcome_probability.loc[y.index, "local_control"]
    return {"settings": "HybridBN(graph, seed=0) defaults", "n_steps": int(model.n_steps_),
            "converged": bool(model.converged_), "fit_seconds": fit_s,
            "rate_inside_90ci": float(table["inside"].mean()), "n_coefficients": len(table),
            "ece": ece(y, p), "auc": auc(y, p), "auc_gap": auc(y, oracle) - auc(y, p)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer steps and replicates")
    parser.add_argument("--only", choices=["default_settings", "vi_vs_nuts_factors"],
                        help="run one check and update its key in the existing validity.json")
    args = parser.parse_args(argv)
    if args.only:
        path = RESULTS / "validity.json"
        out = json.loads(path.read_text())
        check = (check_default_settings() if args.only == "default_settings"
                 else check_vi_vs_nuts_factors(args.quick))
        out[args.only] = dict(check, machine=_machine())
        path.write_text(json.dumps(out, indent=1, default=float))
        print(json.dumps(out[args.only], indent=1, default=float))
        return out
    steps = 1500 if args.quick else 3000
    start = time.perf_counter()
    out: dict = {"machine": _machine(), "quick": args.quick}
    main_checks = check_recovery_and_calibration(steps)
    for key in ("parameter_recovery", "calibration", "survival"):
        out[key] = main_checks[key]
    out["missing_mcar"] = check_missing(steps, "MCAR")
    out["missing_mar"] = check_missing(steps, "MAR")
    out["vi_vs_nuts"] = check_vi_vs_nuts(steps, args.quick)
    out["vi_vs_nuts_factors"] = check_vi_vs_nuts_factors(args.quick)
    out["sbc"] = check_sbc(args.quick)
    out["default_settings"] = check_default_settings()
    out["seconds"] = time.perf_counter() - start
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "validity.json").write_text(json.dumps(out, indent=1, default=float))
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=1, default=float))
    return out


if __name__ == "__main__":
    main()
