"""The command line on a cohort folder: simulate -> summary -> extract -> structure -> fit -> predict."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from bayesrad.cli import app

runner = CliRunner()


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_pipeline_on_a_cohort_folder(tmp_path):
    cohort_dir = tmp_path / "cohort"
    out = _run("simulate", "radiotherapy", "--out", cohort_dir, "--n-patients", 40, "--seed", 3, "--image-size", 32)
    assert "40 patients" in out and (cohort_dir / "manifest.csv").exists()
    assert "clinical" in _run("summary", cohort_dir)

    _run("extract", cohort_dir, "--out", tmp_path / "features", "--steps", "dosimetry", "--no-progress")
    dvh = pd.read_csv(tmp_path / "features" / "dosimetry.csv", index_col="patient_id")
    assert len(dvh) == 40 and dvh.notna().all().all()

    graph = tmp_path / "graph.yaml"
    _run("structure", cohort_dir, "--out", graph)
    assert "local_control" in graph.read_text()

    _run("fit", cohort_dir, "--graph", graph, "--out", tmp_path / "model", "--num-steps", 300)
    _run("predict", tmp_path / "model", cohort_dir, "--target", "local_control", "--out", tmp_path / "pred.csv")
    predictions = pd.read_csv(tmp_path / "pred.csv", index_col="patient_id")
    assert len(predictions) == 40
    assert predictions["mean"].between(0, 1).all()
    assert (predictions["q05"] <= predictions["mean"]).all() and (predictions["mean"] <= predictions["q95"]).all()
    # what if each patient had received 10 Gy more, without using their survival as evidence
    _run("predict", tmp_path / "model", cohort_dir, "--target", "local_control", "--out",
         tmp_path / "what_if.csv", "--do", "dose_mean_gy=+10", "--ignore", "overall_survival")
    assert pd.read_csv(tmp_path / "what_if.csv", index_col="patient_id")["mean"].between(0, 1).all()
    result = runner.invoke(app, ["predict", str(tmp_path / "model"), str(cohort_dir), "--target",
                                 "local_control", "--out", str(tmp_path / "x.csv"), "--do", "dose"])
    assert result.exit_code == 2 and "NODE=VALUE" in result.output


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path):
    result = runner.invoke(app, ["summary", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "bayesrad error" in result.output and "nowhere" in result.output
    result = runner.invoke(app, ["simulate", "mars_colony", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "mars_colony" in result.output
