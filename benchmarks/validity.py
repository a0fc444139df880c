"""Validity checks of HybridBN on the simulator (issue 5), written to
benchmarks/results/validity.json with one key per check.

    .venv/bin/python benchmarks/validity.py [--quick]

Checks: parameter_recovery (radiotherapy, 500 patients), vi_vs_nuts (small graph),
calibration (2000 held-out radiotherapy patients: ECE, AUC vs the oracle, 90% PI coverage of
continuous nodes), missing_mcar / missing_mar (40% of patients without imaging),
sbc (small graph), survival (C-index vs the true model, S(t) at the median follow-up).
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


def _truth_coefficients(parameters):
    out = {}
    for (parent, child), value in parameters["coef"].items():
        if isinstance(value, list):
            for level, v in zip(parameters["levels"][child][1:], value[1:]):
                out[(parent, f"{child}[{level}]")] = float(v)
        else:
            out[(parent, child)] = float(value)
    return out


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
    coefs = model.coefficients()
    inside = {}
    for key, value in _truth_coefficients(sim.truth.parameters).items():
        if "genes" in key[0] or "genes" in key[1]:
            continue   # module axes are shuffled across genes: identified up to rotation
        inside[f"{key[0]} -> {key[1]}"] = bool(coefs.loc[key, "q05"] <= value <= coefs.loc[key, "q95"])
    recovery = {"rate_inside_90ci": float(np.mean(list(inside.values()))),
                "n_coefficients": len(inside), "inside": inside, "fit_seconds": fit_s,
                "n_steps": int(model.n_steps_), "excluded": "edges of the genes latent"}

    outcome = test["outcome"]
    y = outcome["local_control"]
    pred = model.predict(test, "local_control")
    oracle = sim.truth.outcome_probability.loc[y.index, "local_control"]
    covered = {}
    for node, block in (("dose_mean_gy", "dosimetry"), ("d95_gy", "dosimetry"),
                        ("age_years", "clinical")):
        p = model.predict(test, node)
        observed = test[block][node].reindex(p.index)
        keep = observed.notna()
        covered[node] = coverage(observed[keep], p["q05"][keep], p["q95"][keep])
    calibration = {"n_test": int(len(y)), "ece": ece(y, pred["mean"]), "auc": auc(y, pred["mean"]),
                   "auc_oracle": auc(y, oracle), "auc_gap": auc(y, oracle) - auc(y, pred["mean"]),
                   "coverage_90": covered}

    follow_up = float(np.median(outcome["overall_survival"]))
    surv = model.predict(test, "overall_survival", times=[follow_up])
    true_time = sim.truth.latents.loc[outcome.index, "overall_survival_true_time"]
    params = sim.truth.parameters
    # the true model's risk score: its linear predictor of log time, from the truth graph
    true_c = concordance(outcome["overall_survival"], outcome["overall_survival_event"],
                         _true_log_time(sim, outcome.index))
    calib = survival_calibration(outcome["overall_survival"], outcome["overall_survival_event"],
                                 surv[f"S@{follow_up:g}"], follow_up)
    survival = {"c_index": concordance(outcome["overall_survival"],
                                       outcome["overall_survival_event"], surv["median"]),
                "c_index_true_model": true_c, "s_at_median_follow_up": calib,
                "median_follow_up_days": follow_up,
                "true_time_available": bool(len(true_time))}
    survival["c_index_gap"] = survival["c_index_true_model"] - survival["c_index"]
    del params
    return {"parameter_recovery": recovery, "calibration": calibration, "survival": survival,
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


def check_missing(steps: int, mechanism: str) -> dict:
    spec = {"imaging": {"rate": 0.4, "mechanism": mechanism, "depends_on": "age_years"}
            if mechanism == "MAR" else 0.4, "genes": 0.2}
    sim = simulate("radiotherapy", n_patients=N_TRAIN + N_TEST, seed=0, missing=spec)
    complete = simulate("radiotherapy", n_patients=N_TRAIN + N_TEST, seed=0,
                        missing={"genes": 0.2})
    graph = Graph.from_networkx(sim.truth.graph)
    train, test = _split(sim.cohort, N_TRAIN)
    train_complete, _ = _split(complete.cohort, N_TRAIN)
    model = _fit(graph, train, steps)
    reference = _fit(graph, train_complete, steps)
    y = test["outcome"]["local_control"]
    p = model.predict(test, "local_control")["mean"]
    p_ref = reference.predict(test, "local_control")["mean"]
    _, test_complete = _split(complete.cohort, N_TRAIN)
    p_full = reference.predict(test_complete, "local_control")["mean"]
    missing_share = 1 - len(train["radiomics"]) / N_TRAIN
    return {"share_missing_imaging_train": missing_share, "ece": ece(y, p), "auc": auc(y, p),
            "auc_complete_data_model_same_test": auc(y, p_ref),
            "auc_drop": auc(y, p_ref) - auc(y, p),
            "auc_complete_model_complete_test": auc(y, p_full),
            "auc_drop_vs_complete_test": auc(y, p_full) - auc(y, p),
            "note": "auc_drop compares models fitted with and without missing imaging on the "
                    "same held-out patients; auc_drop_vs_complete_test adds the information "
                    "the missing images would have given at prediction time"}


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
    start = time.perf_counter()
    nuts = HybridBN(graph, method="nuts", num_warmup=400 if quick else 1000,
                    num_samples=600 if quick else 1500, num_chains=2, seed=0,
                    num_threads=1).fit(blocks)
    nuts_s = time.perf_counter() - start
    start = time.perf_counter()
    vi = HybridBN(graph, num_steps=3000, learning_rate=0.02, seed=0, num_threads=1,
                  n_samples=4000, tol=0.0).fit(blocks)
    vi_s = time.perf_counter() - start
    ref, approx = nuts.coefficients(n_samples=1200), vi.coefficients()
    z = ((approx["std_mean"] - ref["std_mean"]).abs() / ref["std_sd"])
    ratio = approx["std_sd"] / ref["std_sd"]
    return {"max_abs_mean_diff_in_nuts_sd": float(z.max()),
            "sd_ratio_min": float(ratio.min()), "sd_ratio_max": float(ratio.max()),
            "per_coefficient": {f"{p} -> {c}": {"z": float(z[(p, c)]), "sd_ratio": float(ratio[(p, c)])}
                                for p, c in z.index},
            "nuts_seconds": nuts_s, "vi_seconds": vi_s}


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
    result = simulation_based_calibration(graph, template, n_replicates=replicates, n_draws=99,
                                          n_bins=5 if quick else 10, seed=0, num_steps=400,
                                          learning_rate=0.05, num_threads=1)
    return {"n_replicates": replicates, "min_p_value": result.min_p_value,
            "rejected_at_0.01": bool(result.min_p_value < 0.01),
            "p_values": result.tests["p_value"].to_dict()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer steps and replicates")
    args = parser.parse_args(argv)
    steps = 1500 if args.quick else 3000
    start = time.perf_counter()
    out: dict = {"machine": _machine(), "quick": args.quick}
    main_checks = check_recovery_and_calibration(steps)
    for key in ("parameter_recovery", "calibration", "survival"):
        out[key] = main_checks[key]
    out["missing_mcar"] = check_missing(steps, "MCAR")
    out["missing_mar"] = check_missing(steps, "MAR")
    out["vi_vs_nuts"] = check_vi_vs_nuts(steps, args.quick)
    out["sbc"] = check_sbc(args.quick)
    out["seconds"] = time.perf_counter() - start
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "validity.json").write_text(json.dumps(out, indent=1, default=float))
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=1, default=float))
    return out


if __name__ == "__main__":
    main()
