"""The figures the clinical-setting notebooks print, recomputed: ``benchmarks/results/settings.json``.

One function per notebook computes what the notebook prints; the notebook calls the same
function (it imports this file), so the JSON and the notebook's tables come from one code path
and the same seed (notebook 01, the tutorial, is executed whole and its figures kept):

- ``01_first_model``: the tutorial's figures (coverage, AUC vs oracle, ECE, what-if, Shapley,
  comparison with L2 logistic);
- ``02_glioma_fdopa``: habitat Dice against the true aggressive subregion and four
  progression-vs-radionecrosis models (bayesrad, radiomics + RF, a CNN from scratch, the SSL
  encoder fine-tuned) on an internal split and a held-out centre;
- ``03_wholebody_network``: ComBat (naive / biology protected) vs in-model centre random
  effects against the simulator's scanner shifts, the inter-organ network with bootstrap edge
  confidence vs the true graph, edges into response, response AUC vs L2 logistic;
- ``04_liver_weak_labels``: attention-MIL vs pyradiomics + multinomial logistic on the three
  liver classes (accuracy, macro AUC, top-label ECE with bootstrap CIs), attention mass on the
  lesion, per-phase enhancement against the simulator's mechanism;
- ``05_incomplete_multimodal``: missing-modality curves of bayesrad vs early and late fusion
  (``bayesrad.evaluate.harness.missing_modality_curve``), plus calibration slope and the mean
  90% interval width as the modality drops.

Usage: ``python benchmarks/settings.py [--quick] [--only KEY]`` (``--quick``: the notebooks' small settings,
which are also the default; the full run uses more patients and shares).
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
from sklearn.base import BaseEstimator

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "settings.json"

# SVI settings that keep a 5-fold curve under ~90 s on 2 cores (the notebook runs in make test);
# the full benchmark uses the library's defaults.
FAST_SVI = {"num_steps": 400, "min_steps": 200, "num_samples": 200}

#: the calls each recording model received, keyed by its class name (see ``_Recording``)
_RECORD: dict[str, list[pd.DataFrame]] = {}


class _Recording(BaseEstimator):
    """Wraps a harness model and keeps every prediction it returns, so the curve's own
    out-of-fold predictions give the metrics ``missing_modality_curve`` does not report
    (calibration slope, interval width). The harness names a model by its class, hence one
    subclass per model (``_recording``)."""

    def __init__(self, inner=None):
        self.inner = inner

    def fit(self, data, target):
        from sklearn.base import clone

        self.model_ = clone(self.inner).fit(data, target)
        return self

    def predict(self, data, times=None):
        answer = self.model_.predict(data)
        _RECORD.setdefault(type(self).__name__, []).append(answer.copy())
        return answer


def _recording(name: str, inner) -> _Recording:
    return type(name, (_Recording,), {"__module__": __name__})(inner=inner)


def incomplete_multimodal_blocks(n_patients: int = 120, seed: int = 0) -> dict:
    """The simulated cohort's blocks, target ``response`` alone in its block. The 200-column
    gene block is left out: with it, one bayesrad fit and the early fusion's iterative
    imputation take minutes, too long for a notebook that runs in the test suite."""
    import bayesrad

    cohort = bayesrad.simulate("incomplete_multimodal", n_patients=n_patients, seed=seed).cohort
    blocks = {b: f for b, f in cohort.blocks.items() if b != "genes"}
    blocks["outcome"] = blocks["outcome"][["response"]]  # later outcomes are not features
    return blocks


def incomplete_multimodal_figures(n_patients: int = 120, seed: int = 0, block: str = "pet_radiomics",
                                  fractions=(0.0, 0.5, 1.0), cv: str = "5x1", n_boot: int = 200,
                                  svi: dict | None = None) -> dict:
    """Missing-modality curves: bayesrad vs early fusion (mean imputation) vs late fusion, the
    same folds, as a share ``fractions`` of the test patients loses ``block`` (MCAR).

    Returns ``{"curve": DataFrame (model, fraction, metric, estimate, ci_low, ci_high) with
    metrics auc / ece (bootstrap CIs, from the harness) and calibration_slope /
    interval_width_90 (point values on the pooled out-of-fold predictions; the width is the
    mean q95 - q05 of the patient's probability, probability units, bayesrad only: the
    baselines give no interval), "settings": dict, "seconds": float}``.
    """
    from bayesrad.evaluate import metrics as M
    from bayesrad.evaluate.baselines import BayesNet, make_model
    from bayesrad.evaluate.harness import missing_modality_curve

    blocks = incomplete_multimodal_blocks(n_patients, seed)
    settings = {"seed": seed, "num_threads": 1, **(FAST_SVI if svi is None else svi)}
    models = [_recording("bayesrad", BayesNet(settings=settings)),
              _recording("early_fusion", make_model("early_mean", seed)),
              _recording("late_fusion", make_model("late", seed))]
    _RECORD.clear()
    start = time.perf_counter()
    curve = missing_modality_curve(blocks, "response", block, models=models, fractions=fractions,
                                   cv=cv, seed=seed, n_boot=n_boot)
    seconds = time.perf_counter() - start
    y = blocks["outcome"]["response"].dropna()
    rows = []
    for name, calls in _RECORD.items():
        # the harness predicts fold by fold, and within a fold share by share
        for k, fraction in enumerate(fractions):
            pooled = pd.concat(calls[k::len(fractions)])
            truth = y.reindex(pooled.index).to_numpy(float)
            p = pooled["mean"].to_numpy(float)
            # the recorded predictions are the curve's own: their AUC is the harness's
            reported = curve.query("model == @name and fraction == @fraction and metric == 'auc'")
            if not np.isclose(M.auc(truth, p), reported["estimate"].iloc[0]):
                raise RuntimeError(f"{name} at share {fraction}: recorded predictions do not "
                                   "match the harness's (fold/share order changed?)")
            slope = M.calibration_line(truth, p)["slope"]
            width = float((pooled["q95"] - pooled["q05"]).mean()) if "q95" in pooled else float("nan")
            for metric, value in (("calibration_slope", slope), ("interval_width_90", width)):
                rows.append({"model": name, "fraction": fraction, "metric": metric,
                             "estimate": float(value), "ci_low": np.nan, "ci_high": np.nan})
    curve = pd.concat([curve, pd.DataFrame(rows)], ignore_index=True)
    return {"curve": curve, "seconds": seconds,
            "settings": {"n_patients": n_patients, "seed": seed, "block": block,
                         "fractions": list(fractions), "cv": cv, "n_boot": n_boot, "svi": settings}}


def wide(curve: pd.DataFrame) -> pd.DataFrame:
    """The curve as the notebook prints it: one row per (model, share), one column per metric."""
    return curve.pivot_table(index=["model", "fraction"], columns="metric", values="estimate").round(3)


def _incomplete_multimodal_record(full: bool) -> dict:
    """Notebook 05's entry of settings.json."""
    if full:
        figures = incomplete_multimodal_figures(n_patients=300, fractions=(0.0, 0.25, 0.5, 0.75, 1.0),
                                                n_boot=500, svi={})
    else:
        figures = incomplete_multimodal_figures()
    print(wide(figures["curve"]).to_string())
    return {"settings": figures["settings"], "seconds": figures["seconds"],
            "rows": figures["curve"].to_dict(orient="records")}


def _first_model_record(full: bool) -> dict:
    """Notebook 01's entry: the notebook is executed (nbclient, the kernel nbmake uses) and the
    figures its last cell gathers are kept. Its code is the tutorial itself, so the record runs
    that code rather than a copy of it; ``full`` changes nothing (its sizes are the tutorial's)."""
    import os

    import nbformat
    from nbclient import NotebookClient

    path = HERE.parent / "notebooks" / "01_first_model.ipynb"
    notebook = nbformat.read(path, as_version=4)
    env = {"BAYESRAD_RECORD_SETTINGS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    start = time.perf_counter()
    try:
        NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    printed = "".join(out.get("text", "") for out in notebook.cells[-1].outputs)
    line = next(l for l in printed.splitlines() if l.startswith("FIGURES "))
    figures = json.loads(line[len("FIGURES "):])
    print(json.dumps(figures, indent=1))
    return {"figures": figures, "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------- 03_wholebody_network
#: organ uptake nodes of the simulator's ``wholebody_petct`` scenario (block ``organ_suv``)
WB_ORGANS = ("liver_log_suvmean", "spleen_log_suvmean", "bone_marrow_log_suvmean",
             "kidney_log_suvmean", "lung_log_suvmean", "brain_log_suvmean")
#: the patient factors that act on organ uptake: ComBat protects them ("biology kept")
WB_BIOLOGY = ("blood_glucose_mmol_l", "bmi_kg_m2", "age_years")


def _wholebody_knowledge(template, nodes):
    """The template's expert tiers on the node table's names: the template calls the
    radiomics latent ``tumour``, the node table ``radiomics``; the centre is a root (a group
    node in the model, a categorical column in the table, so nothing may point into it)."""
    from bayesrad.graph.knowledge import ExpertKnowledge

    def name(node):
        return "radiomics" if node == "tumour" else node

    spec = template.knowledge.to_dict()
    spec["tiers"] = [{"name": t["name"], "nodes": [name(n) for n in t["nodes"]]} for t in spec["tiers"]]
    spec["forbidden"] = ([[name(u), name(v)] for u, v in spec["forbidden"]]
                         + [[n, "centre"] for n in nodes if n != "centre"])
    spec["required"] = [[name(u), name(v)] for u, v in spec["required"]]
    spec["outcomes"] = [name(n) for n in spec["outcomes"]]
    return ExpertKnowledge.from_dict(spec)


def _ols_slope_and_centre_r2(y: np.ndarray, covariates: np.ndarray, centre: np.ndarray
                             ) -> tuple[float, float]:
    """OLS of ``y`` on an intercept and ``covariates`` (n, k; the first column's slope is
    returned) and the centre's partial R^2 given them: the share of the residual variance
    that centre indicators still explain (0 = no centre effect beyond the covariates)."""
    base = np.column_stack([np.ones(len(y)), covariates])
    dummies = (centre[:, None] == np.unique(centre)[None, 1:]).astype(float)
    beta, *_ = np.linalg.lstsq(base, y, rcond=None)
    reduced = np.sum((y - base @ beta) ** 2)
    full_x = np.column_stack([base, dummies])
    full_beta, *_ = np.linalg.lstsq(full_x, y, rcond=None)
    full = np.sum((y - full_x @ full_beta) ** 2)
    return float(beta[1]), float((reduced - full) / reduced)


def _scanner_shift_draws(model, clinical: pd.DataFrame, centres, organs) -> dict[str, np.ndarray]:
    """The fitted model's centre effect on each organ's measured log SUV with the patient's
    biology held fixed: draws (S, n_centres), centred over the centres (only differences
    between centres are identified; the mean goes into the intercepts).

    The same patients are given at every centre with their glucose, BMI, age and sex as
    evidence and nothing else, so the difference between centres is the random intercept
    of the organ plus those of its organ parents passed down their edges (and any path
    through the tumour latent), draw by draw: ``predict_draws`` uses the same posterior
    draws and the same particle noise for every row. The centre is a root, so giving it as
    evidence is the intervention (``do`` does not take group nodes)."""
    probe = clinical[["centre", *WB_BIOLOGY, "sex_male"]]
    copies = []
    for level in centres:
        part = probe.assign(centre=pd.Categorical([level] * len(probe), categories=centres))
        part.index = [f"{p}@{level}" for p in probe.index]
        copies.append(part)
    stacked = pd.concat(copies)
    stacked.index.name = clinical.index.name
    out = {}
    for organ in organs:
        draws = model.predict_draws({"clinical": stacked}, organ, n_particles=1)
        per_centre = draws.reshape(draws.shape[0], len(centres), len(probe)).mean(axis=2)
        out[organ] = per_centre - per_centre.mean(axis=1, keepdims=True)
    return out


def wholebody_figures(n_patients: int = 300, seed: int = 0, n_bootstrap: int = 30,
                      cv: str | None = "3x1", n_boot: int = 200, svi: dict | None = None,
                      fit_svi: dict | None = None) -> dict:
    """Notebook 03's figures on the simulator's ``wholebody_petct`` cohort (4 centres whose
    scanners multiply every PET SUV by ``exp(c)``, and whose patient mix differs: blood
    glucose, which lowers brain and liver uptake, differs between centres).

    Returns a dict of DataFrames (log SUV units unless said; in-sample: every method is
    fitted and judged on the whole cohort, as a harmonisation is in practice):

    - ``organs``: one row per organ: geometric-mean SUV, sd of log SUV, and the geometric
      mean SUV per centre.
    - ``harmonisation``: one row per (organ, method) with method ``raw``, ``combat_naive``
      (ComBat, nothing protected), ``combat_protected`` (ComBat protecting glucose, BMI and
      age) and ``in_model`` (the log SUV minus the fitted model's centre shift, below):
      ``residual_shift`` (RMS over centres of the centred per-centre mean of harmonised minus
      scanner-free values: what is left of the scanner; the scanner-free value is the
      measured one minus the simulator's ``scanner_log_factor``), ``error_sd`` (sd of
      harmonised minus scanner-free), ``glucose_slope`` (OLS on glucose, BMI and age, per
      mmol/l) next to ``true_glucose_slope`` (the same OLS on the scanner-free values), and
      ``centre_r2`` (centre's partial R^2 given glucose, BMI and age: what one can measure
      without the truth).
    - ``centre_effects``: one row per (organ, centre): the model's centre shift (posterior
      mean, q05, q95; centred over centres), ComBat's per-centre shift (centred mean of raw
      minus harmonised), and the simulator's centred ``scanner_log_factor`` (``truth``).
    - ``edges``: every ordered pair with directed bootstrap probability >= 0.1 or in the
      true graph: ``probability`` (adjacency), ``direction`` (share of those resamples with
      this orientation), ``directed`` (their product), ``learned`` (in the graph averaged at
      probability 0.5), ``true``.
    - ``structure``: ``compare_graphs`` of the learned graph against the truth, plus the
      directed precision / recall of the learned edges.
    - ``response``: one row per candidate parent of ``response`` (directed probability >= 0.1,
      in the template or in the truth): the bootstrap ``directed`` probability and the
      template model's coefficient (logit per unit of the parent; mean, q05, q95) and the
      true one where the simulator's parent has the same name (the model's tumour latent
      is identified up to rotation).
    - ``auc``: bayesrad (template graph) vs L2 logistic regression, response, the same
      ``cv`` folds, bootstrap 95% CIs (``bayesrad.evaluate.compare``), and a row ``oracle``:
      the simulator's true response probability, the ceiling any model can reach on these
      patients; ``auc_difference``: bayesrad minus L2 AUC with a paired bootstrap 95% CI
      (``bayesrad.evaluate.paired``); both ``None`` when ``cv`` is ``None``.
    Also, not in the JSON: ``graph`` (the learned Graph with edge confidence, for the figure)
    and ``model`` (the fitted template HybridBN); and ``settings`` and ``seconds`` (per step).
    """
    import bayesrad
    from bayesrad.evaluate import compare, paired
    from bayesrad.evaluate import metrics as M
    from bayesrad.evaluate.baselines import BayesNet
    from bayesrad.features.harmonize import ComBatHarmonizer
    from bayesrad.graph import build_node_table, learn_structure, templates
    from bayesrad.graph.structure import compare_graphs
    from bayesrad.model import HybridBN

    seconds = {}
    start = time.perf_counter()
    simulation = bayesrad.simulate("wholebody_petct", n_patients=n_patients, seed=seed)
    cohort, truth = simulation.cohort, simulation.truth
    clinical, uptake = cohort.blocks["clinical"], cohort.blocks["organ_suv"][list(WB_ORGANS)]
    centre = clinical["centre"].astype(str).to_numpy()
    centres = list(clinical["centre"].cat.categories)
    scanner = pd.Series(truth.parameters["scanner_log_factor"])[centres]
    scanner_free = uptake.sub(scanner.reindex(centre).to_numpy(), axis=0)

    rows = []
    for organ in WB_ORGANS:
        row = {"organ": organ, "suv_geomean": float(np.exp(uptake[organ].mean())),
               "log_sd": float(uptake[organ].std())}
        row.update({f"suv_{c}": float(np.exp(uptake[organ][centre == c].mean())) for c in centres})
        rows.append(row)
    organs = pd.DataFrame(rows)

    # ComBat, with and without the biology protected
    table = clinical[["centre", *WB_BIOLOGY]].assign(centre=centre).join(uptake)
    harmonised = {
        "raw": uptake,
        "combat_naive": ComBatHarmonizer(features=list(WB_ORGANS), seed=seed).fit_transform(table),
        "combat_protected": ComBatHarmonizer(covariates=list(WB_BIOLOGY), features=list(WB_ORGANS),
                                             seed=seed).fit_transform(table),
    }
    seconds["simulate_and_combat"] = time.perf_counter() - start

    # the model: the template graph, the centre a group node (random intercepts)
    start = time.perf_counter()
    template = templates.load("wholebody_petct")
    fit_settings = {"seed": seed, "num_threads": 1, "num_steps": 600, "min_steps": 300,
                    "num_samples": 200, **(fit_svi or {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the short SVI, reported in the notebook
        model = HybridBN(template, **fit_settings).fit(cohort)
    shift_draws = _scanner_shift_draws(model, clinical.iloc[:20], centres, WB_ORGANS)
    shift_mean = pd.DataFrame({o: d.mean(axis=0) for o, d in shift_draws.items()}, index=centres)
    harmonised["in_model"] = uptake - shift_mean.reindex(centre).to_numpy()
    seconds["model_fit"] = time.perf_counter() - start

    rows = []
    biology = table[list(WB_BIOLOGY)].to_numpy(float)
    for organ in WB_ORGANS:
        true_slope, _ = _ols_slope_and_centre_r2(scanner_free[organ].to_numpy(), biology, centre)
        for method, values in harmonised.items():
            error = (values[organ] - scanner_free[organ]).to_numpy()
            per_centre = np.array([error[centre == c].mean() for c in centres])
            slope, r2 = _ols_slope_and_centre_r2(values[organ].to_numpy(), biology, centre)
            rows.append({"organ": organ, "method": method,
                         "residual_shift": float(np.sqrt(np.mean((per_centre - per_centre.mean()) ** 2))),
                         "error_sd": float(error.std()), "glucose_slope": slope,
                         "true_glucose_slope": true_slope, "centre_r2": r2})
    harmonisation = pd.DataFrame(rows)

    rows = []
    centred_truth = scanner - scanner.mean()
    for organ in WB_ORGANS:
        draws = shift_draws[organ]
        combat = {m: (uptake[organ] - harmonised[m][organ]).groupby(centre).mean()[centres]
                  for m in ("combat_naive", "combat_protected")}
        for j, c in enumerate(centres):
            rows.append({"organ": organ, "centre": c, "model_mean": float(draws[:, j].mean()),
                         "model_q05": float(np.quantile(draws[:, j], 0.05)),
                         "model_q95": float(np.quantile(draws[:, j], 0.95)),
                         **{m: float(v[c] - v.mean()) for m, v in combat.items()},
                         "truth": float(centred_truth[c])})
    centre_effects = pd.DataFrame(rows)

    # the inter-organ network: bootstrap structure learning under the template's tiers
    start = time.perf_counter()
    node_table = build_node_table(cohort, seed=seed)
    knowledge = _wholebody_knowledge(template, node_table.nodes)
    graph = learn_structure(node_table, knowledge=knowledge, bootstrap=n_bootstrap, threshold=0.5,
                            seed=seed)
    seconds["structure"] = time.perf_counter() - start
    true_edges = {(str(u), str(v)) for u, v in truth.graph.edges}
    learned = set(graph.edges)
    strength = graph.bootstrap_.strength()
    strength = strength.assign(directed=strength["strength"] * strength["direction"])
    is_true = np.array([(u, v) in true_edges for u, v in zip(strength["from"], strength["to"])])
    edges = strength[(strength["directed"] >= 0.1) | is_true].rename(columns={"strength": "probability"})
    edges = edges.assign(learned=[(u, v) in learned for u, v in zip(edges["from"], edges["to"])],
                         true=[(u, v) in true_edges for u, v in zip(edges["from"], edges["to"])])
    edges = edges.sort_values(["directed", "from", "to"], ascending=[False, True, True]).reset_index(drop=True)
    found = len(learned & true_edges)
    structure = dict(compare_graphs(graph, truth.graph),
                     directed_precision=found / len(learned) if learned else float("nan"),
                     directed_recall=found / len(true_edges), n_bootstrap=n_bootstrap, threshold=0.5)

    # what the network says about response: bootstrap confidence and the model's effect
    coefficients = model.coefficients()
    into_response = coefficients.xs("response", level="child")
    true_coef = truth.parameters["coef"]
    directed = strength[strength["to"] == "response"].set_index("from")["directed"]
    parents = sorted(set(directed[directed >= 0.1].index) | {p for p, c in true_edges if c == "response"}
                     | {"radiomics" if p == "tumour" else p for p in template.parents("response")})
    rows = []
    for parent in parents:
        keys = ([k for k in into_response.index if k.startswith("tumour")] if parent == "radiomics"
                else [parent] if parent in into_response.index else [None])
        for key in keys:
            row = {"parent": parent, "model_key": key, "directed": float(directed.get(parent, 0.0)),
                   "in_learned_graph": (parent, "response") in learned,
                   "true": true_coef.get((parent, "response"), np.nan)}
            for column in ("mean", "q05", "q95"):
                row[column] = float(into_response.loc[key, column]) if key else np.nan
            rows.append(row)
    response = pd.DataFrame(rows)

    auc = auc_difference = None
    settings = {"n_patients": n_patients, "seed": seed, "n_bootstrap": n_bootstrap, "cv": cv,
                "n_boot": n_boot, "fit_svi": fit_settings}
    if cv is not None:
        start = time.perf_counter()
        # shorter than FAST_SVI: three fits of the template must fit the notebook's ~90 s
        cv_svi = {"seed": seed, "num_threads": 1,
                  **({"num_steps": 300, "min_steps": 150, "num_samples": 200} if svi is None else svi)}
        settings["cv_svi"] = cv_svi
        result = compare(cohort, "response", models=[BayesNet(graph=template, settings=cv_svi), "l2"],
                         cv=cv, seed=seed, n_boot=n_boot)
        auc_difference = paired(result, "BayesNet", "l2", "auc", n_boot=n_boot, seed=seed)
        y = cohort.blocks["outcome"]["response"]
        oracle = M.bootstrap_ci(M.auc, y.to_numpy(float),
                                truth.outcome_probability["response"].reindex(y.index).to_numpy(float),
                                n_boot=n_boot, seed=seed)
        auc = pd.concat([result, pd.DataFrame([{"model": "oracle", "metric": "auc",
                                                **{k: oracle[k] for k in ("estimate", "ci_low", "ci_high")}}])],
                        ignore_index=True)
        seconds["cv"] = time.perf_counter() - start
    return {"organs": organs, "harmonisation": harmonisation, "centre_effects": centre_effects,
            "edges": edges, "structure": structure, "response": response, "auc": auc,
            "auc_difference": auc_difference,
            "graph": graph, "model": model, "settings": settings, "seconds": seconds}


#: the tables of ``wholebody_figures`` that settings.json keeps (and the notebook checks)
WB_TABLES = ("organs", "harmonisation", "centre_effects", "edges", "response", "auc")


def _wholebody_record(full: bool) -> dict:
    """Notebook 03's entry of settings.json."""
    if full:
        figures = wholebody_figures(n_patients=800, n_bootstrap=100, n_boot=1000, cv="5x3", svi={},
                                    fit_svi={"num_steps": 3000, "min_steps": 500, "num_samples": 500})
    else:
        figures = wholebody_figures()
    for key in WB_TABLES:
        if figures[key] is not None:
            print(f"-- {key}\n{figures[key].round(3).to_string()}")
    print(json.dumps({k: figures[k] for k in ("structure", "auc_difference")}, indent=1))
    return {"settings": figures["settings"], "seconds": figures["seconds"],
            "structure": figures["structure"], "auc_difference": figures["auc_difference"],
            **{key: None if figures[key] is None else figures[key].to_dict(orient="records")
               for key in WB_TABLES}}


# ---------------------------------------------------------------- 04_liver_weak_labels (block start)
LIVER_PHASES = ("CT_arterial", "CT_portal", "CT_delayed")
# first-order statistics (HU) of the lesion in each phase, shape once (it is the same mask)
_FIRST_ORDER = {"setting": {"binWidth": 25}, "featureClass": {"firstorder": None}}
LIVER_RADIOMICS = {"CT_arterial": {"setting": {"binWidth": 25}, "featureClass": {"firstorder": None, "shape": None}},
                   "CT_portal": _FIRST_ORDER, "CT_delayed": _FIRST_ORDER}
# MIL settings: the imaging benchmark's architecture (tuned there on other seeds, not on this
# cohort) at half its width, so that five folds fit the notebook's time budget
LIVER_MIL = {"instance": "patch", "patch_size": 4, "embed_dim": 16, "attention_dim": 8, "epochs": 30,
             "patience": 10, "validation_fraction": 0.2}


def _liver_feature_name(column: str) -> str:
    """``ct_arterial_lesion_original_firstorder_mean`` -> ``arterial_mean``."""
    phase, rest = column.removeprefix("ct_").split("_lesion_original_")
    return f"{phase}_{rest.removeprefix('firstorder_').removeprefix('shape_')}"


def _macro_auc(y, probs) -> float:
    """Mean over classes of the one-vs-rest AUC (``bayesrad.evaluate.metrics.auc``)."""
    from bayesrad.evaluate import metrics as M

    return float(np.mean([M.auc((y == k).astype(float), probs[:, k]) for k in range(probs.shape[1])]))


def _top_label_ece(y, probs) -> float:
    """ECE of the top class's probability for 'the top class is right' (10 uniform bins), as in
    ``bayesrad.evaluate.metrics.multiclass_metrics``."""
    from bayesrad.evaluate import metrics as M

    return M.ece((probs.argmax(1) == y).astype(float), probs.max(1), 10, "uniform")


def _balanced_accuracy(y, probs) -> float:
    """Mean over the classes present of the share of their patients predicted right."""
    pred = probs.argmax(1)
    return float(np.mean([np.mean(pred[y == k] == k) for k in np.unique(y)]))


#: the metrics of notebook 04, each a function (class codes (n,), probabilities (n, K)) -> float;
#: cheap ones, since each runs once per bootstrap resample
LIVER_METRICS = {"accuracy": lambda y, probs: float(np.mean(probs.argmax(1) == y)),
                 "balanced_accuracy": _balanced_accuracy, "macro_auc": _macro_auc,
                 "top_label_ece": _top_label_ece}


def _attention_shares(attention: np.ndarray, masks: torch.Tensor, patch_size: int) -> pd.DataFrame:
    """Per patient: the attention mass on patches that hold lesion voxels, and the same share
    under uniform attention (the fraction of such patches: what attention blind to the lesion
    would give). ``attention`` (N, K) in ``to_instances`` order, ``masks`` (N, 1, S, S, S)."""
    from bayesrad.imaging.mil import to_instances

    lesion_patches = to_instances(masks, "patch", patch_size).flatten(2).amax(2).numpy() > 0.5  # (N, K)
    return pd.DataFrame({"attention_on_lesion": (attention * lesion_patches).sum(1),
                         "uniform_on_lesion": lesion_patches.mean(1)})


def liver_figures(n_patients: int = 120, seed: int = 0, image_size: int = 32, folds: int = 5,
                  n_boot: int = 200, n_examples: int = 3) -> dict:
    """Attention-MIL on the three CT phases vs radiomics + multinomial logistic regression on the
    simulator's ``liver_multiphase`` scenario (HCC / iCCA / mixed; the label is the patient's
    only), on the same stratified folds.

    - ``attention_mil``: ``AttentionMILClassifier`` (``LIVER_MIL``) on the preprocessed
      3-channel volume (arterial, portal, delayed; 16^3 voxels of 4 mm around the lesion,
      window -200..250 HU); no mask is given to the model.
    - ``radiomics_logistic``: pyradiomics on the rendered images and the lesion mask
      (first order in each phase, shape once; ``LIVER_RADIOMICS``), standardised, L2
      multinomial logistic regression with C by inner 5-fold CV (log loss) on the training fold.
    - ``true_latents_logistic``: the same regression on the simulator's latent lesion
      phenotype (not observable): the ceiling of a read-out of what the images encode.

    Returns ``{"metrics": DataFrame (model, metric, estimate, ci_low, ci_high): accuracy,
    balanced_accuracy, macro_auc (one-vs-rest), top_label_ece (10 uniform bins), percentile
    bootstrap 95% CIs stratified by class, plus rows model ``mil_minus_radiomics`` (paired
    bootstrap of the difference); "attention": DataFrame per patient (class, attention mass on
    lesion patches, the uniform share; out-of-fold attention); "coefficients": DataFrame
    (feature x class) of the logistic model's standardised coefficients fitted on every patient;
    "phase_hu": DataFrame (class x phase) of the mean lesion HU measured by pyradiomics next to
    the simulator's generating mean; "examples": list of dicts (patient, class, predicted
    probabilities, axial slices (x, y) of the arterial channel, lesion mask and attention, 4 mm
    pixels) for one patient per class, the one of median lesion size; "probabilities": {model: (n, 3)
    out-of-fold class probabilities}, "labels": (n,) class names; "settings", "seconds": {step: s}}``.
    """
    import tempfile

    import bayesrad
    from bayesrad.data.simulate.liver_multiphase import CLASSES, LESION_HU
    from bayesrad.evaluate import metrics as M
    from bayesrad.evaluate.baselines import _logistic_pipeline
    from bayesrad.features.extract import extract_cohort, radiomics_step
    from bayesrad.imaging import AttentionMILClassifier, PreprocessConfig, preprocess_cohort
    from sklearn.model_selection import StratifiedKFold

    seconds = {}
    start = time.perf_counter()
    config = PreprocessConfig(modalities=LIVER_PHASES, size=16, spacing_mm=4.0, margin_mm=8.0)
    with tempfile.TemporaryDirectory() as tmp:
        sim = bayesrad.simulate("liver_multiphase", n_patients=n_patients, seed=seed, out=Path(tmp) / "liver",
                                image_size=image_size)
        volumes, masks, ids = preprocess_cohort(sim.cohort, config)
        seconds["simulate_and_preprocess"] = time.perf_counter() - start
        start = time.perf_counter()
        extracted = extract_cohort(sim.cohort, steps=[radiomics_step(LIVER_RADIOMICS, modalities=("CT",))],
                                   progress=False)
        seconds["radiomics_extraction"] = time.perf_counter() - start
    radiomics = extracted.blocks["radiomics"].reindex(ids)
    radiomics.columns = [_liver_feature_name(c) for c in radiomics.columns]
    labels = sim.cohort.blocks["outcome"]["tumour_class"].reindex(ids).astype(str).to_numpy()
    y = np.searchsorted(CLASSES, labels)  # CLASSES is sorted: codes follow the models' classes_
    latents = sim.truth.latents.loc[ids, ["radiomics[0]", "radiomics[1]", "radiomics[2]"]]
    inputs = {"radiomics_logistic": radiomics, "true_latents_logistic": latents}
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(ids, y))

    probs = {name: np.zeros((len(ids), len(CLASSES))) for name in ("attention_mil", *inputs)}
    attention = np.zeros((len(ids), (config.size // LIVER_MIL["patch_size"]) ** 3))
    seconds["attention_mil"] = seconds["logistic"] = 0.0
    for train, test in splits:
        start = time.perf_counter()
        mil = AttentionMILClassifier(**LIVER_MIL, seed=seed, device="cpu").fit(volumes[train], y[train])
        probs["attention_mil"][test] = mil.predict_proba(volumes[test])
        attention[test] = mil.attention(volumes[test])
        seconds["attention_mil"] += time.perf_counter() - start
        start = time.perf_counter()
        for name, table in inputs.items():
            model = _logistic_pipeline("l2", 10, 5, seed).fit(table.iloc[train], y[train])
            probs[name][test] = model.predict_proba(table.iloc[test])
        seconds["logistic"] += time.perf_counter() - start

    rows = []
    for name, p in probs.items():
        for metric, function in LIVER_METRICS.items():
            ci = M.bootstrap_ci(function, y, p, n_boot=n_boot, seed=seed, stratify=y)
            rows.append({"model": name, "metric": metric, **ci})
    for metric in ("accuracy", "macro_auc", "top_label_ece"):
        def difference(codes, p_mil, p_radiomics, function=LIVER_METRICS[metric]):
            return function(codes, p_mil) - function(codes, p_radiomics)
        # paired: both models scored on the same resampled patients
        ci = M.bootstrap_ci(difference, y, probs["attention_mil"], probs["radiomics_logistic"], n_boot=n_boot,
                            seed=seed, stratify=y)
        rows.append({"model": "mil_minus_radiomics", "metric": metric, **ci})
    metrics = pd.DataFrame(rows).drop(columns="n_boot")

    shares = _attention_shares(attention, masks, LIVER_MIL["patch_size"])
    shares.insert(0, "tumour_class", labels)
    shares.index = pd.Index(ids, name="patient_id")

    # the interpretation: one model on every patient, C again by inner CV
    full_model = _logistic_pipeline("l2", 10, 5, seed).fit(radiomics, y)
    coefficients = pd.DataFrame(full_model[-1].coef_.T, index=radiomics.columns, columns=list(CLASSES))
    # the same read-out of the true latents: which generating dimension separates which class
    latent_model = _logistic_pipeline("l2", 10, 5, seed).fit(latents, y)
    latent_coefficients = pd.DataFrame(latent_model[-1].coef_.T, columns=list(CLASSES),
                                       index=["size", "arterial_washout", "delayed_enhancement"])

    # the simulator's lesion HU per class: the phase's intercept + loadings x the class's mean latent
    class_latent = sim.truth.latents.loc[ids, ["radiomics[1]", "radiomics[2]"]].groupby(labels).mean()
    phase_hu = {}
    for phase in ("arterial", "portal", "delayed"):
        a, b, c = LESION_HU[phase]
        phase_hu[f"{phase}_measured"] = radiomics[f"{phase}_mean"].groupby(labels).mean()
        phase_hu[f"{phase}_simulated"] = a + b * class_latent["radiomics[1]"] + c * class_latent["radiomics[2]"]
    phase_hu = pd.DataFrame(phase_hu).loc[list(CLASSES)]

    examples = []
    for k, name in enumerate(CLASSES):
        # the patient of the class whose lesion size is the class's median: a typical case (the
        # largest lesions fill the whole crop)
        members = np.flatnonzero(y == k)
        sizes = masks[members].flatten(1).sum(1).numpy()
        i = int(members[np.abs(sizes - np.median(sizes)).argmin()])
        lesion = masks[i, 0].numpy() > 0.5
        z = int(lesion.sum((0, 1)).argmax())
        g, patch = config.size // LIVER_MIL["patch_size"], LIVER_MIL["patch_size"]
        # patches are in (x, y, z) raster order (``to_instances``), as the volume's axes
        volume_map = np.repeat(np.repeat(np.repeat(attention[i].reshape((g, g, g)), patch, 0), patch, 1), patch, 2)
        examples.append({"patient_id": ids[i], "tumour_class": name, "probabilities": dict(zip(CLASSES, probs["attention_mil"][i])),
                         "arterial": volumes[i, 0, :, :, z].numpy(), "delayed": volumes[i, 2, :, :, z].numpy(),
                         "lesion": lesion[:, :, z], "attention": volume_map[:, :, z],
                         "attention_on_lesion": float(shares["attention_on_lesion"].iloc[i])})
    return {"metrics": metrics, "attention": shares, "coefficients": coefficients,
            "latent_coefficients": latent_coefficients, "phase_hu": phase_hu,
            "examples": examples[:n_examples], "probabilities": probs, "labels": labels, "seconds": seconds,
            "settings": {"n_patients": n_patients, "seed": seed, "image_size": image_size, "folds": folds,
                         "n_boot": n_boot, "class_counts": {c: int((labels == c).sum()) for c in CLASSES},
                         "preprocess": config.to_dict(), "mil": LIVER_MIL,
                         "radiomics_columns": int(radiomics.shape[1]),
                         "radiomics_failures": int(len(extracted.failures))}}


#: lesion intensity-level features (HU): they all rise with the lesion's enhancement in that phase
_LEVEL_FEATURES = ("mean", "median", "10_percentile", "90_percentile", "root_mean_squared", "minimum", "maximum")


def liver_tables(figures: dict) -> dict[str, pd.DataFrame]:
    """The tables notebook 04 prints (and settings.json keeps), rounded: ``metrics`` (model x
    metric, point estimates), ``recall`` (model x class: share of the class's patients
    predicted as it), ``attention`` (class x shares, means), ``phase_hu`` (HU), ``phase_level``
    (class x phase: sum of the standardised coefficients of the phase's intensity-level
    features, ``_LEVEL_FEATURES``), ``latent_coefficients`` and ``top_coefficients`` (the 4
    largest |coefficient| per class)."""
    from bayesrad.data.simulate.liver_multiphase import CLASSES

    metrics = figures["metrics"].pivot(index="model", columns="metric", values="estimate")
    codes = np.searchsorted(CLASSES, figures["labels"])
    recall = pd.DataFrame({name: [np.mean(p[codes == k].argmax(1) == k) for k in range(len(CLASSES))]
                           for name, p in figures["probabilities"].items()}, index=list(CLASSES)).T
    attention = figures["attention"].groupby("tumour_class")[["attention_on_lesion", "uniform_on_lesion"]].mean()
    attention.loc["all"] = figures["attention"][["attention_on_lesion", "uniform_on_lesion"]].mean()
    coefficients = figures["coefficients"]
    level = pd.DataFrame({phase: coefficients.loc[[f"{phase}_{f}" for f in _LEVEL_FEATURES]].sum()
                          for phase in ("arterial", "portal", "delayed")})
    top = pd.concat({c: coefficients[c].reindex(coefficients[c].abs().sort_values(ascending=False).index[:4])
                     .reset_index().set_axis(["feature", "coefficient"], axis=1) for c in coefficients})
    return {"metrics": metrics.round(3), "recall": recall.round(3), "attention": attention.round(3),
            "phase_hu": figures["phase_hu"].round(1), "phase_level": level.round(3),
            "latent_coefficients": figures["latent_coefficients"].round(3), "top_coefficients": top.round(3)}


def _liver_record(full: bool) -> dict:
    """Notebook 04's entry of settings.json."""
    figures = liver_figures(n_patients=300, image_size=48, n_boot=500) if full else liver_figures()
    tables = liver_tables(figures)
    for name, table in tables.items():
        print(table.to_string())
    return {"settings": figures["settings"], "seconds": figures["seconds"],
            "metrics": figures["metrics"].to_dict(orient="records"),
            **{name: tables[name].reset_index().to_dict(orient="records")
               for name in ("recall", "attention", "phase_hu", "phase_level", "latent_coefficients",
                            "top_coefficients")}}
# ---------------------------------------------------------------- 04_liver_weak_labels (block end)


# ---------------------------------------------------------------------- 02_glioma_fdopa
#: the kinetic features the models see: whole-lesion curve descriptors and the washout
#: habitat's share and curve (habitat 1, the most washing-out, see ``KineticHabitats``)
GLIOMA_KINETIC_COLUMNS = (
    "dpet_lesion_peak_suv", "dpet_lesion_time_to_peak_s", "dpet_lesion_late_slope_suv_per_h",
    "dpet_lesion_habitat1_fraction", "dpet_lesion_habitat1_time_to_peak_s",
    "dpet_lesion_habitat1_late_slope_suv_per_h",
)
#: early (5-15 min) and late (20-40 min) PET as the two image channels, the pair a reader
#: compares on FET/FDOPA; the 3 mm / 32^3 cube is the packaged encoder's input
GLIOMA_VOLUMES = {"modalities": ("DPET", "PET"), "spacing_mm": 3.0, "size": 32, "margin_mm": 10.0,
                  "dynamic_window_s": (300.0, 900.0)}
#: the decision threshold of every model: fixed before any test patient is seen
GLIOMA_THRESHOLD = 0.5


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2.0 * np.logical_and(a, b).sum() / total) if total else float("nan")


def glioma_kinetics(sim, train_ids, seed: int = 0):
    """Kinetics and habitats of every patient, the habitat model fitted on ``train_ids`` only.

    Returns ``(features DataFrame patient x kinetic features, dice Series patient -> Dice of
    habitat 1 against the true aggressive subregion, habitats (fitted KineticHabitats),
    example dict for a figure: the middle lesion slice of habitat 1, the truth and late PET)``.
    """
    import SimpleITK as sitk

    from bayesrad.data.simulate.glioma_pet import FRAME_END_S
    from bayesrad.features.kinetics import (KineticHabitats, frame_mid_times, habitat_features,
                                            parse_frame_times, roi_kinetics, voxel_curves)

    images = sim.cohort.images
    dynamic = images[images["modality"] == "DPET"].set_index("patient_id")
    times = frame_mid_times(parse_frame_times(dynamic["frame_times"].iloc[0]), FRAME_END_S)
    series = {pid: (sitk.GetArrayFromImage(sitk.ReadImage(row["path"])).astype(float),
                    sitk.GetArrayFromImage(sitk.ReadImage(row["mask_path"])) != 0)
              for pid, row in dynamic.iterrows()}
    # Two habitats: the question is washout (tumour) against accumulation (treatment effect).
    habitats = KineticHabitats(n_habitats=2, random_state=seed).fit(
        [voxel_curves(*series[pid]) for pid in train_ids], times)
    truth = sim.truth.aggressive_masks
    rows, dice, example = {}, {}, None
    for pid, (pet, mask) in series.items():
        values = roi_kinetics(pet, mask, times, prefix="dpet", roi="lesion")
        habitat_values, labels = habitat_features(pet, mask, times, habitats, prefix="dpet", roi="lesion")
        rows[pid] = {**values, **habitat_values}
        aggressive = sitk.GetArrayFromImage(sitk.ReadImage(truth[pid])) != 0
        dice[pid] = _dice(labels == 1, aggressive)
        if example is None and mask.sum() >= 40:
            z = int(np.median(np.nonzero(mask)[0]))
            example = {"patient_id": pid, "pet_late": pet[-1, z], "habitat1": labels[z] == 1,
                       "truth": aggressive[z], "lesion": mask[z]}
    features = pd.DataFrame.from_dict(rows, orient="index").rename_axis("patient_id")
    return features, pd.Series(dice, name="dice").rename_axis("patient_id"), habitats, example


def _volume_model(name: str, seed: int, epochs: int):
    from bayesrad.imaging.embed import packaged_encoder
    from bayesrad.imaging.finetune import VolumeRegressor

    # Both networks regress the 0/1 label (mean squared error: a linear-probability score),
    # with the same epochs, early stopping on 20% of the training patients and augmentation.
    if name == "cnn_scratch":
        return VolumeRegressor(encoder="resnet", width=4, epochs=epochs, patience=epochs, lr=2e-3,
                               seed=seed, device="cpu")
    return VolumeRegressor(encoder_dir=packaged_encoder("encoder_small"), epochs=epochs, patience=epochs,
                           lr=5e-4, seed=seed, device="cpu")


def glioma_figures(n_patients: int = 160, seed: int = 0, image_size: int = 32, held_out: str = "centre_D",
                   internal_fraction: float = 0.25, epochs: int = 6, n_boot: int = 200,
                   svi: dict | None = None, out=None) -> dict:
    """Radionecrosis vs progression on the ``glioma_pet`` scenario (four centres): four models
    trained once on the same patients, tested on an internal split and on a held-out centre.

    Training patients: the centres other than ``held_out``, less a stratified
    ``internal_fraction`` kept as the internal test set. The external test set is every patient
    of ``held_out``, whose scanner reads PET ``exp(0.30)`` = 1.35 times higher. Models:

    - ``bayesrad``: ``BayesNet`` (the default graph over the blocks clinical, radiomics,
      kinetics and deep; HybridBN, SVI) with ``svi`` settings;
    - ``radiomics_rf``: random forest on clinical, radiomics and kinetics (engineered features);
    - ``cnn_scratch``: a 3D ResNet (width 4) from random weights on the early/late PET cube;
    - ``ssl_finetuned``: the packaged self-supervised encoder fine-tuned on the same cubes.

    The ``deep`` block is the frozen packaged encoder's embedding, reduced to 3 principal
    components fitted on the training patients. Habitats are fitted on the training
    patients' voxels. Sensitivity and specificity at ``GLIOMA_THRESHOLD`` (0.5, fixed in
    advance), AUC; each with a percentile bootstrap 95% CI (``n_boot`` resamples, stratified
    by outcome).

    Returns ``{"metrics": DataFrame (test_set, model, metric, estimate, ci_low, ci_high),
    "dice": DataFrame (centre, n, mean, min, q25, median), "centres": DataFrame (centre, n,
    progression share, background log SUV mean), "predictions": DataFrame, "example": dict of
    2D arrays, "settings": dict, "seconds": float}``.
    """
    import tempfile

    import torch
    from sklearn.decomposition import PCA
    from sklearn.model_selection import train_test_split

    import bayesrad
    from bayesrad.evaluate import metrics as M
    from bayesrad.evaluate.baselines import BayesNet, RandomForestBaseline
    from bayesrad.imaging.embed import embed_volumes, packaged_encoder
    from bayesrad.imaging.encoders import load_encoder
    from bayesrad.imaging.transforms import PreprocessConfig, preprocess_cohort

    start = time.perf_counter()
    torch.manual_seed(seed)
    folder = tempfile.TemporaryDirectory() if out is None else None
    sim = bayesrad.simulate("glioma_pet", n_patients=n_patients, seed=seed, image_size=image_size,
                            missing=0.0, out=folder.name if folder else out)
    blocks = sim.cohort.blocks
    centre = blocks["clinical"]["centre"].astype(str)
    y_all = blocks["outcome"]["progression"].astype(int)
    external = list(centre.index[centre == held_out])
    others = centre.index[centre != held_out]
    train, internal = train_test_split(list(others), test_size=internal_fraction, random_state=seed,
                                       stratify=y_all[others])
    kinetics, dice, habitats, example = glioma_kinetics(sim, train, seed)

    volumes, _, ids = preprocess_cohort(sim.cohort, PreprocessConfig(**GLIOMA_VOLUMES))
    volumes = pd.Series(list(volumes), index=ids)
    encoder, _ = load_encoder(packaged_encoder("encoder_small"))
    embedding = embed_volumes(encoder, torch.stack(list(volumes)), device="cpu")
    pca = PCA(n_components=3, random_state=seed).fit(embedding[[ids.index(p) for p in train]])
    deep = pd.DataFrame(pca.transform(embedding), index=pd.Index(ids, name="patient_id"),
                        columns=[f"pet_deep_pc{j + 1}" for j in range(3)])

    # The centre and its reference-region SUV are left out: the held-out centre is a level no
    # model has seen, and the question is whether the features transfer without it.
    features = {"clinical": blocks["clinical"].drop(columns=["centre"]), "radiomics": blocks["radiomics"],
                "kinetics": kinetics[list(GLIOMA_KINETIC_COLUMNS)], "deep": deep}

    def subset(names, patients):
        return {b: features[b].loc[patients] for b in names} | {"outcome": blocks["outcome"][["progression"]].loc[patients]}

    settings = {"seed": seed, "num_threads": 1, **(FAST_SVI if svi is None else svi)}
    tests = {"internal": internal, "external": external}
    scores: dict[str, dict[str, np.ndarray]] = {}
    fit_seconds = {}
    t = time.perf_counter()
    model = BayesNet(settings=settings).fit(subset(["clinical", "radiomics", "kinetics", "deep"], train), "progression")
    scores["bayesrad"] = {k: model.predict(subset(["clinical", "radiomics", "kinetics", "deep"], v))["mean"]
                          .reindex(v).to_numpy(float) for k, v in tests.items()}
    fit_seconds["bayesrad"] = time.perf_counter() - t
    t = time.perf_counter()
    model = RandomForestBaseline(seed=seed).fit(subset(["clinical", "radiomics", "kinetics"], train), "progression")
    scores["radiomics_rf"] = {k: model.predict(subset(["clinical", "radiomics", "kinetics"], v))["mean"]
                              .reindex(v).to_numpy(float) for k, v in tests.items()}
    fit_seconds["radiomics_rf"] = time.perf_counter() - t
    for name in ("cnn_scratch", "ssl_finetuned"):
        t = time.perf_counter()
        model = _volume_model(name, seed, epochs).fit(torch.stack(list(volumes[train])), y_all[train].to_numpy(float))
        scores[name] = {k: model.predict(torch.stack(list(volumes[v]))) for k, v in tests.items()}
        fit_seconds[name] = time.perf_counter() - t

    def at_threshold(key):
        return lambda y, p: M.threshold_metrics(y, p, GLIOMA_THRESHOLD)[key]

    rows, predictions = [], []
    for test_set, patients in tests.items():
        y = y_all[patients].to_numpy(int)
        for name, by_set in scores.items():
            p = by_set[test_set]
            predictions.append(pd.DataFrame({"test_set": test_set, "model": name, "patient_id": patients,
                                             "progression": y, "score": p}))
            for metric, fn in (("auc", M.auc), ("sensitivity", at_threshold("sensitivity")),
                               ("specificity", at_threshold("specificity"))):
                ci = M.bootstrap_ci(fn, y, p, n_boot=n_boot, seed=seed, stratify=y)
                rows.append({"test_set": test_set, "model": name, "metric": metric, "n": len(y),
                             "estimate": ci["estimate"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"]})
    dice_rows = []
    for group, values in [(c, dice[centre.index[centre == c]]) for c in sorted(centre.unique())] + [("all", dice)]:
        dice_rows.append({"centre": group, "n": int(values.size), "mean": float(values.mean()),
                          "min": float(values.min()), "q25": float(values.quantile(0.25)),
                          "median": float(values.median())})
    background = blocks["pet_reference"]["pet_background_log_suv"]
    centres = pd.DataFrame({"n": centre.value_counts(), "progression_share": y_all.groupby(centre).mean(),
                            "background_log_suv": background.groupby(centre).mean(),
                            "lesion_peak_suv_median": kinetics["dpet_lesion_peak_suv"].groupby(centre).median()})
    centres = centres.rename_axis("centre").reset_index()
    if folder is not None:
        folder.cleanup()
    return {"metrics": pd.DataFrame(rows), "dice": pd.DataFrame(dice_rows), "centres": centres,
            "predictions": pd.concat(predictions, ignore_index=True), "example": example,
            "seconds": time.perf_counter() - start, "fit_seconds": fit_seconds,
            "settings": {"n_patients": n_patients, "seed": seed, "image_size": image_size, "held_out": held_out,
                         "internal_fraction": internal_fraction, "n_train": len(train), "n_internal": len(internal),
                         "n_external": len(external), "epochs": epochs, "n_boot": n_boot,
                         "threshold": GLIOMA_THRESHOLD, "n_habitats": int(habitats.n_habitats_),
                         "kinetic_columns": list(GLIOMA_KINETIC_COLUMNS), "svi": settings}}


def glioma_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The metrics as the notebook prints them: one row per (test set, model), "est [lo, hi]"."""
    text = metrics.assign(value=[f"{e:.2f} [{lo:.2f}, {hi:.2f}]" for e, lo, hi in
                                 metrics[["estimate", "ci_low", "ci_high"]].to_numpy()])
    return text.pivot(index=["test_set", "model"], columns="metric", values="value")[["auc", "sensitivity", "specificity"]]


def _glioma_record(full: bool) -> dict:
    """Notebook 02's entry of settings.json."""
    figures = glioma_figures(n_patients=400, epochs=20, n_boot=1000, svi={}) if full else glioma_figures()
    print(glioma_table(figures["metrics"]).to_string())
    print(figures["dice"].round(3).to_string())
    return {"settings": figures["settings"], "seconds": figures["seconds"], "fit_seconds": figures["fit_seconds"],
            "metrics": figures["metrics"].to_dict(orient="records"), "dice": figures["dice"].to_dict(orient="records"),
            "centres": figures["centres"].to_dict(orient="records")}


#: one entry per notebook: its key in settings.json -> a function (full: bool) -> JSON-able dict.
#: A notebook adds its line here; ``--only KEY`` recomputes one entry and keeps the others.
NOTEBOOKS = {
    "01_first_model": _first_model_record,
    "02_glioma_fdopa": _glioma_record,
    "03_wholebody_network": _wholebody_record,
    "04_liver_weak_labels": _liver_record,
    "05_incomplete_multimodal": _incomplete_multimodal_record,
}


def main() -> None:
    import torch
    from threadpoolctl import threadpool_limits

    sys.path.insert(0, str(HERE))
    from _machine import machine_info

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the notebooks' settings (default)")
    parser.add_argument("--full", action="store_true", help="larger cohorts, default SVI")
    parser.add_argument("--only", choices=sorted(NOTEBOOKS), action="append",
                        help="recompute these notebooks' entries only (repeatable); the others are kept")
    args = parser.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1)
    out = json.loads(RESULTS.read_text()) if RESULTS.exists() and args.only else {}
    if out and out.get("quick") != (not args.full):
        parser.error(f"{RESULTS} holds {'quick' if out.get('quick') else 'full'} figures; "
                     "recompute every entry (no --only) to switch")
    out.update({"machine": machine_info(), "quick": not args.full})
    for key in args.only or sorted(NOTEBOOKS):
        print(f"== {key}")
        out[key] = NOTEBOOKS[key](args.full)
    RESULTS.parent.mkdir(exist_ok=True)
    # written whole to a temporary name first: a failure leaves the previous file intact
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1, default=float))
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
