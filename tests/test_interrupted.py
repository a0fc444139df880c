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

import pandas as pd

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
