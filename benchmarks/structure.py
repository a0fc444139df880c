"""Structure-learning benchmark: quality on the simulator and pgmpy's networks, calibration of
bootstrap edge probabilities, and speed (one search; bootstraps on 1 vs 2 workers).

Writes benchmarks/results/structure.json:
- ``simulator``: per scenario (radiotherapy, wholebody_petct; 500 patients), SHD, skeleton
  precision/recall and orientation accuracy against the true DAG, with and without expert
  tiers, in the same run (per seed and averaged).
- ``calibration``: bootstrap edge probabilities on the simulator binned against the truth
  (adjacency for the edge strength, directed edge for P(u -> v)).
- ``bundled``: bayesrad's hill climbing vs plain pgmpy ``HillClimbSearch`` (same score, same
  data) on asia, alarm (discrete, BIC) and ecoli70 (linear Gaussian, BIC): SHD and seconds;
  plain pgmpy runs in fresh interpreters under several PYTHONHASHSEEDs, since its result
  depends on the hash seed (bayesrad's does not).
- ``speed``: a mixed node table (40 nodes x 500 rows in the full run): one search, and B
  bootstraps with 1 and 2 worker processes (speed-up = t1 / t2, same run).

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
                                      learn_structure)
from _machine import machine_info  # benchmarks/ is on sys.path when run as a script

RESULTS = Path(__file__).resolve().parent / "results" / "structure.json"

# Expert tiers per scenario: the default block tiers plus what a clinician would say about
# single columns (patient factors come before disease, imaging and treatment).
SCENARIO_KNOWLEDGE = {
    "radiotherapy": dict(node_tiers={n: "demographics" for n in
                                     ("age_years", "sex_male", "centre")}),
    "wholebody_petct": dict(
        block_tiers=dict(DEFAULT_BLOCK_TIERS,
                         disease=DEFAULT_BLOCK_TIERS["disease"] + ("organ_suv",)),
        node_tiers={n: "demographics" for n in ("age_years", "sex_male", "centre", "bmi_kg_m2",
                                                "blood_glucose_mmol_l")}),
}
CALIBRATION_BINS = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]


def machine() -> dict:
    return machine_info(pythonhashseed=os.environ.get("PYTHONHASHSEED"))


def calibration_table(probability: np.ndarray, truth: np.ndarray) -> list[dict]:
    """Rows per probability bin: count, mean predicted probability, fraction true."""
    rows = []
    edges = CALIBRATION_BINS
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == len(edges) - 2
        inside = (probability >= lo) & ((probability <= hi) if last else (probability < hi))
        rows.append({"bin": f"[{lo:.1f}, {hi:.1f}{']' if last else ')'}",
                     "n_pairs": int(inside.sum()),
                     "mean_probability": float(probability[inside].mean()) if inside.any() else None,
                     "fraction_true": float(truth[inside].mean()) if inside.any() else None})
    return rows


def scenario_quality(scenario: str, n_patients: int, seeds: list[int], n_bootstrap: int,
                     n_jobs: int) -> tuple[dict, dict]:
    per_seed = []
    strength_pairs, directed_pairs = [], []
    for seed in seeds:
        sim = bayesrad.simulate(scenario, n_patients=n_patients, seed=seed)
        table = build_node_table(sim.cohort, seed=seed)
        truth = sim.truth.graph
        knowledge = ExpertKnowledge.from_blocks(table.blocks, **SCENARIO_KNOWLEDGE[scenario])
        row = {"seed": seed, "n_complete_patients": len(table.data),
               "n_nodes": table.data.shape[1], "truth_violates_tiers":
               knowledge.violations(truth.edges)}
        for label, k in (("without_tiers", None), ("with_tiers", knowledge)):
            start = time.perf_counter()
            graph = learn_structure(table, knowledge=k)
            row[label] = dict(compare_graphs(graph, truth),
                              seconds=round(time.perf_counter() - start, 2))
        if n_bootstrap:
            learner = HillClimbLearner(
                knowledge=knowledge.merged(forbidden=kind_constraints(table.kinds)))
            start = time.perf_counter()
            boot = bootstrap_structure(table.data, learner, n_bootstrap=n_bootstrap, seed=seed,
                                       n_jobs=n_jobs)
            averaged = boot.averaged_dag()
            row["bootstrap_averaged_with_tiers"] = dict(
                compare_graphs(averaged, truth), threshold=averaged.graph["threshold"],
                n_bootstrap=n_bootstrap, seconds=round(time.perf_counter() - start, 2))
            table_s = boot.strength()
            true_edges = set(truth.edges)
            for r in table_s.itertuples(index=False):
                u, v = r[0], r[1]
                if u < v:
                    strength_pairs.append((r.strength, (u, v) in true_edges or
                                           (v, u) in true_edges))
                directed_pairs.append((r.strength * r.direction, (u, v) in true_edges))
        per_seed.append(row)
    summary = {}
    for label in ("without_tiers", "with_tiers", "bootstrap_averaged_with_tiers"):
        values = [r[label] for r in per_seed if label in r]
        if values:
            summary[label] = {key: float(np.nanmean([v[key] for v in values]))
                              for key in ("shd", "skeleton_precision", "skeleton_recall",
                                          "orientation_accuracy")}
    calibration = {}
    if strength_pairs:
        p, t = map(np.asarray, zip(*strength_pairs))
        calibration["edge_strength_vs_true_adjacency"] = calibration_table(p, t.astype(float))
        p, t = map(np.asarray, zip(*directed_pairs))
        calibration["directed_probability_vs_true_edge"] = calibration_table(p, t.astype(float))
    return {"n_patients": n_patients, "seeds": seeds, "mean": summary,
            "per_seed": per_seed}, calibration


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
    from pgmpy.causal_discovery import HillClimbSearch
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
    out = {"n_rows": n_rows, "n_nodes": len(model.nodes()), "n_edges": len(model.edges()),
           "score": score}
    # Plain pgmpy's result depends on PYTHONHASHSEED (ties between score-equivalent moves are
    # broken by set order), so it runs in fresh interpreters under several hash seeds.
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.pkl"
        data.to_pickle(path)
        for hash_seed in hash_seeds:
            env = dict(os.environ, PYTHONHASHSEED=str(hash_seed))
            done = subprocess.run([sys.executable, "-c", _PLAIN_PGMPY, str(path), score],
                                  env=env, capture_output=True, text=True, check=True)
            run = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append(dict(compare_graphs(run["edges"], model), seconds=run["seconds"],
                             pythonhashseed=hash_seed))
    shds = [r["shd"] for r in runs]
    out["pgmpy"] = {"runs": runs, "shd_min": min(shds), "shd_max": max(shds),
                    "shd_mean": float(np.mean(shds)),
                    "seconds_mean": float(np.mean([r["seconds"] for r in runs]))}
    plain = HillClimbSearch(scoring_method=score, return_type="dag",
                            show_progress=False).fit(data).causal_graph_
    out["pgmpy_metric_check"] = {"pgmpy_SHD": int(SHD()(true_causal_graph=truth,
                                                        est_causal_graph=plain)),
                                 "bayesrad_compare_graphs": compare_graphs(plain, model)["shd"]}
    start = time.perf_counter()
    ours = HillClimbLearner(score=score).fit(data).causal_graph_
    out["bayesrad"] = dict(compare_graphs(ours, model), seconds=round(time.perf_counter() - start, 2))
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


def speed(n_nodes: int, n_rows: int, n_bootstrap: int) -> dict:
    data = mixed_table(n_nodes, n_rows, seed=0)
    learner = HillClimbLearner()
    start = time.perf_counter()
    learner.fit(data)
    search_s = time.perf_counter() - start
    out = {"n_nodes": n_nodes, "n_rows": n_rows, "score": learner.score_,
           "one_search_seconds": round(search_s, 2),
           "n_edges_found": learner.causal_graph_.number_of_edges(),
           "n_bootstrap": n_bootstrap}
    timings = {}
    results = {}
    for workers in (1, 2):
        start = time.perf_counter()
        results[workers] = bootstrap_structure(data, learner, n_bootstrap=n_bootstrap, seed=0,
                                               n_jobs=workers)
        timings[workers] = time.perf_counter() - start
    out["bootstrap_seconds_1_worker"] = round(timings[1], 2)
    out["bootstrap_seconds_2_workers"] = round(timings[2], 2)
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
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["simulator", "bundled", "speed"])
    args = parser.parse_args(argv)
    quick = args.quick
    result = {"benchmark": "structure", "quick": quick, "machine": machine(),
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    total = time.perf_counter()
    if "simulator" not in args.skip:
        result["simulator"], result["calibration"] = {}, {}
        for scenario in ("radiotherapy", "wholebody_petct"):
            quality, calibration = scenario_quality(
                scenario, n_patients=500,
                seeds=list(range(args.seeds or (1 if quick else 3))),
                n_bootstrap=args.n_bootstrap or (10 if quick else 50), n_jobs=2)
            result["simulator"][scenario] = quality
            result["calibration"][scenario] = calibration
            print(scenario, json.dumps(quality["mean"]), flush=True)
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
        result["speed"] = speed(nodes, 500, boots)
        print("speed", json.dumps(result["speed"]), flush=True)
    result["total_seconds"] = round(time.perf_counter() - total, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=float))
    tmp.replace(args.out)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
