"""benchmarks/settings.py: the recording wrapper the notebook 05 figures rely on.

The notebook itself (run by nbmake) checks that its figures equal
benchmarks/results/settings.json; here, the cheap part: the harness names a model by its
class, so each recording wrapper must keep its own class through ``sklearn.base.clone`` and
hand back exactly the inner model's predictions."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone

from bayesrad.evaluate.baselines import make_model

ROOT = Path(__file__).resolve().parents[2]


def _settings():
    spec = importlib.util.spec_from_file_location("bench_settings", ROOT / "benchmarks" / "settings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recording_keeps_its_name_and_the_inner_predictions():
    settings = _settings()
    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(60)]
    x = pd.DataFrame(rng.normal(size=(60, 3)), index=ids, columns=["a", "b", "c"])
    y = pd.DataFrame({"y": (x["a"] + rng.normal(size=60) > 0).astype(int)}, index=ids)
    blocks = {"clinical": x, "outcome": y}
    wrapped = clone(settings._recording("late_fusion", make_model("l2", 0)))
    assert type(wrapped).__name__ == "late_fusion"
    settings._RECORD.clear()
    got = wrapped.fit(blocks, "y").predict({"clinical": x})
    want = make_model("l2", 0).fit(blocks, "y").predict({"clinical": x})
    np.testing.assert_allclose(got["mean"], want["mean"])
    assert len(settings._RECORD["late_fusion"]) == 1
    pd.testing.assert_frame_equal(settings._RECORD["late_fusion"][0], got)
