"""The end-to-end demo pipeline (``bayesrad demo`` / ``make demo``).

Simulate a radiotherapy cohort with images, write it as files, read it back from disk and
summarise its modalities and missingness; later stages are added as they land.
"""

from __future__ import annotations

from pathlib import Path


def run_demo(out: Path, n_patients: int = 120, seed: int = 0, console=None) -> dict:
    """Run the demo pipeline into ``out``; returns a dict of what it produced."""
    from rich.console import Console

    from bayesrad.viz.console import print_cohort_summary
    from bayesrad.data import Cohort
    from bayesrad.data.simulate import simulate

    console = console or Console()
    out = Path(out)
    cohort_dir = out / "cohort"
    console.rule("1. simulate a radiotherapy cohort (images, dose, genes, outcomes)")
    sim = simulate("radiotherapy", n_patients=n_patients, seed=seed, out=cohort_dir)
    console.print(f"wrote {sim.cohort.n_patients} patients to {cohort_dir}")
    console.rule("2. read the cohort back from its files")
    cohort = Cohort.from_directory(cohort_dir)
    print_cohort_summary(cohort, console)
    return {"cohort": cohort, "simulation": sim}
