"""``make demo``'s pipeline end to end on a small cohort: every step runs from the simulated
files, the outputs are written, and the predictions answer the held-out patients (one of
them without imaging) with intervals that hold their means. What the demo's predictions are
worth is measured where the cohort is large enough: benchmarks/validity.py."""

from __future__ import annotations

import io

import pandas as pd
from rich.console import Console

from bayesrad.graph.graph import Graph
from bayesrad.pipeline import run_demo


def test_demo_pipeline_end_to_end(tmp_path):
    log = io.StringIO()
    result = run_demo(tmp_path, n_patients=60, seed=1, console=Console(file=log, width=120),
                      bootstrap=2, n_jobs=1, num_steps=300)
    for name in ("graph.yaml", "graph.png", "predictions.csv", "timings.csv", "model/meta.json"):
        assert (tmp_path / name).is_file(), name
    graph = Graph.from_yaml(tmp_path / "graph.yaml")
    assert graph.parents("local_control")
    # the deep block came from the package's own encoder and is a node of the fitted graph
    assert "deep" in result["cohort"].blocks and "deep" in result["model"].graph_.nodes
    predictions = pd.read_csv(tmp_path / "predictions.csv", index_col=0)
    assert len(predictions) == 6 and (predictions["imaging"] == "removed").sum() == 1
    assert predictions["mean"].between(0, 1).all()
    assert ((predictions["q05"] <= predictions["mean"]) & (predictions["mean"] <= predictions["q95"])).all()
    text = log.getvalue()
    assert "Spearman correlation" in text and "fitted in" in text
