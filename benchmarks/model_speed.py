"""Speed of HybridBN, each figure against a baseline measured in the same run:

- fit: SVI on the radiotherapy scenario (500 patients, default settings: runs to convergence)
  against NUTS (NumPyro, one chain) on the same graph; the graph without its 300-gene block
  (NUTS samples every patient's latents and would run for tens of minutes with it), and SVI
  alone on the full graph;
- latency: one patient's prediction with partial evidence, on the radiotherapy graph (13
  nodes) and on a 20-node graph;
- factor: the SVI step of a 10,000-patient factor model (200 block columns, 8 latents,
  minibatch 2048) against a plain Pyro step (AutoNormal guide, Trace_ELBO) of the same model.

Times are wall-clock seconds on one torch thread, with the process's CPU seconds beside them
(the machine may be shared: ``machine.load_average_1min`` says how busy it was). With CUDA
present, ``gpu`` adds the factor step and a 10,000-patient radiotherapy fit on GPU vs CPU.

    .venv/bin/python benchmarks/model_speed.py [--quick]

Writes benchmarks/results/model_speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bayesrad.data.simulate import simulate
from bayesrad.graph.graph import Graph, NodeSpec
from bayesrad.model import HybridBN
from _machine import machine_info  # benchmarks/ is on sys.path when run as a script

RESULTS = Path(__file__).resolve().parent / "results"


class _Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


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
    graph = _graph(sim, with_genes=False)
    warmup = samples = 200 if quick else 500
    with _Clock() as svi_clock:
        svi = HybridBN(graph, seed=0, num_threads=1).fit(sim.cohort)
    with _Clock() as nuts_clock:
        HybridBN(graph, method="nuts", num_warmup=warmup, num_samples=samples, num_chains=1,
                 seed=0, num_threads=1).fit(sim.cohort)
    out = {"graph_without_genes": {
        "n_patients": 500, "n_nodes": len(graph), "svi_steps": int(svi.n_steps_),
        "svi_converged": bool(svi.converged_), "svi_seconds": svi_clock.wall,
        "svi_cpu_seconds": svi_clock.cpu, "svi_ms_per_step": 1000 * svi_clock.wall / svi.n_steps_,
        "nuts_seconds": nuts_clock.wall, "nuts_cpu_seconds": nuts_clock.cpu,
        "nuts_warmup_samples_chains": [warmup, samples, 1],
        "nuts_over_svi_seconds": nuts_clock.wall / svi_clock.wall}}
    full = _graph(sim, with_genes=True)
    with _Clock() as full_clock:
        fitted = HybridBN(full, seed=0, num_threads=1).fit(sim.cohort)
    out["full_graph"] = {"n_patients": 500, "n_nodes": len(full), "svi_steps": int(fitted.n_steps_),
                         "svi_converged": bool(fitted.converged_), "svi_seconds": full_clock.wall,
                         "svi_cpu_seconds": full_clock.cpu,
                         "svi_ms_per_step": 1000 * full_clock.wall / fitted.n_steps_}
    out["_model"] = svi
    return out


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name(0) if device == "cuda" else "cpu"


def _synchronise(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_gpu(steps: int) -> dict:
    """When CUDA is present: the factor-model step on GPU vs CPU (both bayesrad and plain
    Pyro), and the radiotherapy fit of 10,000 simulated patients on GPU vs CPU for the same
    number of steps."""
    if not torch.cuda.is_available():
        return {"status": "not measured: no GPU on this machine"}
    out = {"device": torch.cuda.get_device_name(0),
           "factor_cuda": bench_factor(10_000, steps, [1, 8], device="cuda")}
    sim = simulate("radiotherapy", n_patients=10_000, seed=0)
    graph = _graph(sim, with_genes=True)
    for device in ("cpu", "cuda"):
        with _Clock() as clock:
            HybridBN(graph, num_steps=steps, tol=0.0, seed=0, device=device).fit(sim.cohort)
            _synchronise(device)
        out[f"fit_10000_patients_{device}_seconds"] = clock.wall
    out["fit_10000_cpu_over_cuda"] = (out["fit_10000_patients_cpu_seconds"]
                                      / out["fit_10000_patients_cuda_seconds"])
    out["fit_steps"] = steps
    return out


def bench_latency(model: HybridBN, evidence: dict, target: str, repeats: int = 50) -> dict:
    model.query(target, evidence=evidence, n_samples=200)   # warm caches
    cached, fresh = [], []
    for i in range(repeats):
        # same seed: the posterior draws of the globals are reused (as in the app)
        start = time.perf_counter()
        model.query(target, evidence=evidence, n_samples=200)
        cached.append(1000 * (time.perf_counter() - start))
        # a new seed each call: the globals are drawn again from the guide
        start = time.perf_counter()
        model.query(target, evidence=evidence, n_samples=200, seed=1000 + i)
        fresh.append(1000 * (time.perf_counter() - start))
    return {"n_nodes": len(model.graph_), "n_samples": 200, "target": target,
            "evidence": list(evidence), "median_ms": statistics.median(cached),
            "p90_ms": float(np.quantile(cached, 0.9)),
            "median_ms_fresh_draws": statistics.median(fresh),
            "p90_ms_fresh_draws": float(np.quantile(fresh, 0.9))}


def twenty_node_graph() -> tuple[Graph, dict]:
    """A 20-node graph of every kind but group, and 500 patients of plausible random values.

    A prediction's latency depends on the graph's shapes, not on what the data say, so the
    values are drawn independently (drawing them from the model's weakly informative priors
    gave counts and survival times that overflowed)."""
    rng = np.random.default_rng(0)
    n = 500
    ids = [f"B{i:04d}" for i in range(n)]
    clinical = pd.DataFrame({
        "age": rng.normal(65, 9, n), "sex": rng.integers(0, 2, n).astype(float),
        "smoker": rng.integers(0, 2, n).astype(float), "bmi": rng.normal(26, 4, n),
        "histology": rng.choice(["adeno", "squamous", "large"], n),
        "ecog": rng.integers(0, 3, n), "stage": rng.integers(1, 5, n),
        "nodes": rng.poisson(2.0, n).astype(float), "hb": rng.normal(13, 1.5, n),
        "crp": rng.normal(10, 4, n), "fev1": rng.normal(2.5, 0.6, n), "egfr": rng.integers(0, 2, n).astype(float),
        "chemo": rng.integers(0, 2, n).astype(float), "dose": rng.normal(60, 4, n),
        "d95": rng.normal(57, 4, n), "v20": rng.normal(25, 8, n),
        "pneumonitis": rng.integers(0, 2, n).astype(float),
        "local_control": rng.integers(0, 2, n).astype(float),
        "os": rng.exponential(700.0, n) + 1.0, "os_event": np.ones(n)}, index=ids)
    imaging = pd.DataFrame(rng.normal(size=(n, 10)), index=ids,
                           columns=[f"img{j:02d}" for j in range(10)])
    kinds = {"age": "continuous", "sex": "binary", "smoker": "binary", "bmi": "continuous",
             "histology": "categorical", "ecog": "ordinal", "stage": "ordinal",
             "nodes": "count", "hb": "continuous", "crp": "continuous", "fev1": "continuous", "egfr": "binary",
             "chemo": "binary", "dose": "continuous", "d95": "continuous", "v20": "continuous",
             "pneumonitis": "binary", "local_control": "binary"}
    nodes = [NodeSpec(k, v) for k, v in kinds.items()]
    nodes += [NodeSpec("imaging", "latent", block="imaging", latent_dim=2),
              NodeSpec("os", "survival", event="os_event")]
    edges = [("sex", "smoker"), ("smoker", "histology"), ("age", "ecog"), ("sex", "bmi"),
             ("histology", "imaging"), ("imaging", "nodes"), ("imaging", "stage"),
             ("nodes", "stage"), ("smoker", "egfr"), ("stage", "chemo"), ("age", "chemo"),
             ("stage", "dose"), ("ecog", "dose"), ("dose", "d95"), ("imaging", "d95"),
             ("dose", "v20"), ("bmi", "v20"), ("v20", "pneumonitis"), ("chemo", "pneumonitis"),
             ("smoker", "fev1"), ("fev1", "pneumonitis"),
             ("imaging", "crp"), ("crp", "hb"), ("dose", "local_control"),
             ("imaging", "local_control"), ("egfr", "local_control"), ("age", "os"),
             ("ecog", "os"), ("local_control", "os"), ("pneumonitis", "os"), ("hb", "os")]
    graph = Graph(nodes, edges)
    assert len(graph) == 20
    return graph, {"clinical": clinical, "imaging": imaging}


def bench_factor(n_patients: int, steps: int, particles: list[int], device: str = "cpu") -> dict:
    """HybridBN's SVI step on a factor model against plain Pyro on the same model, both on
    ``device``."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    p, k, batch = 200, 8, 2048
    rng = np.random.default_rng(0)
    loadings = rng.normal(0, 1, (k, p)) * (rng.random((k, p)) < 0.3)
    x = rng.normal(size=(n_patients, k)) @ loadings + rng.normal(0, 0.5, (n_patients, p))
    ids = [f"F{i:05d}" for i in range(n_patients)]
    block = pd.DataFrame(x, index=ids, columns=[f"c{j:03d}" for j in range(p)])
    graph = Graph([NodeSpec("factors", "latent", block="block", latent_dim=k)])
    out = {"n_patients": n_patients, "n_columns": p, "latent_dim": k, "batch_size": batch,
           "steps": steps, "device": _device_name(device)}
    torch.set_num_threads(1)

    def hybrid_seconds(num_steps, num_particles):
        model = HybridBN(graph, num_steps=num_steps, seed=0, tol=0.0, batch_size=batch,
                         num_particles=num_particles, device=device, num_threads=1)
        with _Clock() as clock:
            model.fit({"block": block})
            _synchronise(device)
        return clock

    for num_particles in particles:
        # the difference of two fits removes set-up (standardising, the SVD start)
        long, short = hybrid_seconds(steps + 10, num_particles), hybrid_seconds(10, num_particles)
        out[f"bayesrad_ms_per_step_{num_particles}_particles"] = 1000 * (long.wall - short.wall) / steps
        out[f"bayesrad_cpu_ms_per_step_{num_particles}_particles"] = 1000 * (long.cpu - short.cpu) / steps

    data = torch.as_tensor(x, dtype=torch.float32, device=device)

    def model(data):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([k, p]).to_event(2))
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0).expand([p]).to_event(1))
        sd = pyro.sample("sd", dist.HalfNormal(1.0).expand([p]).to_event(1))
        with pyro.plate("patients", n_patients, subsample_size=batch, device=device) as idx:
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([k]).to_event(1))
            pyro.sample("x", dist.Normal(mu + z @ w, sd).to_event(1), obs=data[idx])

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(model)
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": 0.01}), Trace_ELBO())
    for _ in range(10):
        svi.step(data)
    with _Clock() as clock:
        for _ in range(steps):
            svi.step(data)
        _synchronise(device)
    out["pyro_autonormal_ms_per_step"] = 1000 * clock.wall / steps
    out["pyro_autonormal_cpu_ms_per_step"] = 1000 * clock.cpu / steps
    for num_particles in particles:
        key = f"bayesrad_ms_per_step_{num_particles}_particles"
        out[f"pyro_over_bayesrad_{num_particles}_particles"] = out["pyro_autonormal_ms_per_step"] / out[key]
    out["note"] = ("bayesrad's step draws each patient's 8 latents from their exact conditional "
                   "given the loadings (no per-patient parameters); Pyro's AutoNormal learns a "
                   "mean and sd per patient and latent")
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter NUTS run, fewer steps")
    args = parser.parse_args(argv)
    out = {"machine": machine_info(), "quick": args.quick}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "model_speed.json"

    def save(key, value):
        # each section is written as soon as it is measured: a later failure keeps it
        out[key] = value
        path.write_text(json.dumps(out, indent=1))
        print(key, json.dumps(value)[:1500], flush=True)

    fit = bench_fit(args.quick)
    model = fit.pop("_model")
    save("fit", fit)
    save("latency", bench_latency(model, {"age_years": 70.0, "stage": 3, "dose_mean_gy": 60.0,
                                          "histology": "squamous"}, "local_control"))
    graph, blocks = twenty_node_graph()
    twenty = HybridBN(graph, num_steps=1000, seed=0, num_threads=1).fit(blocks)
    save("latency_20_nodes", bench_latency(twenty, {"age": 70.0, "stage": 3, "dose": 60.0,
                                                    "histology": "squamous"}, "local_control"))
    save("factor", bench_factor(10_000, 100 if args.quick else 300, [1, 8]))
    save("gpu", bench_gpu(100 if args.quick else 300))
    return out


if __name__ == "__main__":
    main()
