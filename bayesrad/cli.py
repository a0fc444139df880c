"""The ``bayesrad`` command line: runs the pipeline on a cohort folder, results as files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from bayesrad.errors import BayesradError
from bayesrad.viz.console import print_cohort_summary

app = typer.Typer(
    help="Bayesian networks over multimodal oncology data (images, radiomics, dose, genes, outcomes).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def _output(path: Path, folder: bool, option: str = "--out") -> None:
    """Refuse, before any work, an output path of the wrong kind (a folder where a file is
    written, or a file where a folder is): nothing already there is overwritten or lost."""
    from bayesrad.errors import OutputPathError

    if folder and path.exists() and not path.is_dir():
        _fail(OutputPathError(f"{option} {str(path)!r} is an existing file; give a folder path "
                              "(it is created when absent)"))
    if not folder and path.is_dir():
        _fail(OutputPathError(f"{option} {str(path)!r} is a folder; give a file path such as "
                              f"{str(path / 'predictions.csv')!r}"))


def _fail(exc: BayesradError) -> None:
    console.print(f"[bold red]bayesrad error:[/] {_one_line(exc)}")
    raise typer.Exit(code=2)


@app.command()
def simulate(
    scenario: str = typer.Argument(..., help="radiotherapy | glioma_pet | wholebody_petct | liver_multiphase | incomplete_multimodal"),
    out: Path = typer.Option(..., "--out", help="Directory to write the cohort, its images and truth/ into."),
    n_patients: int = typer.Option(200, "--n-patients", min=1),
    seed: int = typer.Option(0, "--seed"),
    image_size: int = typer.Option(48, "--image-size", min=16, help="Edge of the simulated volumes in voxels."),
) -> None:
    """Simulate a cohort with known ground truth and write it as real files."""
    import bayesrad

    _output(out, folder=True)
    try:
        sim = bayesrad.simulate(scenario, n_patients=n_patients, seed=seed, out=out, image_size=image_size)
    except BayesradError as exc:
        _fail(exc)
    console.print(f"wrote {sim.cohort.n_patients} patients of scenario {scenario!r} to {out}")
    print_cohort_summary(sim.cohort, console)


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Directory for the demo's files."),
    n_patients: int = typer.Option(240, "--n-patients", min=20),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Run the pipeline on the embedded default: a simulated radiotherapy cohort."""
    from bayesrad.pipeline import run_demo

    try:
        run_demo(out=out, n_patients=n_patients, seed=seed, console=console)
    except BayesradError as exc:
        _fail(exc)


@app.command()
def summary(
    cohort_dir: Path = typer.Argument(..., help="A cohort directory."),
    check_images: bool = typer.Option(False, "--check-images", help="Open every image and mask in full "
                                      "(truncated files, NaN voxels, empty masks); exit 2 on a problem."),
) -> None:
    """Read a cohort directory, validate it and print its modalities and missingness."""
    from bayesrad.data import Cohort

    try:
        cohort = Cohort.from_directory(cohort_dir, verbose=True)
    except BayesradError as exc:
        _fail(exc)
    print_cohort_summary(cohort, console)
    if len(cohort.images) and not check_images:
        console.print("images: files and headers checked, voxels not read (--check-images opens them all)")
    elif len(cohort.images):
        from bayesrad.data.readers import check_image_files

        problems = check_image_files(cohort.images)
        for row in problems.itertuples(index=False):
            console.print(f"[bold red]image problem:[/] {row.error}: {_one_line(Exception(row.reason))}")
        console.print(f"images: {len(cohort.images)} opened in full, {len(problems)} with a problem")
        if len(problems):
            raise typer.Exit(code=2)


@app.command()
def extract(
    cohort_dir: Path = typer.Argument(..., help="A cohort directory (manifest.csv + tables)."),
    out: Path = typer.Option(..., "--out", help="Directory for <step>.csv, failures.csv, provenance.json and cache/."),
    steps: str = typer.Option("", "--steps", help="Comma-separated: radiomics,dosimetry,kinetics (default: all)."),
    n_jobs: int = typer.Option(1, "--n-jobs", min=1, help="Worker processes."),
    scheduler: str = typer.Option("", "--scheduler", help="Dask scheduler address (run on that cluster)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    habitats: bool = typer.Option(True, "--habitats/--no-habitats", help="With dynamic PET: kinetic "
                                  "habitats fitted on the cohort, maps in OUT/habitats/."),
) -> None:
    """Extract radiomics, dosimetry and PET kinetics for every patient (cached, resumable)."""
    from bayesrad.features.extract import extract_directory

    try:
        result = extract_directory(
            cohort_dir, out, steps=[s for s in steps.split(",") if s] or None, n_jobs=n_jobs,
            scheduler=scheduler or None, progress=progress,
        )
        if habitats and "kinetics" in result.blocks:
            from bayesrad.pipeline import extract_habitats

            result.blocks["kinetics"] = extract_habitats(cohort_dir, out)
            console.print(f"kinetic habitats: maps in {out / 'habitats'}, model {out / 'habitats' / 'habitats.joblib'}")
    except BayesradError as exc:
        _fail(exc)
    for name, block in result.blocks.items():
        console.print(f"{name}: {block.shape[0]} patients x {block.shape[1]} features -> {out / (name + '.csv')}")
    console.print(f"{result.n_computed} computed, {result.n_cached} from cache, {len(result.failures)} failures, {result.seconds:.1f} s")


@app.command()
def pretrain(
    cohort_dir: Path = typer.Argument(..., help="A cohort directory with images."),
    out: Path = typer.Option(..., "--out", help="Encoder folder to write (e.g. models/NAME)."),
    modalities: str = typer.Option("CT,PET", "--modalities", help="Image modalities stacked as channels."),
    encoder: str = typer.Option("resnet", "--encoder", help="Backbone (see bayesrad.imaging.ENCODERS)."),
    steps: int = typer.Option(200, "--steps", min=1),
    size: int = typer.Option(32, "--size", min=8, help="Cube edge in voxels after resampling."),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", min=1, help="Steps between checkpoints "
                                         "(OUT/checkpoint.pt); an interrupted run given again resumes there."),
) -> None:
    """Self-supervised pretraining (masked-volume inpainting) of a 3D encoder on a cohort's images."""
    from bayesrad.data import Cohort
    from bayesrad.imaging import pretrain_encoder

    try:
        cohort = Cohort.from_directory(cohort_dir)
        result = pretrain_encoder(cohort, out, modalities=tuple(m for m in modalities.split(",") if m),
                                  encoder=encoder, steps=steps, size=size, checkpoint_every=checkpoint_every)
    except BayesradError as exc:
        _fail(exc)
    if result.resumed_from:
        console.print(f"resumed from the checkpoint at step {result.resumed_from} of {steps}")
    console.print(f"encoder written to {out}")


@app.command()
def embed(
    cohort_dir: Path = typer.Argument(..., help="A cohort directory with images."),
    encoder_dir: Path = typer.Option(..., "--encoder", help="Encoder folder written by `bayesrad pretrain`, "
                                     "or the name of a packaged one (encoder_small)."),
    out: Path = typer.Option(..., "--out", help="Directory to write deep.csv into."),
    pca_dim: int = typer.Option(0, "--pca-dim", min=0, help="Reduce embeddings to this many components (0: keep all)."),
) -> None:
    """Embed every patient's images with a pretrained encoder: the `deep` block."""
    from bayesrad.data import Cohort
    from bayesrad.imaging import embed_cohort

    try:
        if not encoder_dir.exists():
            from bayesrad.imaging import packaged_encoder

            encoder_dir = packaged_encoder(str(encoder_dir))
        deep = embed_cohort(Cohort.from_directory(cohort_dir), encoder_dir, pca_dim=pca_dim or None)
    except BayesradError as exc:
        _fail(exc)
    out.mkdir(parents=True, exist_ok=True)
    from bayesrad.data.derived import write_block

    write_block(out, "deep", deep, step="embed", settings={"encoder": str(encoder_dir), "pca_dim": pca_dim})
    console.print(f"deep block: {deep.shape[0]} patients x {deep.shape[1]} -> {out / 'deep.csv'}")


@app.command()
def structure(
    cohort_dir: Path = typer.Argument(..., help="A cohort directory."),
    out: Path = typer.Option(..., "--out", help="Graph YAML to write."),
    knowledge: Path = typer.Option(None, "--knowledge", help="ExpertKnowledge YAML (default: tiers from the blocks)."),
    method: str = typer.Option("hill_climb", "--method", help="hill_climb | pc"),
    features: list[Path] = typer.Option([], "--features", help="A features directory (from extract, "
                                        "embed, harmonize) whose blocks join the cohort's; repeatable."),
    bootstrap: int = typer.Option(0, "--bootstrap", min=0, help="Bootstrap resamples for edge confidence."),
    n_jobs: int = typer.Option(1, "--n-jobs", min=1),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Learn the graph of a cohort under expert knowledge, with bootstrap edge confidence."""
    from bayesrad.graph.knowledge import ExpertKnowledge
    from bayesrad.graph.node_table import build_node_table
    from bayesrad.graph.structure import learn_structure

    try:
        # PC tests one column per node: block summaries then keep their first component.
        table = build_node_table(_load_cohort(cohort_dir, features), seed=seed,
                                 latent_dim=1 if method == "pc" else 2)
        expert = ExpertKnowledge.from_yaml(knowledge) if knowledge else ExpertKnowledge.from_blocks(table.blocks)
        graph = learn_structure(table, knowledge=expert, method=method, bootstrap=bootstrap, n_jobs=n_jobs, seed=seed,
                                progress=bootstrap > 0)
    except BayesradError as exc:
        _fail(exc)
    graph.to_yaml(out)
    console.print(f"{len(graph.edges)} edges over {len(graph.nodes)} nodes -> {out}")


@app.command()
def fit(
    cohort_dir: Path = typer.Argument(..., help="A cohort directory."),
    graph_path: Path = typer.Option(..., "--graph", help="Graph YAML (from `bayesrad structure` or models/)."),
    out: Path = typer.Option(..., "--out", help="Model folder to write."),
    method: str = typer.Option("svi", "--method", help="svi (Pyro) | nuts (NumPyro reference)"),
    features: list[Path] = typer.Option([], "--features", help="A features directory (from extract, "
                                        "embed, harmonize) whose blocks join the cohort's; repeatable."),
    num_steps: int = typer.Option(3000, "--num-steps", min=1),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
) -> None:
    """Fit a HybridBN on a cohort and save it."""
    from bayesrad.graph.graph import Graph
    from bayesrad.model import HybridBN

    try:
        model = HybridBN(Graph.from_yaml(graph_path), method=method, num_steps=num_steps, seed=seed, device=device,
                         progress=True).fit(_load_cohort(cohort_dir, features))
        model.save(out)  # atomic: an interruption leaves the model saved before at OUT whole
    except BayesradError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        kept = (f"the model saved before at {out} is unchanged" if out.exists()
                else f"nothing was written to {out}")
        console.print(f"[bold red]interrupted:[/] the fit stopped before it was saved; {kept}")
        raise typer.Exit(code=130) from None
    console.print(f"fitted in {model.fit_time_s_:.1f} s on {model.device_}; saved to {out}")


@app.command()
def predict(
    model_dir: Path = typer.Argument(..., help="A model folder written by `bayesrad fit`."),
    cohort_dir: Path = typer.Argument(..., help="Patients to predict (any subset of modalities)."),
    target: str = typer.Option(..., "--target", help="The node to predict."),
    out: Path = typer.Option(..., "--out", help="CSV to write (one row per patient)."),
    do: list[str] = typer.Option([], "--do", help="Intervention NODE=VALUE (original units; "
                                 "NODE=+10 shifts each patient's own value); repeatable."),
    ignore: list[str] = typer.Option([], "--ignore", help="A node whose values are no "
                                     "evidence (e.g. a later outcome); repeatable."),
    counterfactual: bool = typer.Option(False, "--counterfactual", help="What the target "
                                        "would have been under --do, given everything "
                                        "observed (the target's own value included)."),
    features: list[Path] = typer.Option([], "--features", help="A features directory (from extract, "
                                        "embed, harmonize) whose blocks join the cohort's; repeatable."),
    strict: bool = typer.Option(False, "--strict", help="Refuse (rather than warn about) a --do value "
                                "outside the training range by more than the margin."),
) -> None:
    """Posterior predictions with credible intervals for every patient of a cohort."""
    import warnings

    from bayesrad.model import HybridBN
    from bayesrad.model.guardrails import ExtrapolationWarning

    _output(out, folder=False)
    try:
        interventions = _parse_do(do)
        model = HybridBN.load(model_dir).set_params(progress=True)  # a bar (or log lines) per batch
        cohort = _load_cohort(cohort_dir, features)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ExtrapolationWarning)
            if counterfactual:
                predictions = model.counterfactual(cohort, target, do=interventions, ignore=ignore, strict=strict)
            else:
                predictions = model.predict(cohort, target=target, do=interventions, ignore=ignore, strict=strict)
    except BayesradError as exc:
        _fail(exc)
    for warning in caught:  # extrapolation and particle warnings belong on the console, not in a traceback log
        console.print(f"[yellow]warning:[/] {warning.message}")
    from bayesrad.pipeline import describe_predictions

    out.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_csv(out)
    sidecar = describe_predictions(out, predictions, model, model_dir, cohort, target, do=interventions,
                                   ignore=ignore, counterfactual=counterfactual)
    console.print(f"{len(predictions)} predictions of {target!r} -> {out} (described in {sidecar})")


def _parse_do(items: list[str]) -> dict:
    """``["dose_mean_gy=70", "age_years=+5"]`` -> ``{"dose_mean_gy": 70.0, "age_years": "+5"}``
    (numbers stay numbers, a leading sign means a shift, anything else is a level)."""
    from bayesrad.errors import ModelError

    out = {}
    for item in items:
        node, sep, value = item.partition("=")
        if not sep or not node or not value:
            raise ModelError(f"--do {item!r}: write NODE=VALUE, e.g. dose_mean_gy=70 or "
                             "dose_mean_gy=+10")
        value = value.strip()
        if value[:1] in "+-":
            out[node] = value
            continue
        try:
            out[node] = float(value)
        except ValueError:
            out[node] = value
    return out


@app.command()
def evaluate(
    cohort_dir: Path = typer.Argument(..., help="A cohort directory holding the features and the target."),
    target: str = typer.Option(..., "--target", help="Outcome column (binary, categorical or survival time)."),
    out: Path = typer.Option(..., "--out", help="Directory for metrics.json and report.html."),
    models: str = typer.Option("bayesrad,l1,l2,rf", "--models",
                               help="Comma-separated: bayesrad,rf,l1,l2,practice,cox,rsf,early,late,late_stacking."),
    cv: str = typer.Option("5x3", "--cv", help="Stratified folds x repeats."),
    centre: str = typer.Option("", "--centre", help="Column of centres: leave-one-centre-out instead of CV."),
    split_column: str = typer.Option("", "--split-column", help="Column of 'train'/'test': the given split."),
    missing_block: str = typer.Option("", "--missing-block", help="Also draw AUC/ECE curves as this block goes missing."),
    seed: int = typer.Option(0, "--seed"),
    n_boot: int = typer.Option(1000, "--n-boot", min=50),
    features: list[Path] = typer.Option([], "--features", help="Features directories holding derived blocks; repeatable."),
) -> None:
    """Compare bayesrad with the baselines on the same folds; write metrics.json and report.html."""
    import json

    from bayesrad.evaluate.harness import compare, missing_modality_curve, to_json
    from bayesrad.evaluate.report import write_report

    try:
        cohort = _load_cohort(cohort_dir, features)
        names = [m.strip() for m in models.split(",") if m.strip()]
        result = compare(cohort, target, models=names, cv=cv, centre=centre or None,
                         split_column=split_column or None, seed=seed, n_boot=n_boot, progress=True)
        curves = (missing_modality_curve(cohort, target, missing_block, models=names, seed=seed,
                                         n_boot=min(n_boot, 500)) if missing_block else None)
    except BayesradError as exc:
        _fail(exc)
    out.mkdir(parents=True, exist_ok=True)
    payload = to_json(result)
    if curves is not None:
        payload["missing_modality_curve"] = curves.to_dict(orient="records")
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(payload, indent=1, default=float))
    tmp.replace(out / "metrics.json")
    write_report(result, out / "report.html", curves=curves, title=f"bayesrad evaluation: {target}")
    shown = result.pivot_table(index="model", columns="metric", values="estimate", aggfunc="first")
    console.print(shown.round(3).to_string())
    console.print(f"wrote {out / 'metrics.json'} and {out / 'report.html'}")


def _load_cohort(cohort_dir: Path, features: list[Path]):
    """The cohort folder plus the registered blocks of each ``--features`` directory."""
    from bayesrad.data.derived import load_cohort

    cohort, provenance = load_cohort(cohort_dir, features)
    for name, meta in provenance.items():
        console.print(f"block {name!r} from {meta['directory']} ({meta['step']}, settings {meta['settings_hash']}, "
                      f"{meta['created']})" + (f": {meta['note']}" if meta.get("note") else ""))
    return cohort


@app.command()
def harmonize(
    cohort_dir: Path = typer.Argument(..., help="A cohort directory (its patients: training, or new ones)."),
    features: list[Path] = typer.Option([], "--features", help="Features directories holding the blocks; repeatable."),
    blocks: str = typer.Option("radiomics", "--blocks", help="Comma-separated blocks to harmonise."),
    batch: str = typer.Option("centre", "--batch", help="Clinical column naming the batch (centre, scanner)."),
    covariates: str = typer.Option("", "--covariates", help="Comma-separated clinical columns whose effect is kept."),
    using: Path = typer.Option(None, "--using", help="A harmonize output whose fitted ComBat models are "
                               "applied (new patients) instead of fitting on these patients."),
    out: Path = typer.Option(..., "--out", help="Features directory for the harmonised blocks and combat_<block>.joblib."),
) -> None:
    """ComBat harmonisation across centres: fitted on training patients, applied to new ones."""
    from bayesrad.pipeline import harmonize_blocks

    try:
        cohort = _load_cohort(cohort_dir, features)
        written = harmonize_blocks(cohort, [b for b in blocks.split(",") if b], out, batch=batch,
                                   covariates=[c for c in covariates.split(",") if c], using=using)
    except BayesradError as exc:
        _fail(exc)
    for name, frame in written.items():
        console.print(f"{name}: {frame.shape[0]} patients x {frame.shape[1]} harmonised over {batch!r} -> "
                      f"{out / (name + '.csv')} ({'applied from ' + str(using) if using else 'fitted here'})")


@app.command()
def explain(
    model_dir: Path = typer.Argument(..., help="A model folder written by `bayesrad fit`."),
    cohort_dir: Path = typer.Argument(..., help="Patients to explain."),
    target: str = typer.Option(..., "--target", help="An observed node: binary, continuous, "
                               "count, categorical/ordinal (one explanation per class) or "
                               "survival (S at --horizon and/or RMST)."),
    out: Path = typer.Option(..., "--out", help="Directory for contributions.csv, "
                             "sentences.txt and PNG figures."),
    patient: list[str] = typer.Option([], "--patient", help="A patient id (repeatable; "
                                      "default: every patient)."),
    ignore: list[str] = typer.Option([], "--ignore", help="A node that is no evidence "
                                     "(e.g. a later outcome); repeatable."),
    method: str = typer.Option("auto", "--method", help="exact | sampled | auto (exact up "
                               "to 12 evidence nodes)."),
    n_samples: int = typer.Option(100, "--n-samples", min=10),
    horizon: float = typer.Option(None, "--horizon", help="Survival target: the time (the "
                                  "data's units, days) of S(t) / RMST; default the training "
                                  "median follow-up."),
    survival_summary: str = typer.Option("survival", "--survival-summary",
                                         help="survival | rmst | both."),
    encoder: str = typer.Option(None, "--encoder", help="The encoder of the deep block (folder "
                                "or packaged name): image nodes then link to saliency maps "
                                "(saliency_<node>_<patient>.png)."),
) -> None:
    """Shapley contributions of each patient's evidence (90% intervals), one sentence each,
    a waterfall per patient and a cohort beeswarm (a categorical target: the patient's most
    probable class; every class is in contributions.csv)."""
    from bayesrad.data import Cohort
    from bayesrad.explain import sentence, shapley
    from bayesrad.explain.images import link_saliency
    from bayesrad.explain.plots import beeswarm, waterfall
    from bayesrad.explain.shapley import MAX_EXACT, _players
    from bayesrad.model import HybridBN
    from bayesrad.model.design import blocks_of

    try:
        model = HybridBN.load(model_dir)
        cohort = Cohort.from_directory(cohort_dir)
        design = model.preprocessor_.transform(blocks_of(cohort))
        names, _ = _players(model, design, target, None)
        names = [n for n in names if n not in set(ignore)]
        chosen = method if method != "auto" else ("exact" if len(names) <= MAX_EXACT
                                                  else "sampled")
        table = shapley(model, design, target, nodes=names, method=chosen,
                        n_samples=n_samples, patients=list(patient) or None, horizon=horizon,
                        survival_summary=survival_summary)
        out.mkdir(parents=True, exist_ok=True)
        if encoder:
            table = link_saliency(table, model, cohort, encoder, out)
    except BayesradError as exc:
        _fail(exc)
    table.to_csv(out / "contributions.csv", index=False)
    lines = [f"{p}: {sentence(table, p, target)}" for p in table["patient"].unique()]
    (out / "sentences.txt").write_text("\n".join(lines) + "\n")
    import matplotlib.pyplot as plt

    for p in table["patient"].unique()[:20]:           # at most 20 waterfalls
        fig = waterfall(table, p)
        fig.savefig(out / f"waterfall_{p}.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    fig = beeswarm(table)
    fig.savefig(out / "beeswarm.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    for line in lines[:5]:
        console.print(line)
    maps = int((table["saliency"] != "").sum()) if "saliency" in table else 0
    console.print(f"{len(lines)} patients explained ({chosen})"
                  + (f", {maps} saliency maps" if encoder else "") + f" -> {out}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bayesrad`` and ``python -m bayesrad``: errors as one line, not tracebacks.

    A ``BayesradError`` prints one line (its message names the culprit and the fix) and exits
    2; any other exception prints one line with a pointer to ``--debug`` and exits 1.
    ``--debug`` anywhere on the command line shows the full traceback instead.
    """
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        # standalone_mode=False: click returns instead of calling sys.exit, so errors reach us.
        result = app(args=args, prog_name="bayesrad", standalone_mode=False)
    except typer.Exit as exc:  # raised by _fail and by --help
        return int(exc.exit_code or 0)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]")
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns any error into a message
        import click

        if debug:
            raise
        if isinstance(exc, click.exceptions.ClickException):  # bad option or argument
            exc.show()
            return int(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            console.print("[bold red]aborted[/]")
            return 1
        if isinstance(exc, BayesradError):
            console.print(f"[bold red]bayesrad error:[/] {_one_line(exc)}")
            return 2
        console.print(f"[bold red]unexpected error:[/] {type(exc).__name__}: {_one_line(exc)} "
                      "(run again with --debug for the traceback, and report it)")
        return 1
    return int(result or 0) if isinstance(result, int) else 0


def _one_line(exc: BaseException) -> str:
    from rich.markup import escape

    return escape(" ".join(str(exc).split()))


def serve(
    model_dir: Path = typer.Argument(..., help="A fitted model directory (HybridBN.save)."),
    cohort: Path = typer.Option(None, "--cohort", help="A cohort directory: its patients to choose from."),
    features: list[Path] = typer.Option([], "--features", help="Features directories holding the "
                                        "cohort's derived blocks (from extract, embed, genes); repeatable."),
    port: int = typer.Option(8050, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Interface; anything but loopback exposes patient data."),
    target: str = typer.Option(None, help="Node to predict (default: the last binary node)."),
) -> None:
    """The clinician's browser app: network, patient evidence, what-if, report export."""
    import ipaddress

    from bayesrad.app import build_app
    from bayesrad.model import HybridBN

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        console.print(f"[bold red]warning[/]: serving on {host!r}, not loopback: anyone who can "
                      "reach this machine sees the patients' data; use --host 127.0.0.1 unless "
                      "the network is trusted.")
    try:
        model = HybridBN.load(model_dir)
        data = None
        if cohort is not None:
            data = _load_cohort(cohort, features)
        elif features:
            from bayesrad.errors import CohortError
            raise CohortError("--features needs --cohort: the features belong to a cohort's patients")
        web = build_app(model, data, target, model_dir=model_dir)
    except BayesradError as exc:
        _fail(exc)
    console.print(f"bayesrad app on http://{host}:{port}/")
    web.run(host=host, port=port, debug=False)


@app.command()
def genes(
    cohort_dir: Path = typer.Argument(..., help="A cohort directory with expression counts (genes.h5ad)."),
    out: Path = typer.Option(..., "--out", help="Features directory for gene_modules.csv, the membership "
                             "and gene_modules.joblib."),
    using: Path = typer.Option(None, "--using", help="A genes output whose fitted modules score these (new) "
                               "patients instead of finding modules on them."),
    n_top_genes: int = typer.Option(2000, "--n-top-genes", min=2, help="Highly variable genes clustered."),
    n_modules: int = typer.Option(0, "--n-modules", min=0, help="Modules to cut the tree into (0: cut by "
                                  "--min-correlation)."),
    min_module_size: int = typer.Option(5, "--min-module-size", min=2),
    min_correlation: float = typer.Option(0.3, "--min-correlation", help="Least mean |r| within a module."),
    method: str = typer.Option("hierarchical", "--method", help="hierarchical | leiden"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Gene co-expression modules and their eigengenes: the `gene_modules` block (replaces `genes`)."""
    from bayesrad.pipeline import gene_modules_block

    _output(out, folder=True)
    try:
        cohort = _load_cohort(cohort_dir, [])
        eigengenes, membership = gene_modules_block(
            cohort, out, using=using, n_top_genes=n_top_genes, n_modules=n_modules or None,
            min_module_size=min_module_size, min_mean_correlation=min_correlation, method=method,
            random_state=seed)
    except BayesradError as exc:
        _fail(exc)
    assigned = int((membership["module"] > 0).sum())
    console.print(f"gene_modules: {eigengenes.shape[0]} patients x {eigengenes.shape[1]} eigengenes from "
                  f"{assigned} genes in modules -> {out / 'gene_modules.csv'} "
                  f"({'applied from ' + str(using) if using else 'fitted here'})")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
