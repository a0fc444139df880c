"""`bayesrad explain MODEL_DIR COHORT_DIR --target T --out DIR` on the linear-Gaussian fit."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from bayesrad.cli import app
from bayesrad.data import Cohort


def test_cli_explain_writes_csv_sentences_and_png(lg_fit, tmp_path):
    model, test = lg_fit
    model.save(tmp_path / "model")
    Cohort(blocks=test).to_directory(tmp_path / "cohort")
    runner = CliRunner()
    result = runner.invoke(app, ["explain", str(tmp_path / "model"), str(tmp_path / "cohort"),
                                 "--target", "y", "--patient", "L0001", "--out",
                                 str(tmp_path / "out"), "--n-samples", "50"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "contributions.csv")
    assert set(table["node"]) == {"x1", "x2", "x3", "x4"} and set(table["patient"]) == {"L0001"}
    assert table["value"].sum() == pytest.approx(table["prediction"][0] - table["base"][0])
    assert "L0001: y " in (tmp_path / "out" / "sentences.txt").read_text()
    assert (tmp_path / "out" / "waterfall_L0001.png").stat().st_size > 1000
    assert (tmp_path / "out" / "beeswarm.png").exists()
    bad = runner.invoke(app, ["explain", str(tmp_path / "model"), str(tmp_path / "cohort"),
                              "--target", "y", "--patient", "NOPE", "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 2 and "'NOPE'" in bad.output
