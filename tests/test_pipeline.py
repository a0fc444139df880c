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
    # the features directory holds every derived block the model was fitted on, so the CLI and
    # the app (`make serve --features`) read the cohort the model knows
    from bayesrad.data.derived import load_cohort

    cohort, provenance = load_cohort(tmp_path / "cohort", [tmp_path / "features"])
    model = result["model"]
    needed = {model.graph_.spec(n).block for n in model.graph_.nodes}
    assert needed <= set(cohort.blocks), needed - set(cohort.blocks)
    assert {"gene_modules", "deep", "radiomics"} <= set(provenance) and "genes" not in cohort.blocks
    # the planned dose table stays the model's dose nodes; the recomputed DVH sits beside it
    assert "dose_mean_gy" in cohort.blocks["dosimetry"] and "dvh" in cohort.blocks
    pd.testing.assert_frame_equal(cohort.blocks["deep"].loc[result["cohort"].blocks["deep"].index],
                                  result["cohort"].blocks["deep"], check_exact=False, atol=1e-9,
                                  check_names=False, check_index_type=False)
