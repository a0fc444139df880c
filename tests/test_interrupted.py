"""Interrupted work: ``bayesrad extract`` killed with SIGKILL mid-run (its own process group
only) and run again reuses what it had cached, gives the uninterrupted tables, and leaves no
partial file."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesrad
from bayesrad.features.extract import extract_directory

REPO = Path(__file__).resolve().parents[1]


def _extract_command(cohort_dir: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "bayesrad", "extract", str(cohort_dir), "--out", str(out),
            "--steps", "radiomics,dosimetry", "--no-progress"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def test_killed_extract_resumes_from_its_cache(tmp_path):
    cohort_dir = tmp_path / "cohort"
    bayesrad.simulate("radiotherapy", n_patients=3, seed=4, missing=0.0, out=cohort_dir, image_size=16)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_extract_command(cohort_dir, out), env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    cached_at_kill = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            cached_at_kill = len(list((out / "cache").rglob("*.json"))) if (out / "cache").exists() else 0
            if cached_at_kill >= 1:
                os.killpg(proc.pid, signal.SIGKILL)  # the extraction's own group, nothing else
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the extraction finished before it could be killed"
    assert not (out / "radiomics.csv").exists()  # killed before the tables were written
    cached_at_kill = len(list((out / "cache").rglob("*.json")))

    rerun = subprocess.run(_extract_command(cohort_dir, out), env=_env(), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    counts = re.search(r"(\d+) computed, (\d+) from cache, (\d+) failures", rerun.stdout)
    assert counts, rerun.stdout
    assert int(counts.group(2)) == cached_at_kill >= 1 and int(counts.group(3)) == 0

    reference = extract_directory(cohort_dir, tmp_path / "whole", steps=["radiomics", "dosimetry"],
                                  progress=False)
    for name, block in reference.blocks.items():
        resumed = pd.read_csv(out / f"{name}.csv", index_col=0)
        whole = pd.read_csv(tmp_path / "whole" / f"{name}.csv", index_col=0)
        pd.testing.assert_frame_equal(resumed, whole)
        assert len(whole) == 3
    partial = [p for p in out.rglob("*") if p.is_file() and (p.suffix == ".tmp" or ".tmp" in p.name)]
    assert not partial


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default disposition. A shell starts
    background jobs with SIGINT ignored, and Python then never raises KeyboardInterrupt (the
    suite run as `make test &` saw the fit finish instead of stopping)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_then_signal(proc, ready, sig, timeout=240) -> None:
    """Poll ``ready()`` until it holds, then send ``sig`` (SIGKILL: to the process group the
    child leads, nothing else; SIGINT: to the child alone, as Ctrl-C would)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ready():
                if sig == signal.SIGKILL:
                    os.killpg(proc.pid, sig)
                else:
                    os.kill(proc.pid, sig)
                break
            time.sleep(0.02)
    finally:
        proc.wait(timeout=60)


def test_killed_pretrain_resumes_from_its_checkpoint(tmp_path):
    import torch
    from typer.testing import CliRunner

    from bayesrad.cli import app
    from bayesrad.imaging.encoders import load_encoder
    from bayesrad.imaging.pretrain import pretrain_encoder

    torch.set_num_threads(1)
    cohort_dir = tmp_path / "cohort"
    bayesrad.simulate("radiotherapy", n_patients=4, seed=1, missing=0.0, out=cohort_dir, image_size=16)
    out = tmp_path / "encoder"
    args = ["pretrain", str(cohort_dir), "--out", str(out), "--steps", "24", "--size", "16",
            "--checkpoint-every", "3"]
    proc = subprocess.Popen([sys.executable, "-m", "bayesrad", *args], env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_then_signal(proc, lambda: (out / "checkpoint.pt").exists(), signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, "pretraining finished before it could be killed"
    assert not (out / "encoder.safetensors").exists()
    at_kill = torch.load(out / "checkpoint.pt", weights_only=True)
    assert 3 <= at_kill["step"] < 24 and at_kill["step"] % 3 == 0

    rerun = CliRunner().invoke(app, args)
    assert rerun.exit_code == 0, rerun.output
    assert f"resumed from the checkpoint at step {at_kill['step']} of 24" in " ".join(rerun.output.split())
    encoder, record = load_encoder(out)
    history = record["loss_history"]
    assert len(history) == 24 and history[: at_kill["step"]] == at_kill["loss_history"]
    # every draw is a function of (seed, step): the resumed encoder is the uninterrupted one
    whole = pretrain_encoder(bayesrad.Cohort.from_directory(cohort_dir), tmp_path / "whole", size=16, steps=24,
                             checkpoint_every=3)
    assert whole.resumed_from == 0
    np_hist = pd.Series(history)
    assert (np_hist - pd.Series(whole.loss_history)).abs().max() < 1e-5
    for key, value in whole.encoder.state_dict().items():
        assert torch.allclose(encoder.state_dict()[key], value, atol=1e-5), key
    with torch.no_grad():
        assert torch.isfinite(encoder(torch.zeros(1, 2, 16, 16, 16))).all()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_fit_interrupted_by_ctrl_c_keeps_the_model_saved_before(tmp_path):
    import hashlib

    import torch

    from bayesrad.graph.graph import Graph, NodeSpec
    from bayesrad.model import HybridBN

    torch.set_num_threads(1)
    cohort_dir = tmp_path / "cohort"
    bayesrad.simulate("radiotherapy", n_patients=30, seed=2, out=cohort_dir, image_size=16)
    graph = Graph([NodeSpec("age_years", "continuous", block="clinical"),
                   NodeSpec("dose_mean_gy", "continuous", block="dosimetry"),
                   NodeSpec("local_control", "binary", block="outcome")])
    graph.add_edge("age_years", "local_control")
    graph.add_edge("dose_mean_gy", "local_control")
    graph.to_yaml(tmp_path / "graph.yaml")
    model_dir = tmp_path / "model"
    HybridBN(graph, num_steps=20, min_steps=0, num_threads=1).fit(bayesrad.Cohort.from_directory(cohort_dir)) \
        .save(model_dir)

    def digest():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(model_dir.iterdir())}

    before, entries = digest(), sorted(p.name for p in tmp_path.iterdir())
    log = tmp_path.parent / f"{tmp_path.name}_fit.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "bayesrad", "fit", str(cohort_dir), "--graph",
                                 str(tmp_path / "graph.yaml"), "--out", str(model_dir), "--num-steps", "1000000",
                                 "--device", "cpu"], env=_env(), start_new_session=True, stdout=sink,
                                stderr=subprocess.STDOUT, preexec_fn=_default_sigint)
        # Ctrl-C once the SVI loop reports its first step
        _wait_then_signal(proc, lambda: "SVI restart" in log.read_text(), signal.SIGINT)
    output = " ".join(log.read_text().split())
    assert proc.returncode == 130, output
    assert "Traceback" not in output
    assert f"interrupted: the fit stopped before it was saved; the model saved before at {model_dir} is " \
           "unchanged" in output
    assert digest() == before and sorted(p.name for p in tmp_path.iterdir()) == entries  # no partial folder
    assert HybridBN.load(model_dir).predict(_first_patients(cohort_dir), "local_control")["mean"].between(0, 1).all()


def _first_patients(cohort_dir):
    cohort = bayesrad.Cohort.from_directory(cohort_dir)
    return cohort.subset(list(cohort.patient_ids[:2]))


def test_save_interrupted_while_writing_keeps_the_previous_model(tmp_path, monkeypatch):
    """Ctrl-C inside ``save`` itself (while the new files are written, or between the two
    renames) leaves the previous model whole at its path and no temporary folder."""
    import torch

    from bayesrad.graph.graph import Graph, NodeSpec
    from bayesrad.model import HybridBN, persist

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    ids = pd.Index([f"P{i}" for i in range(20)], name="patient_id")
    x = rng.normal(size=20)
    blocks = {"clinical": pd.DataFrame({"x": x, "y": 2 * x + rng.normal(size=20)}, index=ids)}
    graph = Graph([NodeSpec("x", "continuous", block="clinical"), NodeSpec("y", "continuous", block="clinical")])
    graph.add_edge("x", "y")
    model = HybridBN(graph, num_steps=5, min_steps=0, num_threads=1).fit(blocks)
    path = tmp_path / "model"
    model.save(path)
    saved = {p.name: p.read_bytes() for p in path.iterdir()}

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    real_replace = os.replace
    calls = []

    def replace_then_interrupt(src, dst):  # the first rename (old model aside) happens, not the second
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    for where, patch in (("_write_model_files", interrupt), ("os.replace", replace_then_interrupt)):
        with monkeypatch.context() as m:
            if where == "os.replace":
                m.setattr(persist.os, "replace", patch)
            else:
                m.setattr(persist, where, patch)
            with pytest.raises(KeyboardInterrupt):
                model.save(path)
        assert {p.name: p.read_bytes() for p in path.iterdir()} == saved, where
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], where
    assert HybridBN.load(path).method_ == "svi"
