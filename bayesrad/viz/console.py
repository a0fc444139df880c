"""Rich console tables for the command line and the demo."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_cohort_summary(cohort, console: Console | None = None) -> None:
    """Modalities and missingness of a cohort as a table on the console."""
    console = console or Console()
    summary = cohort.summary()
    table = Table(title=f"{cohort.name}: {cohort.n_patients} patients")
    for col in ("modality", "kind", "columns", "present", "missing", "% missing"):
        table.add_column(col, justify="left" if col in ("modality", "kind") else "right")
    for modality, row in summary.iterrows():
        n_cols = "" if row["n_columns"] != row["n_columns"] else str(int(row["n_columns"]))
        table.add_row(
            modality, row["kind"], n_cols, str(row["n_present"]), str(row["n_missing"]), f"{100 * row['fraction_missing']:.0f}"
        )
    console.print(table)
