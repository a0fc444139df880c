"""The app's what-if round trip: the callback that answers a slider move (validation, the
seeded query under do(dose), formatting), called directly, median over 30 calls on the
20-node graph of model_speed.py; baseline: ``HybridBN.query`` alone with the same evidence in
the same run. Target: <= 300 ms. Writes benchmarks/results/app.json."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from _machine import machine_info  # benchmarks/ is on sys.path when run as a script
from model_speed import twenty_node_graph

from bayesrad.app.core import AppState, answer_callback
from bayesrad.model import HybridBN

RESULTS = Path(__file__).parent / "results"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer SVI steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    graph, blocks = twenty_node_graph()
    model = HybridBN(graph, num_steps=300 if args.quick else 1000, seed=0,
                     num_threads=1).fit(blocks)
    state = AppState(model, blocks, target="local_control", n_samples=200)
    patient = state.patients[0]
    values = [state.patient_values(patient)[n] for n in state.inputs]
    low, high = state.ranges["dose"]
    doses = np.linspace(low, high, 30)
    answer_callback(state, values, float(doses[0]), "do", "dose", patient)   # warm caches
    callback, query = [], []
    for d in doses:
        t = time.perf_counter()
        answer_callback(state, values, float(d), "do", "dose", patient)
        callback.append(time.perf_counter() - t)
        evidence, _ = state.validate(dict(zip(state.inputs, values)))
        evidence.update(state.latent_columns(patient))
        evidence.pop("dose", None)
        t = time.perf_counter()
        model.query("local_control", evidence, do={"dose": float(d)}, n_samples=200, seed=0)
        query.append(time.perf_counter() - t)
    med_cb, med_q = statistics.median(callback), statistics.median(query)
    out = {"machine": machine_info(), "quick": args.quick, "n_nodes": len(graph),
           "n_samples": 200, "calls": len(doses),
           "callback_median_ms": round(1000 * med_cb, 1),
           "query_only_median_ms": round(1000 * med_q, 1),
           "callback_over_query": round(med_cb / med_q, 3),
           "target_ms": 300, "meets_target": med_cb <= 0.3}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "app.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
