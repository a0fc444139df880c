"""Property: every reader either loads an input or raises a BayesradError, whatever the bytes
(mutations of a valid file, or arbitrary bytes). A short hypothesis run; benchmarks/fuzz.py
runs 10,000 examples per reader."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fuzz_targets as ft

EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.integers(0, 3)),
                 min_size=1, max_size=6)
FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

SEEDS = {
    "clinical": (ft.read_clinical, lambda: ft.CLINICAL),
    "manifest": (ft.read_manifest, lambda: ft.MANIFEST),
    "cohort_yaml": (ft.read_cohort_yaml, ft.cohort_yaml_seed),
    "graph_yaml": (ft.read_graph_yaml, lambda: ft.GRAPH_YAML),
    "radiomics_yaml": (ft.read_radiomics_yaml, lambda: ft.RADIOMICS_YAML),
}


@pytest.mark.parametrize("reader", sorted(SEEDS))
def test_reader_loads_or_refuses(reader):
    read, seed = SEEDS[reader]
    root = Path(tempfile.mkdtemp(prefix=f"fuzz-{reader}-"))

    @FAST
    @given(edits=EDITS, raw=st.one_of(st.none(), st.binary(max_size=200)))
    def check(edits, raw):
        data = raw if raw is not None else ft.mutate(seed(), edits)
        result = ft.outcome(lambda: read(data, root / "case"))
        assert not result.startswith("UNHANDLED"), (data, result)

    check()


def test_model_directory_loads_or_refuses(tmp_path):
    seed_dir = ft.saved_model(tmp_path / "seed")

    @settings(max_examples=15, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(which=st.integers(0, 3), edits=EDITS)
    def check(which, edits):
        result = ft.outcome(lambda: ft.read_model_dir(seed_dir, which, edits, tmp_path / "case"))
        assert not result.startswith("UNHANDLED"), result

    check()
