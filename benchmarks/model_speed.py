"""Speed of HybridBN: SVI fit time on the radiotherapy scenario (500 patients) against NUTS on
the same graph in the same run, single-patient prediction latency with partial evidence, and
(with --gpu-patients N on a CUDA machine) SVI step time on GPU vs CPU.

    .venv/bin/python benchmarks/model_speed.py [--quick] [--gpu-patients 10000]

Writes benchmarks/results/model_speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bayesrad.data.simulate import simulate
from bayesrad.graph.graph import Graph
from bayesrad.model import HybridBN
from _machine import machine_info  # benchmarks/ is on sys.path when run as a script

RESULTS = Path(__file__).resolve().parent / "results"


def _machine() -> dict:
    return machine_info()


def _graph(sim, with_genes: bool) -> Graph:
    graph = Graph.from_networkx(sim.truth.graph)
    if with_genes:
        return graph
    kept = Graph([graph.spec(n) for n in graph.nodes if n != "genes"])
    for u, v in graph.edges:
        if "genes" not in (u, v):
            kept.add_edge(u, v)
    return kept


def bench_fit(quick: bool) -> dict:
    sim = simulate("radiotherapy", n_patients=500, seed=0)
    out = {}
    # NUTS samples every patient's latents; with the 300-column gene block it runs for tens of
    # minutes on 2 cores, so the NUTS comparison uses the graph without the gene block
    graph = _graph(sim, with_genes=False)
    steps = 1500 if quick else 3000
    start = time.perf_counter()
    svi = HybridBN(graph, num_steps=steps, seed=0, num_threads=1, tol=0.0).fit(sim.cohort)
    svi_s = time.perf_counter() - start
    start = time.perf_counter()
    HybridBN(graph, method="nuts", num_warmup=200 if quick else 500,
             num_samples=200 if quick else 500, num_chains=1, seed=0,
             num_threads=1).fit(sim.cohort)
    nuts_s = time.perf_counter() - start
    out["graph_without_genes"] = {
        "n_patients": 500, "n_nodes": len(graph), "svi_steps": steps, "svi_seconds": svi_s,
        "svi_ms_per_step": 1000 * svi_s / steps, "nuts_seconds": nuts_s,
        "nuts_warmup_samples_chains": [200 if quick else 500, 200 if quick else 500, 1],
        "svi_speedup_vs_nuts": nuts_s / svi_s}
    full = _graph(sim, with_genes=True)
    start = time.perf_counter()
    HybridBN(full, num_steps=steps, seed=0, num_threads=1, tol=0.0).fit(sim.cohort)
    full_s = time.perf_counter() - start
    out["full_graph"] = {"n_patients": 500, "n_nodes": len(full), "svi_steps": steps,
                         "svi_seconds": full_s, "svi_ms_per_step": 1000 * full_s / steps}
    out["_model"] = svi
    return out


def bench_latency(model: HybridBN, repeats: int = 50) -> dict:
    evidence = {"age_years": 70.0, "stage": 3, "dose_mean_gy": 60.0, "histology": "squamous"}
    model.query("local_control", evidence=evidence, n_samples=200)   # warm caches
    cached, fresh = [], []
    for i in range(repeats):
        # same seed: the posterior draws of the globals are reused (as in the app)
        start = time.perf_counter()
        model.query("local_control", evidence=evidence, n_samples=200)
        cached.append(1000 * (time.perf_counter() - start))
        # a new seed each call: the globals are drawn again from the guide
        start = time.perf_counter()
        model.query("local_control", evidence=evidence, n_samples=200, seed=1000 + i)
        fresh.append(1000 * (time.perf_counter() - start))
    return {"n_nodes": len(model.graph_), "n_samples": 200, "evidence": list(evidence),
            "median_ms": statistics.median(cached), "p90_ms": float(np.quantile(cached, 0.9)),
            "median_ms_fresh_draws": statistics.median(fresh),
            "p90_ms_fresh_draws": float(np.quantile(fresh, 0.9))}


def bench_gpu(n_patients: int, steps: int) -> dict:
    sim = simulate("radiotherapy", n_patients=n_patients, seed=0)
    graph = _graph(sim, with_genes=True)
    out = {}
    for device in ("cpu", "cuda"):
        if device == "cuda" and not torch.cuda.is_available():
            continue
        model = HybridBN(graph, num_steps=steps, seed=0, tol=0.0, batch_size=2048,
                         device=device)
        start = time.perf_counter()
        model.fit(sim.cohort)
        seconds = time.perf_counter() - start
        out[device] = {"seconds": seconds, "ms_per_step": 1000 * seconds / steps,
                       "batch_size": 2048, "n_patients": n_patients}
    if "cuda" in out:
        out["cpu_over_gpu"] = out["cpu"]["seconds"] / out["cuda"]["seconds"]
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--gpu-patients", type=int, default=0,
                        help="also time SVI on this many patients on CPU and CUDA")
    parser.add_argument("--latency-only", action="store_true",
                        help="refit the SVI model only and update the latency figures")
    args = parser.parse_args(argv)
    path = RESULTS / "model_speed.json"
    if args.latency_only:
        sim = simulate("radiotherapy", n_patients=500, seed=0)
        model = HybridBN(_graph(sim, with_genes=False), num_steps=1500 if args.quick else 3000,
                         seed=0, num_threads=1, tol=0.0).fit(sim.cohort)
        out = json.loads(path.read_text()) if path.exists() else {"machine": _machine()}
        out["latency"] = bench_latency(model)
        RESULTS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
        print(json.dumps(out["latency"], indent=1))
        return out
    out = {"machine": _machine(), "quick": args.quick}
    fit = bench_fit(args.quick)
    model = fit.pop("_model")
    out["fit"] = fit
    out["latency"] = bench_latency(model)
    if args.gpu_patients:
        out["gpu"] = bench_gpu(args.gpu_patients, 300 if args.quick else 1000)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
