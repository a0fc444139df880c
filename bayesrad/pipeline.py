"""The end-to-end demo pipeline (``bayesrad demo`` / ``make demo``).

On a simulated radiotherapy cohort written as real files (CT, PET, dose grid, masks, gene
counts, clinical and outcome tables), it runs every layer once, as a pipeline would on a real
cohort folder:

1. simulate and write the cohort; read it back from its files;
2. extract radiomics (pyradiomics) and dosimetry (DVH) from the images, gene-module
   eigengenes from the counts, and the ``deep`` block with the package's own small encoder;
3. learn the graph under expert tiers, with bootstrap edge confidence;
4. fit the HybridBN on the training patients;
5. predict local control with credible intervals for the held-out tenth of the patients, one
   of them with its imaging removed (the model marginalises the missing blocks), and compare
   the predictions with the simulator's true probabilities (rank correlation, how often the
   interval holds the truth, which true parents the learned graph missed).

Everything it produces is written under ``out``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO_MODELS = Path(__file__).resolve().parents[1] / "models"
DEMO_ENCODER = REPO_MODELS / "encoder_small"
# Radiomics classes for the demo: enough to describe size, intensity and texture while keeping
# the demo to a few minutes on two cores (the full default set is ~100 features per image).
DEMO_RADIOMICS = {
    "setting": {"binWidth": 25, "label": 1, "force2D": False},
    "imageType": {"Original": {}},
    "featureClass": {"shape": None, "firstorder": None, "glcm": None},
}
IMAGING_BLOCKS = ("radiomics", "deep")
# Expert tiers of the radiotherapy cohort (``ExpertKnowledge.from_blocks`` arguments): patient
# factors (age, sex, performance status, treating centre) precede the tumour; histology shapes
# the imaging phenotype and the expression; stage is derived from tumour size and nodal spread
# (TNM); the prescribed (mean) dose is decided from stage and performance status, and the
# plan's DVH metrics (D95, lung V20) follow from the prescription and the anatomy. On the
# simulator (500 patients, 3 seeds) they take the mean SHD from 12.0 under the block tiers
# to 9.7, and remove every false edge the bootstrap gives probability >= 0.9
# (benchmarks/structure.py).
RADIOTHERAPY_TIERS = dict(
    block_tiers={"patient": ("demographics",), "pathology": (),
                 "tumour": ("radiomics", "deep", "genes", "gene_modules"),
                 "staging": ("clinical",), "prescription": (), "plan": ("dosimetry",),
                 "outcome": ("outcome",)},
    node_tiers={"age_years": "patient", "sex_male": "patient", "centre": "patient",
                "ecog": "patient", "histology": "pathology", "dose_mean_gy": "prescription"},
)


def run_demo(out: Path, n_patients: int = 240, seed: int = 0, console=None, bootstrap: int = 8,
             n_jobs: int = 2, num_steps: int = 2000) -> dict:
    """Run the demo pipeline into ``out``; returns what it produced (cohort, graph, model, predictions)."""
    from rich.console import Console

    from bayesrad.data import Cohort
    from bayesrad.data.simulate import simulate
    from bayesrad.viz.console import print_cohort_summary

    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now

    cohort_dir = out / "cohort"
    console.rule("1. simulate a radiotherapy cohort and read it back from its files")
    sim = simulate("radiotherapy", n_patients=n_patients, seed=seed, out=cohort_dir)
    cohort = Cohort.from_directory(cohort_dir)
    print_cohort_summary(cohort, console)
    lap("simulate_and_read")

    console.rule("2. feature extraction from the files")
    cohort = _extract_features(cohort, out, n_jobs, console)
    lap("extract")

    patient_ids = list(cohort.patient_ids)
    rng = np.random.default_rng(seed)
    test_ids = sorted(rng.choice(patient_ids, size=max(5, n_patients // 10), replace=False).tolist())
    train_ids = [p for p in patient_ids if p not in set(test_ids)]
    train = cohort.subset(train_ids)

    console.rule("3. structure under expert tiers (training patients only)")
    graph = _learn_graph(train, bootstrap, n_jobs, seed, console)
    # one learned graph is one draw of an uncertain structure: the outcome gets every parent
    # the tiers allow, under ridge shrinkage, so a parent the search missed is not assumed away
    learned_parents = set(graph.parents("local_control"))
    graph = graph.with_allowed_parents("local_control")
    added = [p for p in graph.parents("local_control") if p not in learned_parents]
    console.print(f"local_control: {len(learned_parents)} learned parent(s) and {len(added)} more "
                  f"allowed by the tiers, all under ridge shrinkage ({', '.join(added) or 'none'})")
    graph.to_yaml(out / "graph.yaml")
    _plot(graph, out / "graph.png")
    lap("structure")

    console.rule("4. fit the HybridBN by SVI")
    from bayesrad.model import HybridBN

    model = HybridBN(graph, num_steps=num_steps, seed=seed, num_threads=1).fit(train)
    model.save(out / "model")
    console.print(
        f"fitted in {model.fit_time_s_:.1f} s ({getattr(model, 'n_steps_', '?')} SVI steps, "
        f"device {model.device_}); saved to {out / 'model'}"
    )
    lap("fit")

    console.rule("5. predictions for held-out patients (P(local control) with 90% intervals)")
    test = cohort.subset(test_ids)
    # a new patient has no outcome yet: overall survival (local control's child) would
    # otherwise be evidence about local control
    blocks = {name: frame.copy() for name, frame in test.blocks.items() if name != "outcome"}
    without_imaging = test_ids[0]
    for name in IMAGING_BLOCKS:
        if name in blocks:
            blocks[name] = blocks[name].drop(index=[without_imaging], errors="ignore")
    predictions = model.predict(blocks, target="local_control")
    predictions.insert(0, "imaging", ["removed" if p == without_imaging else "observed" for p in predictions.index])
    truth = sim.truth.outcome_probability["local_control"].reindex(predictions.index)
    predictions["true_probability"] = truth
    predictions.to_csv(out / "predictions.csv")
    # the truth's gene latent is summarised here as module eigengenes (genes_module1_eigengene...)
    learned = graph.parents("local_control")
    missed = [p for p in sim.truth.graph.predecessors("local_control")
              if not any(q == p or q.startswith(f"{p}_") for q in learned)]
    _print_predictions(predictions, console, missed)
    lap("predict")
    pd.Series(timings, name="seconds").to_csv(out / "timings.csv")
    console.print(f"timings (s): {timings}")
    console.print(f"all outputs in {out}")
    return {"cohort": cohort, "simulation": sim, "graph": graph, "model": model, "predictions": predictions,
            "timings": timings}


def _extract_features(cohort, out: Path, n_jobs: int, console):
    """Radiomics + dosimetry from the images, gene modules from counts, deep block from the encoder."""
    from bayesrad.features.extract import dosimetry_step, extract_cohort, radiomics_step
    from bayesrad.features.genes import extract_gene_modules

    steps = [radiomics_step(settings=DEMO_RADIOMICS, modalities=("CT", "PET")), dosimetry_step()]
    result = extract_cohort(cohort, out / "features", steps=steps, n_jobs=n_jobs, progress=True)
    console.print(
        f"extracted {result.n_computed} units ({result.n_cached} from cache) in {result.seconds:.1f} s; "
        f"{len(result.failures)} failures (see {out / 'features' / 'failures.csv'})"
    )
    dvh = result.blocks.get("dosimetry")
    if "radiomics" in result.blocks:
        cohort = cohort.with_block("radiomics", result.blocks["radiomics"])  # replaces the simulated one
    if dvh is not None and "dosimetry" in cohort.blocks:
        # The planned dose metrics stay the model's dose nodes (what a clinic's planning system
        # exports); the DVH recomputed from the dose grids checks them.
        planned = cohort.blocks["dosimetry"]["dose_mean_gy"]
        recomputed = dvh.filter(regex="gtv.*mean").iloc[:, 0].reindex(planned.index)
        gap = float(np.nanmax(np.abs(recomputed - planned)))
        console.print(f"DVH from the dose grids: {dvh.shape[1]} features; GTV Dmean vs planned mean dose: "
                      f"max |difference| {gap:.3f} Gy")
    if "genes" in cohort.blocks:
        eigengenes, membership = extract_gene_modules(cohort)
        membership.to_csv(out / "features" / "gene_module_membership.csv")
        cohort = cohort.with_block("gene_modules", eigengenes)
        console.print(f"gene modules: {eigengenes.shape[1]} eigengenes from {cohort.blocks['genes'].shape[1]} genes")
        cohort = cohort.drop_block("genes")
    if DEMO_ENCODER.is_dir():
        from bayesrad.imaging import embed_cohort

        deep = embed_cohort(cohort, DEMO_ENCODER, pca_dim=8)
        cohort = cohort.with_block("deep", deep)
        console.print(f"deep block: {deep.shape[1]} embedding components for {deep.shape[0]} patients")
    else:
        console.print(f"[yellow]no encoder at {DEMO_ENCODER}; the deep block is skipped[/]")
    return cohort


def _learn_graph(train, bootstrap: int, n_jobs: int, seed: int, console):
    from rich.table import Table

    from bayesrad.graph.knowledge import ExpertKnowledge
    from bayesrad.graph.node_table import build_node_table
    from bayesrad.graph.structure import edge_table, learn_structure

    table = build_node_table(train, seed=seed)
    tiers = {k: v for k, v in RADIOTHERAPY_TIERS["node_tiers"].items() if k in table.specs}
    knowledge = ExpertKnowledge.from_blocks(
        table.blocks, block_tiers=RADIOTHERAPY_TIERS["block_tiers"], node_tiers=tiers)
    summaries = ", ".join(f"{node} ({len(cols)} components)"
                          for node, cols in table.vector_nodes.items()) or "none"
    console.print(f"node table: {table.data.shape[0]} patients x {len(table.nodes)} nodes "
                  f"({len(table.imputed_patients)} with missing blocks, imputed in the search); "
                  f"block summaries: {summaries}")
    console.print("tiers: " + " -> ".join(f"{name} {nodes}" for name, nodes in knowledge.tiers.items()))
    graph = learn_structure(table, knowledge=knowledge, bootstrap=bootstrap, n_jobs=n_jobs, seed=seed)
    added = _ensure_outcome_parents(graph, console)
    shown = Table(title=f"learned edges ({bootstrap} bootstrap resamples; averaged graph at "
                        f"Scutari's threshold {graph.bootstrap_.threshold():.2f})")
    for col in ("from", "to", "edge probability", "direction probability", "source"):
        shown.add_column(col)
    for row in edge_table(graph).itertuples(index=False):
        shown.add_row(row[0], row[1], "-" if np.isnan(row[2]) else f"{row[2]:.2f}",
                      "-" if np.isnan(row[3]) else f"{row[3]:.2f}",
                      "expert rule" if (row[0], row[1]) in added else "learned")
    console.print(shown)
    return graph


def _ensure_outcome_parents(graph, console) -> list[tuple[str, str]]:
    """The outcome needs at least one parent for a useful prediction: without a learned one,
    add dose, radiomics and stage (allowed by the tiers) with their bootstrap confidence."""
    if graph.parents("local_control"):
        return []
    console.print("[yellow]no parent of local_control was learned; adding dose and tumour nodes by expert rule[/]")
    confidence = graph.bootstrap_.confidence() if getattr(graph, "bootstrap_", None) else {}
    added = []
    for parent in ("dose_mean_gy", "radiomics", "stage"):
        if parent in graph.nodes:
            graph.add_edge(parent, "local_control", confidence=confidence.get((parent, "local_control")))
            added.append((parent, "local_control"))
    return added


def _plot(graph, path: Path) -> None:
    from bayesrad.viz.graph_plot import plot_graph

    fig = plot_graph(graph)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def _print_predictions(predictions: pd.DataFrame, console, missed_parents=(), max_rows: int = 12
                       ) -> None:
    """The first ``max_rows`` patients (those without imaging first), then how the predictions
    of all held-out patients compare with the simulator's true probabilities.
    ``missed_parents``: true parents of local control that the learned graph lacks."""
    from rich.table import Table
    from scipy.stats import spearmanr

    shown = pd.concat([predictions[predictions["imaging"] != "observed"],
                       predictions[predictions["imaging"] == "observed"]]).iloc[:max_rows]
    table = Table(title=f"P(local control) for held-out patients ({len(shown)} of {len(predictions)})")
    for col in ("patient", "imaging", "mean", "90% interval", "true probability"):
        table.add_column(col)
    for pid, row in shown.iterrows():
        table.add_row(pid, row["imaging"], f"{row['mean']:.2f}", f"[{row['q05']:.2f}, {row['q95']:.2f}]",
                      f"{row['true_probability']:.2f}")
    console.print(table)
    truth = predictions["true_probability"]
    rho = spearmanr(predictions["mean"], truth).statistic
    inside = int(((predictions["q05"] <= truth) & (truth <= predictions["q95"])).sum())
    console.print(f"all {len(predictions)} held-out patients: Spearman correlation of the predicted "
                  f"P(local control) with the simulator's true probability {rho:.2f}; true probability "
                  f"inside the 90% interval for {inside} of {len(predictions)}")
    if missed_parents:
        # the interval is the posterior uncertainty of P within the learned graph: an edge the
        # search missed is uncertainty it cannot show
        console.print(f"true parents of local_control that the learned graph lacks: "
                      f"{', '.join(missed_parents)}; the intervals are conditional on the graph")
