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


def _fail(exc: BayesradError) -> None:
    console.print(f"[bold red]bayesrad error:[/] {exc}")
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
def summary(cohort_dir: Path = typer.Argument(..., help="A cohort directory.")) -> None:
    """Read a cohort directory, validate it and print its modalities and missingness."""
    from bayesrad.data import Cohort

    try:
        cohort = Cohort.from_directory(cohort_dir, verbose=True)
    except BayesradError as exc:
        _fail(exc)
    print_cohort_summary(cohort, console)


@app.command()
def extract(
    cohort_dir: Path = typer.Argument(..., help="A cohort directory (manifest.csv + tables)."),
    out: Path = typer.Option(..., "--out", help="Directory for <step>.csv, failures.csv, provenance.json and cache/."),
    steps: str = typer.Option("", "--steps", help="Comma-separated: radiomics,dosimetry,kinetics (default: all)."),
    n_jobs: int = typer.Option(1, "--n-jobs", min=1, help="Worker processes."),
    scheduler: str = typer.Option("", "--scheduler", help="Dask scheduler address (run on that cluster)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Extract radiomics, dosimetry and PET kinetics for every patient (cached, resumable)."""
    from bayesrad.features.extract import extract_directory

    try:
        result = extract_directory(
            cohort_dir, out, steps=[s for s in steps.split(",") if s] or None, n_jobs=n_jobs,
            scheduler=scheduler or None, progress=progress,
        )
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
) -> None:
    """Self-supervised pretraining (masked-volume inpainting) of a 3D encoder on a cohort's images."""
    from bayesrad.data import Cohort
    from bayesrad.imaging import pretrain_encoder

    try:
        cohort = Cohort.from_directory(cohort_dir)
        pretrain_encoder(cohort, out, modalities=tuple(m for m in modalities.split(",") if m), encoder=encoder,
                         steps=steps, size=size)
    except BayesradError as exc:
        _fail(exc)
    console.print(f"encoder written to {out}")


@app.command()
def embed(
    cohort_dir: Path = typer.Argument(..., help="A cohort directory with images."),
    encoder_dir: Path = typer.Option(..., "--encoder", help="Encoder folder written by `bayesrad pretrain`."),
    out: Path = typer.Option(..., "--out", help="Directory to write deep.csv into."),
    pca_dim: int = typer.Option(0, "--pca-dim", min=0, help="Reduce embeddings to this many components (0: keep all)."),
) -> None:
    """Embed every patient's images with a pretrained encoder: the `deep` block."""
    from bayesrad.data import Cohort
    from bayesrad.imaging import embed_cohort

    try:
        deep = embed_cohort(Cohort.from_directory(cohort_dir), encoder_dir, pca_dim=pca_dim or None)
    except BayesradError as exc:
        _fail(exc)
    out.mkdir(parents=True, exist_ok=True)
    deep.to_csv(out / "deep.csv")
    console.print(f"deep block: {deep.shape[0]} patients x {deep.shape[1]} -> {out / 'deep.csv'}")


@app.command()
def structure(
    cohort_dir: Path = typer.Argument(..., help="A cohort directory."),
    out: Path = typer.Option(..., "--out", help="Graph YAML to write."),
    knowledge: Path = typer.Option(None, "--knowledge", help="ExpertKnowledge YAML (default: tiers from the blocks)."),
    method: str = typer.Option("hill_climb", "--method", help="hill_climb | pc"),
    bootstrap: int = typer.Option(0, "--bootstrap", min=0, help="Bootstrap resamples for edge confidence."),
    n_jobs: int = typer.Option(1, "--n-jobs", min=1),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Learn the graph of a cohort under expert knowledge, with bootstrap edge confidence."""
    from bayesrad.data import Cohort
    from bayesrad.graph.knowledge import ExpertKnowledge
    from bayesrad.graph.node_table import build_node_table
    from bayesrad.graph.structure import learn_structure

    try:
        # PC tests one column per node: block summaries then keep their first component.
        table = build_node_table(Cohort.from_directory(cohort_dir), seed=seed,
                                 latent_dim=1 if method == "pc" else 2)
        expert = ExpertKnowledge.from_yaml(knowledge) if knowledge else ExpertKnowledge.from_blocks(table.blocks)
        graph = learn_structure(table, knowledge=expert, method=method, bootstrap=bootstrap, n_jobs=n_jobs, seed=seed)
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
    num_steps: int = typer.Option(3000, "--num-steps", min=1),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
) -> None:
    """Fit a HybridBN on a cohort and save it."""
    from bayesrad.data import Cohort
    from bayesrad.graph.graph import Graph
    from bayesrad.model import HybridBN

    try:
        model = HybridBN(Graph.from_yaml(graph_path), method=method, num_steps=num_steps, seed=seed, device=device,
                         progress=True).fit(Cohort.from_directory(cohort_dir))
        model.save(out)
    except BayesradError as exc:
        _fail(exc)
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
) -> None:
    """Posterior predictions with credible intervals for every patient of a cohort."""
    from bayesrad.data import Cohort
    from bayesrad.model import HybridBN

    try:
        interventions = _parse_do(do)
        model = HybridBN.load(model_dir)
        cohort = Cohort.from_directory(cohort_dir)
        if counterfactual:
            predictions = model.counterfactual(cohort, target, do=interventions, ignore=ignore)
        else:
            predictions = model.predict(cohort, target=target, do=interventions, ignore=ignore)
    except BayesradError as exc:
        _fail(exc)
    out.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_csv(out)
    console.print(f"{len(predictions)} predictions of {target!r} -> {out}")


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
def serve(
    model_dir: Path = typer.Argument(..., help="A fitted model directory (HybridBN.save)."),
    cohort: Path = typer.Option(None, "--cohort", help="A cohort directory: its patients to choose from."),
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
            from bayesrad.data.cohort import Cohort
            data = Cohort.from_directory(cohort)
        web = build_app(model, data, target)
    except BayesradError as exc:
        _fail(exc)
    console.print(f"bayesrad app on http://{host}:{port}/")
    web.run(host=host, port=port, debug=False)


if __name__ == "__main__":  # pragma: no cover
    app()
