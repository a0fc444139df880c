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
    n_patients: int = typer.Option(120, "--n-patients", min=20),
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


if __name__ == "__main__":  # pragma: no cover
    app()
