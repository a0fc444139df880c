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

# The demo's encoder ships as package data (bayesrad/imaging/pretrained/encoder_small).
DEMO_ENCODER = "encoder_small"
# Radiomics classes for the demo: enough to describe size, intensity and texture while keeping
# the demo to a few minutes on two cores (the full default set is ~100 features per image).
DEMO_RADIOMICS = {
    "setting": {"binWidth": 25, "label": 1, "force2D": False},
    "imageType": {"Original": {}},
    "featureClass": {"shape": None, "firstorder": None, "glcm": None},
}
IMAGING_BLOCKS = ("radiomics", "deep")
# Expert tiers of the radiotherapy cohort: package data (bayesrad/graph/tiers/radiotherapy.yaml),
# where their reasons are written down.
TIERS_NAME = "radiotherapy"


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
    from bayesrad.data.derived import write_block
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
        # registered beside the extracted blocks, so --features DIR gives the CLI and the app
        # (make serve) the blocks this model was fitted on
        write_block(out / "features", "gene_modules", eigengenes, step="genes/fit",
                    settings={"source": "genes"}, replaces=["genes"])
        console.print(f"gene modules: {eigengenes.shape[1]} eigengenes from {cohort.blocks['genes'].shape[1]} genes")
        cohort = cohort.drop_block("genes")
    from bayesrad.errors import BayesradError
    from bayesrad.imaging import embed_cohort, packaged_encoder

    try:
        encoder = packaged_encoder(DEMO_ENCODER)
    except BayesradError:
        encoder = None
    if encoder is not None:
        deep = embed_cohort(cohort, encoder, pca_dim=8)
        cohort = cohort.with_block("deep", deep)
        write_block(out / "features", "deep", deep, step="embed",
                    settings={"encoder": DEMO_ENCODER, "pca_dim": 8})
        console.print(f"deep block: {deep.shape[1]} embedding components for {deep.shape[0]} patients")
    else:
        console.print(f"[yellow]no packaged encoder {DEMO_ENCODER!r}; the deep block is skipped[/]")
    return cohort


def _learn_graph(train, bootstrap: int, n_jobs: int, seed: int, console):
    from rich.table import Table

    from bayesrad.graph.knowledge import ExpertKnowledge, packaged_tiers
    from bayesrad.graph.node_table import build_node_table
    from bayesrad.graph.structure import edge_table, learn_structure

    table = build_node_table(train, seed=seed)
    packaged = packaged_tiers(TIERS_NAME)
    tiers = {k: v for k, v in packaged["node_tiers"].items() if k in table.specs}
    knowledge = ExpertKnowledge.from_blocks(table.blocks, block_tiers=packaged["block_tiers"], node_tiers=tiers)
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


# ------------------------------------------------------------------ CLI steps (bayesrad extract / harmonize / predict)

def extract_habitats(cohort_dir, out) -> pd.DataFrame:
    """Kinetic habitats of a cohort's dynamic PET (``features.kinetics.extract_kinetics``): one
    habitat model fitted on the pooled ROI voxels of every patient, each patient's habitat map
    saved as ``out/habitats/<patient_id>_habitats.nii.gz``, the model as
    ``out/habitats/habitats.joblib``, and the ``kinetics`` block (ROI + habitat features)
    registered in ``out/features.yaml``. Returns that block (patients x features)."""
    import joblib

    from bayesrad.data import Cohort
    from bayesrad.data.derived import write_block
    from bayesrad.features.kinetics import extract_kinetics

    habitat_dir = Path(out) / "habitats"
    habitat_dir.mkdir(parents=True, exist_ok=True)
    block = extract_kinetics(Cohort.from_directory(cohort_dir), habitat_dir=habitat_dir)
    model = block.attrs.pop("habitats")
    joblib.dump(model, habitat_dir / "habitats.joblib")
    settings = {k: v for k, v in vars(model).items() if not k.endswith("_") and not k.startswith("_")}
    write_block(out, "kinetics", block, step="extract/kinetics+habitats", settings=settings,
                n_habitats=int(model.n_habitats_), maps=str(habitat_dir))
    return block


def _columns_from(cohort, columns) -> pd.DataFrame:
    """The named clinical-style columns, from whichever cohort block holds each."""
    from bayesrad.errors import CohortError

    out = {}
    for column in columns:
        holder = next((b for b, f in cohort.blocks.items() if column in f.columns), None)
        if holder is None:
            raise CohortError(f"column {column!r} is in no block of the cohort (blocks: {list(cohort.blocks)}); "
                              "name the batch/covariate column as it appears in clinical.csv")
        out[column] = cohort.blocks[holder][column]
    return pd.DataFrame(out)


def harmonize_blocks(cohort, blocks, out, batch: str = "centre", covariates=(), using=None
                     ) -> dict[str, pd.DataFrame]:
    """ComBat (``features.harmonize.ComBatHarmonizer``) per block across the ``batch`` column.

    Without ``using``: fitted on this cohort's patients (the training patients) and saved as
    ``out/combat_<block>.joblib``. With ``using`` (an earlier output directory): its fitted
    models are applied, without refitting, to these (new) patients. Patients with a missing
    value in the block are left out of the harmonised block (the model marginalises them).
    Each harmonised block is registered in ``out/features.yaml`` under the block's own name, so
    that a later ``--features out`` replaces the raw block. Returns ``{block: DataFrame}``.
    """
    import joblib

    from bayesrad.data.derived import write_block
    from bayesrad.errors import FeatureError
    from bayesrad.features.harmonize import ComBatHarmonizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    side = _columns_from(cohort, [batch, *covariates])
    written = {}
    for name in blocks:
        if name not in cohort.blocks:
            raise FeatureError(f"harmonize: no block {name!r} in the cohort (blocks: {list(cohort.blocks)}); "
                               "pass the features directory that holds it with --features")
        frame = cohort.blocks[name].select_dtypes("number").dropna()
        data = frame.join(side, how="inner").dropna(subset=[batch, *covariates])
        if using is not None:
            path = Path(using) / f"combat_{name}.joblib"
            if not path.is_file():
                raise FeatureError(f"harmonize --using {using}: no fitted model {path.name} for block {name!r}; "
                                   "run harmonize on the training patients first")
            harmonizer = joblib.load(path)
        else:
            # a column constant over the training patients has no centre effect to remove (and
            # ComBat divides by its variance): it is passed through unchanged
            varying = [c for c in frame.columns if frame[c].nunique() > 1]
            harmonizer = ComBatHarmonizer(batch_col=batch, covariates=list(covariates), features=varying)
            harmonizer.fit(data)
            joblib.dump(harmonizer, out / f"combat_{name}.joblib")
        harmonised = harmonizer.transform(data)
        kept = [c for c in frame.columns if c not in harmonised.columns]
        harmonised = harmonised.join(data[kept])[list(frame.columns)]
        write_block(out, name, harmonised, step="harmonize" + ("/apply" if using is not None else "/fit"),
                    settings={"method": "ComBat (neuroHarmonize)", "batch": batch, "covariates": list(covariates),
                              "batches": [str(b) for b in harmonizer.batches_]},
                    model=str((Path(using) if using is not None else out) / f"combat_{name}.joblib"))
        written[name] = harmonised
    return written


def _model_id(model_dir) -> str:
    """SHA-256 (16 hex digits) over the files of a saved model folder: which model answered."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).rglob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def describe_predictions(csv_path, predictions: pd.DataFrame, model, model_dir, cohort, target: str,
                         do=None, ignore=(), counterfactual: bool = False) -> Path:
    """Write ``<csv>.json`` beside a predictions CSV: target, its kind and unit, the model id
    (hash of the model folder), what each column means, the interval levels, the time unit of
    survival columns, the interventions and ignored nodes. Returns the sidecar's path."""
    import datetime as dt
    import json
    import re

    import bayesrad

    kind = model.layout_.kind[target]
    block = model.preprocessor_.stats_[target].get("block")
    column_type = (getattr(cohort, "schema", {}) or {}).get(block, {}).get(target)
    unit = getattr(column_type, "unit", None)
    if kind == "binary":
        unit = "probability of 1"
    elif kind == "survival":
        unit = "days"
    quantiles = sorted({float("0." + m.group(1)) for c in predictions.columns
                        for m in [re.search(r"(?:^|_)q(\d+)$", str(c))] if m})
    levels = {f"{round(100 * (hi - lo))}%": [lo, hi] for lo in quantiles for hi in quantiles
              if lo < 0.5 < hi and abs(lo + hi - 1) < 1e-9}
    meaning = {"mean": "posterior mean" + (" of P(target = 1)" if kind == "binary" else ""),
               "sd": "posterior sd", "median": "median survival time (days)",
               "qNN": "posterior quantile NN/100 (e.g. q05, q95: a 90% credible interval)",
               "S@t": "survival probability past t days", "factual": "the observed target value"}
    meta = {"target": target, "kind": kind, "unit": unit, "time_unit": "days" if kind == "survival" else None,
            "model_dir": str(model_dir), "model_id": _model_id(model_dir),
            "columns": [str(c) for c in predictions.columns], "column_meaning": meaning,
            "quantiles": quantiles, "interval_levels": levels,
            "do": {k: v for k, v in (do or {}).items()}, "ignore": list(ignore), "counterfactual": counterfactual,
            "n_patients": int(len(predictions)), "bayesrad_version": getattr(bayesrad, "__version__", None),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    sidecar = Path(str(csv_path) + ".json")
    sidecar.write_text(json.dumps(meta, indent=2, default=str))
    return sidecar


def gene_modules_block(cohort, out, using=None, **settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Gene co-expression modules (``features.genes.GeneModules``) of a cohort's ``genes``
    block as a derived block (``bayesrad genes``).

    Without ``using``: modules found on this cohort's patients (the training patients), the
    fitted ``GeneModules`` saved as ``out/gene_modules.joblib`` and the genes' module
    membership as ``out/gene_module_membership.csv``. With ``using`` (an earlier output
    directory): its fitted modules score these (new) patients without refitting. Patients
    without expression counts are left out of the block (the model marginalises them). The
    eigengenes (patients x modules, ``genes_module<k>_eigengene``, unit variance in the training
    patients) are registered as block ``gene_modules`` in ``out/features.yaml``, declared to
    replace the raw ``genes`` block when read back with ``--features out``.
    ``settings``: ``GeneModules`` parameters. Returns ``(eigengenes, membership)``.
    """
    import joblib

    from bayesrad.data.derived import write_block
    from bayesrad.errors import FeatureError
    from bayesrad.features.genes import GeneModules

    if "genes" not in cohort.blocks:
        raise FeatureError(f"genes: the cohort has no 'genes' block (blocks: {sorted(cohort.blocks)}); it is read "
                           "from genes.h5ad or a genes table of cohort.yaml (patients x genes, raw counts)")
    counts = cohort.blocks["genes"].dropna(how="all")
    if counts.empty:
        raise FeatureError("genes: no patient has expression counts in the 'genes' block")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if using is not None:
        path = Path(using) / "gene_modules.joblib"
        if not path.is_file():
            raise FeatureError(f"genes --using {using}: no fitted {path.name} there; run `bayesrad genes` on "
                               "the training patients first")
        modules = joblib.load(path)
        missing = [g for g in modules.genes_ if g not in counts.columns]
        if missing:
            raise FeatureError(f"genes --using {using}: gene(s) {missing[:5]} of the fitted modules are not in "
                               f"this cohort's genes block ({len(missing)} in all); give the same gene panel")
    else:
        modules = GeneModules(**settings).fit(counts)
        joblib.dump(modules, out / "gene_modules.joblib")
    eigengenes = modules.transform(counts)
    membership = modules.membership_
    tmp = out / ".gene_module_membership.csv.tmp"
    membership.to_csv(tmp)
    tmp.replace(out / "gene_module_membership.csv")
    write_block(out, "gene_modules", eigengenes, step="genes" + ("/apply" if using is not None else "/fit"),
                settings=modules.get_params(), replaces=["genes"], n_modules=int(modules.n_modules_),
                n_genes_clustered=int(len(modules.genes_)),
                model=str((Path(using) if using is not None else out) / "gene_modules.joblib"))
    return eigengenes, membership
