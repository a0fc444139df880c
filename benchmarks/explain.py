"""Explanations (issue 15), written to benchmarks/results/explain.json.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/explain.py [--quick]

Sections:
- speed: exact conditional Shapley over 12 evidence nodes (4096 coalitions) of one patient,
  median of 5 runs after one warm-up, next to pyAgrum's ConditionalShapValues on a 12-node
  binary network (its exact inference, one row); both single-threaded on this machine.
- radiotherapy: HybridBN fitted on the simulator; exact Shapley of local control over every
  observed baseline node for held-out patients; Spearman of mean |contribution| per node
  against the true effect size: mean over patients of |coef x (value - cohort mean)| on the
  true logit of local control (direct parents; 0 for nodes that only inform about them).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import expit
from scipy.stats import spearmanr

from bayesrad.data.simulate import simulate
from bayesrad.explain import shapley
from bayesrad.graph.graph import Graph, NodeSpec
from bayesrad.model import HybridBN
from _machine import machine_info  # benchmarks/ is on sys.path when run as a script

RESULTS = Path(__file__).resolve().parent / "results"


def speed(repeats: int = 5) -> dict:
    import pyagrum as gum
    import pyagrum.explain as ex

    rng = np.random.default_rng(0)
    names = [f"x{j:02d}" for j in range(12)]
    # 12 continuous parents (x01 a child of x00, x03 of x02: hidden parents need particles)
    graph = Graph([NodeSpec(n, "continuous", block="clinical") for n in names]
                  + [NodeSpec("y", "binary", block="outcome")])
    for n in names:
        graph.add_edge(n, "y")
    graph.add_edge("x00", "x01")
    graph.add_edge("x02", "x03")
    n = 400
    x = rng.normal(size=(n, 12))
    x[:, 1] += 0.8 * x[:, 0]
    x[:, 3] += 0.8 * x[:, 2]
    y = (rng.random(n) < expit(x @ np.linspace(-1, 1, 12))).astype(float)
    ids = pd.Index([f"S{i:03d}" for i in range(n)], name="patient_id")
    blocks = {"clinical": pd.DataFrame(x, columns=names, index=ids),
              "outcome": pd.DataFrame({"y": y}, index=ids)}
    model = HybridBN(graph, num_steps=300, min_steps=100, seed=0, num_threads=1).fit(blocks)
    settings = {"n_samples": 64, "n_particles": 8}

    def ours():
        return shapley(model, blocks, "y", patients=["S000"], **settings)

    ours()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = ours()
        times.append(time.perf_counter() - t)
    efficiency = float(out["value"].sum() - (out["prediction"].iloc[0] - out["base"].iloc[0]))

    # pyAgrum: a 12-node binary network with the same shape (12 parents of y, two chains)
    bn = gum.fastBN("->".join(["x00", "x01"]) + ";" + "x02->x03;"
                    + ";".join(f"{m}->y" for m in names))
    bn.generateCPTs()
    row = pd.DataFrame([{m: int(rng.integers(2)) for m in names}])
    explainer = ex.ConditionalShapValues(bn, "y", logit=False)
    explainer.compute(row)
    agrum = []
    for _ in range(repeats):
        t = time.perf_counter()
        explainer.compute(row)
        agrum.append(time.perf_counter() - t)
    return {"bayesrad_exact_12_nodes_s": {"median": float(np.median(times)),
                                          "runs": times, "settings": settings,
                                          "coalitions": 4096, "efficiency_error": efficiency},
            "pyagrum_conditional_12_nodes_s": {"median": float(np.median(agrum)), "runs": agrum,
                                               "network": "12 binary parents of y (2 chains)",
                                               "version": gum.__version__},
            "target_s": 1.0, "load_average_1min_after": round(__import__("os").getloadavg()[0], 2),
            "meets_target": bool(np.median(times) <= 1.0),
            "note": ("not the same computation: bayesrad averages over 64 posterior draws "
                     "x 8 particles of a fitted continuous/binary network and returns 90% "
                     "intervals; pyAgrum runs exact inference on a fixed discrete network")}


def radiotherapy(n_train: int, n_explain: int, steps: int) -> dict:
    sim = simulate("radiotherapy", n_patients=n_train + n_explain, seed=0)
    graph = Graph.from_networkx(sim.truth.graph)
    ids = list(sim.cohort.patient_ids)
    train = {k: v.loc[v.index.isin(ids[:n_train])] for k, v in sim.cohort.blocks.items()}
    test = {k: v.loc[v.index.isin(ids[n_train:])] for k, v in sim.cohort.blocks.items()}
    start = time.perf_counter()
    model = HybridBN(graph, num_steps=steps, seed=0, num_threads=1).fit(train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    out = shapley(model, test, "local_control", n_samples=50, n_particles=8, seed=0)
    shap_s = time.perf_counter() - start
    importance = out.assign(abs=out["value"].abs()).groupby("node")["abs"].mean()

    # the true effect size on local control's logit, per node
    params = sim.truth.parameters["coef"]
    test_ids = test["outcome"].index
    latents = sim.truth.latents.reindex(test_ids)
    clinical = test["clinical"].reindex(test_ids)
    dosimetry = test["dosimetry"].reindex(test_ids)
    contrib = {node: np.zeros(len(test_ids)) for node in importance.index}
    for (parent, child), c in params.items():
        if child != "local_control":
            continue
        node = parent.split("[")[0]
        if parent.startswith("histology["):
            level = parent[len("histology["):-1]
            value = (clinical["histology"] == level).astype(float)
        elif node in ("radiomics", "genes"):
            value = latents[parent]
        else:
            value = dosimetry[parent] if parent in dosimetry else clinical[parent]
        contrib[node] = contrib[node] + float(c) * (value - value.mean()).to_numpy()
    truth = pd.Series({k: float(np.mean(np.abs(v))) for k, v in contrib.items()})
    rho = spearmanr(importance.loc[truth.index], truth).statistic
    return {"n_train": n_train, "n_explained": n_explain, "fit_steps": steps,
            "fit_s": fit_s, "shapley_s": shap_s, "n_players": int(out["node"].nunique()),
            "spearman_mean_abs_vs_truth": float(rho),
            "mean_abs_contribution": importance.sort_values(ascending=False).to_dict(),
            "true_effect_size_logit": truth.sort_values(ascending=False).to_dict(),
            "note": ("conditional Shapley values credit nodes that only carry evidence about "
                     "the true parents (d95 about dose, stage about radiomics); the truth "
                     "gives such nodes 0, so a perfect rank correlation is not expected")}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {"machine": machine_info(torch_device="cpu")}
    result["speed"] = speed(3 if args.quick else 5)
    print(json.dumps(result["speed"], indent=1))
    result["radiotherapy"] = (radiotherapy(200, 10, 300) if args.quick
                              else radiotherapy(500, 30, 1500))
    print(json.dumps(result["radiotherapy"], indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "explain.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
