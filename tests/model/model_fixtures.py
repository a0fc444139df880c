"""A small generator with known truth for the model tests, written in the families HybridBN
fits (so its true coefficients and the oracle P(outcome) are exact), and the shared fit
settings. A module of its own, not conftest.py: test files import these names, and a bare
``import conftest`` finds whichever tests/*/conftest.py was imported first."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from bayesrad.graph.graph import Graph, NodeSpec

HISTOLOGY = ("adenocarcinoma", "squamous", "large_cell")
RADIOMICS = [f"ct_gtv_f{j:02d}" for j in range(10)]
# true coefficients, original units, keys as in HybridBN.coefficients()
TRUTH = {
    ("age_years", "dose_mean_gy"): -0.15,
    ("histology[squamous]", "radiomics[0]"): 0.6,
    ("histology[large_cell]", "radiomics[1]"): -0.8,
    ("dose_mean_gy", "local_control"): 0.12,
    ("radiomics[0]", "local_control"): -0.9,
    ("radiomics[1]", "local_control"): 0.5,
    ("histology[squamous]", "local_control"): -0.4,
    ("dose_mean_gy", "os_days"): 0.03,
    ("local_control", "os_days"): 0.5,
}
OS_SHAPE = 1.4
# fixed across cohorts (training and test patients share the generating model)
_LOADINGS = (np.random.default_rng(123).uniform(0.5, 1.0, (2, 10))
             * np.random.default_rng(124).choice([-1, 1], (2, 10)))
_LOADINGS[1, 0] = 0.0                  # the identifying zero of the model's loadings
_LOADINGS[0, 0], _LOADINGS[1, 1] = 0.9, 0.8


def toy_graph() -> Graph:
    graph = Graph([
        NodeSpec("age_years", "continuous", block="clinical"),
        NodeSpec("histology", "categorical", block="clinical", levels=list(HISTOLOGY)),
        NodeSpec("dose_mean_gy", "continuous", block="dosimetry"),
        NodeSpec("radiomics", "latent", block="radiomics", latent_dim=2),
        NodeSpec("local_control", "binary", block="outcome"),
        NodeSpec("os_days", "survival", block="outcome", event="os_event"),
    ])
    for edge in [("age_years", "dose_mean_gy"), ("histology", "radiomics"),
                 ("dose_mean_gy", "local_control"), ("radiomics", "local_control"),
                 ("histology", "local_control"), ("dose_mean_gy", "os_days"),
                 ("local_control", "os_days")]:
        graph.add_edge(*edge)
    return graph


def toy_cohort(n: int, seed: int, missing_imaging: float = 0.0, mechanism: str = "MCAR"):
    """Blocks ``{clinical, dosimetry, radiomics, outcome}`` and the truth for ``n`` patients.

    ``missing_imaging``: share of patients whose radiomics block is absent, MCAR or MAR
    (P(missing) logistic in standardised age). Returns (blocks, truth) with
    ``truth["p_local_control"]`` the oracle probability and ``truth["log_time_mean"]`` the
    true linear predictor of log survival time.
    """
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"T{seed}-{i:05d}" for i in range(n)], name="patient_id")
    age = rng.normal(65.0, 9.0, n)
    histology = rng.choice(len(HISTOLOGY), n, p=[0.5, 0.3, 0.2])
    dose = 60.0 + TRUTH[("age_years", "dose_mean_gy")] * (age - 65.0) + rng.normal(0, 4.0, n)
    z = np.column_stack([
        TRUTH[("histology[squamous]", "radiomics[0]")] * (histology == 1) + rng.normal(size=n),
        TRUTH[("histology[large_cell]", "radiomics[1]")] * (histology == 2) + rng.normal(size=n),
    ])
    radiomics = 5.0 + z @ _LOADINGS + rng.normal(0, 0.5, (n, 10))
    eta = (-7.0 + TRUTH[("dose_mean_gy", "local_control")] * dose
           + TRUTH[("radiomics[0]", "local_control")] * z[:, 0]
           + TRUTH[("radiomics[1]", "local_control")] * z[:, 1]
           + TRUTH[("histology[squamous]", "local_control")] * (histology == 1))
    p_lc = expit(eta)
    lc = (rng.random(n) < p_lc).astype(float)
    log_scale = (4.0 + TRUTH[("dose_mean_gy", "os_days")] * dose
                 + TRUTH[("local_control", "os_days")] * lc)
    true_time = np.exp(log_scale) * rng.exponential(1.0, n) ** (1.0 / OS_SHAPE)
    censor = rng.uniform(200.0, 2000.0, n)
    time = np.minimum(true_time, censor)
    event = (true_time <= censor).astype(float)
    blocks = {
        "clinical": pd.DataFrame({"age_years": age,
                                  "histology": pd.Categorical(np.asarray(HISTOLOGY)[histology],
                                                              categories=HISTOLOGY)}, index=ids),
        "dosimetry": pd.DataFrame({"dose_mean_gy": dose}, index=ids),
        "radiomics": pd.DataFrame(radiomics, columns=RADIOMICS, index=ids),
        "outcome": pd.DataFrame({"local_control": lc, "os_days": time, "os_event": event},
                                index=ids),
    }
    if missing_imaging:
        if mechanism == "MCAR":
            p_missing = np.full(n, missing_imaging)
        else:
            standard = (age - age.mean()) / age.std()
            offset = np.log(missing_imaging / (1 - missing_imaging))
            p_missing = expit(offset + 1.5 * standard)
        keep = rng.random(n) >= p_missing
        blocks["radiomics"] = blocks["radiomics"].loc[keep]
    truth = {"p_local_control": pd.Series(p_lc, index=ids), "z": z,
             "log_scale": pd.Series(log_scale, index=ids)}
    return blocks, truth


FIT = dict(num_steps=1500, learning_rate=0.03, lr_decay=0.1, seed=0, num_threads=1,
           n_samples=400)
