"""Structure-learning benchmark: quality on the simulator and pgmpy's networks, calibration of
bootstrap edge probabilities, and speed (one search; bootstraps on 1 vs 2 workers).

Writes benchmarks/results/structure.json:
- ``simulator``: per scenario (radiotherapy, wholebody_petct; 500 patients, several seeds),
  SHD, CPDAG SHD, skeleton precision/recall and orientation accuracy (DAG and CPDAG) against
  the true DAG, in the same run: without tiers, with the default block tiers, with finer
  clinical tiers (``SCENARIO_KNOWLEDGE``), and the score of the previous default (pgmpy's
  conditional-Gaussian BIC, over one-component block summaries) without and with block
  tiers.
- ``missing_rows``: radiotherapy at its default missingness, the search imputing missing
  block summaries (the default) or using complete cases, against the same cohort with no
  modality missing.
- ``calibration``: bootstrap edge probabilities (under block tiers and under clinical tiers)
  binned against the truth (adjacency for the edge strength, directed edge for P(u -> v)),
  per scenario and pooled; the averaged (Scutari-thresholded) graphs' metrics and the false
  adjacencies given strength >= 0.9 are in ``simulator``.
- ``bundled``: bayesrad's search (default, and greedy: no tabu walk, no restarts) vs plain
  pgmpy ``HillClimbSearch`` (same score, same data) on asia, alarm (discrete, BIC) and ecoli70
  (linear Gaussian, BIC): SHD, CPDAG SHD, the score each graph reaches (and the true DAG's)
  and seconds; plain pgmpy runs in fresh interpreters under several PYTHONHASHSEEDs, since
  its result depends on the hash seed (bayesrad's does not).
- ``speed``: a mixed node table (40 nodes x 500 rows in the full run): one search with the
  default score; one ``bic-cg`` search with bayesrad's numpy score against the same search on
  pgmpy's ``bic-cg`` implementation (same graph expected); B bootstraps with 1 and 2 worker
  processes (speed-up = t1 / t2, same run).

Run: ``PYTHONHASHSEED=0 .venv/bin/python benchmarks/structure.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd

import bayesrad
from bayesrad.graph.bootstrap import bootstrap_structure
from bayesrad.graph.knowledge import DEFAULT_BLOCK_TIERS, ExpertKnowledge
from bayesrad.graph.node_table import build_node_table
from bayesrad.graph.structure import (HillClimbLearner, compare_graphs, kind_constraints,
                                      learn_structure, make_score, prepare_table)
from bayesrad.graph.knowledge import packaged_tiers
from _machine import machine_info  # benchmarks/ is on sys.path when run as a script

RESULTS = Path(__file__).resolve().parent / "results" / "structure.json"
METRICS = ("shd", "cpdag_shd", "skeleton_precision", "skeleton_recall",
           "orientation_accuracy", "cpdag_orientation_accuracy", "n_learned")

# Expert knowledge per scenario, at two levels of detail.
# - block: the default block tiers (demographics -> disease: clinical, imaging, genes ->
#   treatment -> outcome) plus the patient factors of the clinical block as demographics.
# - clinical: what a clinician adds about single columns. Radiotherapy: the demo's tiers
#   (``bayesrad/graph/tiers/radiotherapy.yaml``, reasons there). Whole-body PET/CT: patient
#   factors and the centre (scanner, patient mix) precede what is measured; tumour burden
#   sets its spread (metastases); organ uptake is physiology modulated by patient factors
#   and the tumour (marrow reaction), measured on the same scan.
_RT_PATIENT = ("age_years", "sex_male", "centre")
_WB_PATIENT = ("age_years", "sex_male", "centre", "bmi_kg_m2", "blood_glucose_mmol_l")
SCENARIO_KNOWLEDGE = {
    "radiotherapy": {
        "block_tiers": dict(node_tiers={n: "demographics" for n in _RT_PATIENT}),
        "clinical_tiers": packaged_tiers("radiotherapy"),
    },
    "wholebody_petct": {
        "block_tiers": dict(
            block_tiers=dict(DEFAULT_BLOCK_TIERS,
                             disease=DEFAULT_BLOCK_TIERS["disease"] + ("organ_suv",)),
            node_tiers={n: "demographics" for n in _WB_PATIENT}),
        "clinical_tiers": dict(
            block_tiers={"patient": (), "tumour": ("radiomics",), "spread": ("clinical",),
                         "uptake": ("organ_suv",), "outcome": ("outcome",)},
            node_tiers={n: "patient" for n in _WB_PATIENT}),
    },
}
CALIBRATION_BINS = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]


def machine() -> dict:
    return machine_info(pythonhashseed=os.environ.get("PYTHONHASHSEED"))


def calibration_table(probability: np.ndarray, truth: np.ndarray) -> list[dict]:
    """Rows per probability bin: count, mean predicted probability, fraction true, and the
    fraction's binomial standard error."""
    rows = []
    edges = CALIBRATION_BINS
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == len(edges) - 2
        inside = (probability >= lo) & ((probability <= hi) if last else (probability < hi))
        count = int(inside.sum())
        frac = float(truth[inside].mean()) if count else None
        rows.append({"bin": f"[{lo:.1f}, {hi:.1f}{']' if last else ')'}", "n_pairs": count,
                     "mean_probability": float(probability[inside].mean()) if count else None,
                     "fraction_true": frac,
                     "fraction_true_se": (float(np.sqrt(frac * (1 - frac) / count))
                                          if count else None)})
    return rows


def _metrics(learned, truth) -> dict:
    full = compare_graphs(learned, truth)
    return {k: full[k] for k in METRICS}


def _mean(rows: list[dict]) -> dict:
    return {k: float(np.nanmean([r[k] for r in rows])) for k in METRICS}


def scenario_quality(scenario: str, n_patients: int, seeds: list[int], n_bootstrap: int,
                     n_jobs: int) -> tuple[dict, dict]:
    conditions = ("no_tiers", "block_tiers", "clinical_tiers", "bic_cg_no_tiers",
                  "bic_cg_block_tiers")
    per_seed = []
    pairs = {level: {"strength": [], "directed": []} for level in SCENARIO_KNOWLEDGE[scenario]}
    for seed in seeds:
        sim = bayesrad.simulate(scenario, n_patients=n_patients, seed=seed)
        truth = sim.truth.graph
        table = build_node_table(sim.cohort, seed=seed)
        table_1 = build_node_table(sim.cohort, seed=seed, latent_dim=1)
        knowledge = {level: ExpertKnowledge.from_blocks(table.blocks, **kwargs)
                     for level, kwargs in SCENARIO_KNOWLEDGE[scenario].items()}
        row = {"seed": seed, "n_patients": len(table.data),
               "n_patients_imputed": len(table.imputed_patients),
               "n_nodes": len(table.nodes),
               "truth_violates": {level: k.violations(truth.edges)
                                  for level, k in knowledge.items()}}
        for label in conditions:
            cg = label.startswith("bic_cg")
            k = (knowledge["block_tiers"] if label.endswith("block_tiers") else
                 knowledge["clinical_tiers"] if label == "clinical_tiers" else None)
            start = time.perf_counter()
            graph = (learn_structure(table_1, knowledge=k, score="bic-cg") if cg
                     else learn_structure(table, knowledge=k))
            row[label] = dict(_metrics(graph, truth),
                              seconds=round(time.perf_counter() - start, 2))
        true_edges = set(truth.edges)
        for level in (SCENARIO_KNOWLEDGE[scenario] if n_bootstrap else ()):
            learner = HillClimbLearner(
                knowledge=knowledge[level].merged(forbidden=kind_constraints(table.kinds)),
                vector_nodes=table.vector_nodes, impute=bool(table.imputed_patients))
            start = time.perf_counter()
            boot = bootstrap_structure(table.data, learner, n_bootstrap=n_bootstrap, seed=seed,
                                       n_jobs=n_jobs)
            averaged = boot.averaged_dag()
            strength = boot.strength()
            confident = strength[(strength["strength"] >= 0.9)
                                 & (strength["from"] < strength["to"])]
            row[f"bootstrap_averaged_{level}"] = dict(
                _metrics(averaged, truth), threshold=averaged.graph["threshold"],
                n_bootstrap=n_bootstrap, seconds=round(time.perf_counter() - start, 2),
                false_adjacencies_at_strength_0_9=[
                    [u, v, float(p)] for u, v, p in zip(confident["from"], confident["to"],
                                                        confident["strength"])
                    if (u, v) not in true_edges and (v, u) not in true_edges])
            for r in strength.itertuples(index=False):
                u, v = r[0], r[1]
                if u < v:
                    pairs[level]["strength"].append(
                        (r.strength, (u, v) in true_edges or (v, u) in true_edges))
                pairs[level]["directed"].append((r.strength * r.direction, (u, v) in true_edges))
        per_seed.append(row)
        print(scenario, seed, json.dumps({c: row[c]["shd"] for c in conditions}), flush=True)
    averaged = [f"bootstrap_averaged_{level}" for level in SCENARIO_KNOWLEDGE[scenario]]
    summary = {label: _mean([r[label] for r in per_seed])
               for label in conditions + (tuple(averaged) if n_bootstrap else ())}
    calibration = {}
    for level in (SCENARIO_KNOWLEDGE[scenario] if n_bootstrap else ()):
        calibration[level] = {}
        for name, key in (("edge_strength_vs_true_adjacency", "strength"),
                          ("directed_probability_vs_true_edge", "directed")):
            p, t = map(np.asarray, zip(*pairs[level][key]))
            calibration[level][name] = calibration_table(p.astype(float), t.astype(float))
    calibration["raw"] = pairs
    return {"n_patients": n_patients, "seeds": seeds, "mean": summary,
            "per_seed": per_seed}, calibration


def missing_rows(n_patients: int, seeds: list[int]) -> dict:
    """Radiotherapy with its default missingness, the search imputing (the default) or on
    complete cases, against the same cohort with no modality missing."""
    rows = []
    kwargs = SCENARIO_KNOWLEDGE["radiotherapy"]["block_tiers"]
    settings = (("imputed", None, "impute"), ("complete_cases", None, "drop"),
                ("no_missingness", {}, "impute"))
    for seed in seeds:
        row = {"seed": seed}
        for label, missing, treatment in settings:
            sim = bayesrad.simulate("radiotherapy", n_patients=n_patients, seed=seed,
                                    missing=missing)
            table = build_node_table(sim.cohort, seed=seed, missing=treatment)
            graph = learn_structure(table, knowledge=ExpertKnowledge.from_blocks(
                table.blocks, **kwargs))
            row[label] = dict(_metrics(graph, sim.truth.graph), n_patients_used=len(table.data),
                              n_patients_imputed=len(table.imputed_patients))
        rows.append(row)
    labels = [label for label, _, _ in settings]
    return {"n_patients": n_patients, "knowledge": "block_tiers", "per_seed": rows,
            "mean": {label: dict(_mean([r[label] for r in rows]),
                                 n_patients_used=float(np.mean(
                                     [r[label]["n_patients_used"] for r in rows])))
                     for label in labels}}


_PLAIN_PGMPY = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
import pandas as pd
from pgmpy.causal_discovery import HillClimbSearch
data = pd.read_pickle(sys.argv[1])
start = time.perf_counter()
dag = HillClimbSearch(scoring_method=sys.argv[2], return_type="dag",
                      show_progress=False).fit(data).causal_graph_
print(json.dumps({"edges": sorted(dag.edges()), "seconds": time.perf_counter() - start}))
"""


def bundled_network(name: str, n_rows: int, seed: int = 0, hash_seeds=(0, 1, 2)) -> dict:
    """bayesrad's HillClimbLearner vs plain pgmpy HillClimbSearch on a bundled network."""
    from pgmpy.base import DAG
    from pgmpy.metrics import SHD
    from pgmpy.utils import get_example_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_example_model(name)
        try:
            data = model.simulate(n_rows, seed=seed, show_progress=False)
        except TypeError:  # the linear-Gaussian network's simulate has no progress bar
            data = model.simulate(n_rows, seed=seed)
    truth = DAG()
    truth.add_nodes_from(model.nodes())
    truth.add_edges_from(model.edges())
    score = "bic-g" if all(pd.api.types.is_numeric_dtype(data[c]) for c in data) else "bic-d"
    # Scores of each graph under the same score (bayesrad's numpy score has pgmpy's values).
    scorer = make_score(score, prepare_table(data))

    def total(edges) -> float:
        g = nx.DiGraph(list(edges))
        g.add_nodes_from(data.columns)
        return round(sum(scorer.local_score(n, tuple(g.predecessors(n))) for n in g), 2)

    out = {"n_rows": n_rows, "n_nodes": len(model.nodes()), "n_edges": len(model.edges()),
           "score": score, "true_dag_score": total(model.edges())}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.pkl"
        data.to_pickle(path)
        for hash_seed in hash_seeds:
            env = dict(os.environ, PYTHONHASHSEED=str(hash_seed))
            done = subprocess.run([sys.executable, "-c", _PLAIN_PGMPY, str(path), score],
                                  env=env, capture_output=True, text=True, check=True)
            run = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append(dict(_metrics(run["edges"], model), score=total(run["edges"]),
                             seconds=round(run["seconds"], 2), pythonhashseed=hash_seed))
            if hash_seed == hash_seeds[0]:
                dag = DAG()
                dag.add_nodes_from(model.nodes())
                dag.add_edges_from(run["edges"])
                out["pgmpy_metric_check"] = {
                    "pgmpy_SHD": int(SHD()(true_causal_graph=truth, est_causal_graph=dag)),
                    "bayesrad_compare_graphs": runs[-1]["shd"]}
    out["pgmpy"] = {"runs": runs}
    for key in ("shd", "cpdag_shd", "score", "seconds"):
        values = [r[key] for r in runs]
        out["pgmpy"][f"{key}_min"], out["pgmpy"][f"{key}_max"] = min(values), max(values)
        out["pgmpy"][f"{key}_mean"] = float(np.mean(values))
    for label, settings in (("bayesrad", {}), ("bayesrad_greedy",
                                               {"max_stall": 0, "restarts": 0})):
        start = time.perf_counter()
        learner = HillClimbLearner(score=score, **settings).fit(data)
        seconds = time.perf_counter() - start
        # scored like the others (the search scores standardised columns: another constant)
        out[label] = dict(_metrics(learner.causal_graph_, model),
                          score=total(learner.causal_graph_.edges()), seconds=round(seconds, 2))
    out["bayesrad_speedup_vs_pgmpy_mean"] = round(out["pgmpy"]["seconds_mean"]
                                                  / max(out["bayesrad"]["seconds"], 1e-9), 2)
    return out


def mixed_table(n_nodes: int, n_rows: int, seed: int) -> pd.DataFrame:
    """A random mixed node table: a sparse random DAG (mean in-degree ~1.2), every fifth node
    binary (logistic draw from its parents), the others linear Gaussian."""
    rng = np.random.default_rng(seed)
    names = [f"n{i:02d}" for i in range(n_nodes)]
    g = nx.DiGraph()
    g.add_nodes_from(names)
    for j in range(1, n_nodes):
        for i in rng.choice(j, size=min(j, 2), replace=False):
            if rng.random() < 0.6:
                g.add_edge(names[i], names[j])
    binary = set(names[::5])
    values = {}
    for name in names:
        parents = list(g.predecessors(name))
        signal = sum(rng.choice([-0.8, 0.8]) * values[p] for p in parents) if parents else 0.0
        if name in binary:
            values[name] = (rng.random(n_rows) < 1 / (1 + np.exp(-signal))).astype(float) * 2 - 1
        else:
            values[name] = signal + rng.normal(size=n_rows)
    frame = pd.DataFrame(values)
    for name in binary:
        frame[name] = pd.Categorical(np.where(frame[name] > 0, "yes", "no"))
    return frame


def _cpu_seconds() -> float:
    import resource

    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def speed(n_nodes: int, n_rows: int, n_bootstrap: int, compare_pgmpy_score: bool) -> dict:
    data = mixed_table(n_nodes, n_rows, seed=0)
    learner = HillClimbLearner()
    start = time.perf_counter()
    learner.fit(data)
    out = {"n_nodes": n_nodes, "n_rows": n_rows, "score": learner.score_,
           "one_search_seconds": round(time.perf_counter() - start, 2),
           "n_edges_found": learner.causal_graph_.number_of_edges(),
           "n_local_score_lookups": learner.search_.n_local_scores,
           "n_bootstrap": n_bootstrap}
    if compare_pgmpy_score:
        cg = {}
        for label, score in (("bayesrad_numpy", "bic-cg"), ("pgmpy", "bic-cg-pgmpy")):
            start = time.perf_counter()
            fitted = HillClimbLearner(score=score).fit(data)
            cg[label] = {"seconds": round(time.perf_counter() - start, 2),
                         "edges": sorted(fitted.causal_graph_.edges()),
                         "score": fitted.score_value_}
        out["bic_cg_one_search"] = {
            "bayesrad_numpy_seconds": cg["bayesrad_numpy"]["seconds"],
            "pgmpy_seconds": cg["pgmpy"]["seconds"],
            "speedup": round(cg["pgmpy"]["seconds"] / cg["bayesrad_numpy"]["seconds"], 1),
            "same_graph": cg["bayesrad_numpy"]["edges"] == cg["pgmpy"]["edges"],
            "score_relative_difference": abs(cg["bayesrad_numpy"]["score"] - cg["pgmpy"]["score"])
            / abs(cg["pgmpy"]["score"])}
    timings, results = {}, {}
    for workers in (1, 2):
        # CPU seconds of this process and its (reaped) workers: cpu / wall is the number of
        # cores the run actually got, which bounds the speed-up on a shared machine.
        load = os.getloadavg()[0]
        cpu_before = _cpu_seconds()
        start = time.perf_counter()
        results[workers] = bootstrap_structure(data, learner, n_bootstrap=n_bootstrap, seed=0,
                                               n_jobs=workers)
        timings[workers] = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu_before
        out[f"bootstrap_{workers}_worker"] = {
            "seconds": round(timings[workers], 2), "cpu_seconds": round(cpu, 2),
            "cores_used": round(cpu / timings[workers], 2), "load_average_1min_before": load}
    out["speedup_2_vs_1"] = round(timings[1] / timings[2], 3)
    out["identical_results_1_vs_2"] = bool(np.array_equal(results[1].counts, results[2].counts))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small run (1 seed, fewer bootstraps, 20-node speed table)")
    parser.add_argument("--speed-nodes", type=int, default=None)
    parser.add_argument("--speed-bootstrap", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=None,
                        help="simulator seeds per scenario (default 1 quick, 3 full)")
    parser.add_argument("--n-bootstrap", type=int, default=None,
                        help="bootstraps per simulator fit (default 10 quick, 50 full)")
    parser.add_argument("--n-jobs", type=int, default=2, help="workers of the simulator bootstraps")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["simulator", "missing", "bundled", "speed"])
    parser.add_argument("--update", action="store_true",
                        help="keep the sections of the existing --out file that are skipped "
                             "(each section records when and on what load it ran)")
    args = parser.parse_args(argv)
    quick = args.quick
    run = {"quick": quick, "machine": machine(),
           "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    result = json.loads(args.out.read_text()) if args.update and args.out.exists() else {}
    result.update({"benchmark": "structure", "knowledge": SCENARIO_KNOWLEDGE})
    result.setdefault("runs", {})
    total = time.perf_counter()
    seeds = list(range(args.seeds or (1 if quick else 3)))
    if "simulator" not in args.skip:
        result["simulator"], result["calibration"] = {}, {}
        pooled: dict = {}
        for scenario in ("radiotherapy", "wholebody_petct"):
            quality, calibration = scenario_quality(
                scenario, n_patients=500, seeds=seeds,
                n_bootstrap=args.n_bootstrap or (10 if quick else 50), n_jobs=args.n_jobs)
            result["simulator"][scenario] = quality
            for level, raw in calibration.pop("raw").items():
                for key, values in raw.items():
                    pooled.setdefault(level, {}).setdefault(key, []).extend(values)
            result["calibration"][scenario] = calibration
            print(scenario, json.dumps(quality["mean"]), flush=True)
        result["calibration"]["pooled"] = {
            level: {name: calibration_table(*(np.asarray(v, dtype=float)
                                              for v in zip(*raw[key])))
                    for name, key in (("edge_strength_vs_true_adjacency", "strength"),
                                      ("directed_probability_vs_true_edge", "directed"))}
            for level, raw in pooled.items() if raw["strength"]}
    if "missing" not in args.skip:
        result["missing_rows"] = missing_rows(500, seeds)
        print("missing", json.dumps(result["missing_rows"]["mean"]), flush=True)
    if "bundled" not in args.skip:
        # ecoli70 takes minutes with pgmpy's Gaussian BIC (statsmodels per local score).
        networks = [("asia", 2000)] if quick else [
            ("asia", 2000), ("alarm", 2000), ("ecoli70", 500)]
        hash_seeds = (0, 1, 2) if quick else (0, 1, 2, 3, 4)
        result["bundled"] = {name: bundled_network(name, rows, hash_seeds=hash_seeds)
                             for name, rows in networks}
        print("bundled", json.dumps({k: (v["pgmpy"]["shd_min"], v["pgmpy"]["shd_max"],
                                         v["bayesrad"]["shd"])
                                     for k, v in result["bundled"].items()}), flush=True)
    if "speed" not in args.skip:
        nodes = args.speed_nodes or (20 if quick else 40)
        boots = args.speed_bootstrap or (8 if quick else 100)
        result["speed"] = speed(nodes, 500, boots, compare_pgmpy_score=not quick)
        print("speed", json.dumps(result["speed"]), flush=True)
    run["seconds"] = round(time.perf_counter() - total, 1)
    for section in ("simulator", "missing", "bundled", "speed"):
        if section not in args.skip:
            result["runs"][section] = run
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=float))
    tmp.replace(args.out)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
