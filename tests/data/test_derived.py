"""Derived feature blocks on disk (features.yaml) read back as cohort blocks; progress lines."""

from __future__ import annotations

import io

import pandas as pd
import pytest
import yaml

from bayesrad.data import Cohort
from bayesrad.data.derived import load_cohort, read_blocks, settings_hash, write_block
from bayesrad.errors import CohortError
from bayesrad.progress import LineProgress, progress_bar


@pytest.fixture()
def cohort_dir(tmp_path):
    ids = pd.Index(["P1", "P2", "P3"], name="patient_id")
    clinical = pd.DataFrame({"age": [50.0, 60.0, 70.0]}, index=ids)
    radiomics = pd.DataFrame({"volume": [1.0, 2.0, 3.0]}, index=ids)
    Cohort({"clinical": clinical, "radiomics": radiomics}).to_directory(tmp_path / "cohort")
    return tmp_path / "cohort"


def test_registered_blocks_join_the_cohort_with_provenance(tmp_path, cohort_dir):
    extracted = pd.DataFrame({"ct_energy": [5.0, 6.0, 7.0, 8.0]},
                             index=pd.Index(["P1", "P2", "P3", "P9"], name="patient_id"))
    write_block(tmp_path / "f", "radiomics", extracted, step="extract/radiomics", settings={"binWidth": 25})
    write_block(tmp_path / "d", "deep", extracted.rename(columns={"ct_energy": "deep_0"}), step="embed")
    meta = yaml.safe_load((tmp_path / "f" / "features.yaml").read_text())["blocks"]["radiomics"]
    assert meta["step"] == "extract/radiomics" and meta["settings_hash"] == settings_hash({"binWidth": 25})
    assert meta["n_patients"] == 4 and meta["created"].endswith("+00:00")
    cohort, provenance = load_cohort(cohort_dir, [tmp_path / "f", tmp_path / "d"])
    # the extracted radiomics replace the cohort's own; P9 (not in the cohort) is left out
    assert list(cohort.blocks["radiomics"].columns) == ["ct_energy"]
    assert list(cohort.blocks["radiomics"].index) == ["P1", "P2", "P3"]
    assert "deep" in cohort.blocks and provenance["deep"]["step"] == "embed"
    assert provenance["radiomics"]["directory"] == str(tmp_path / "f")


def test_a_directory_without_register_is_a_clear_error(tmp_path):
    (tmp_path / "loose").mkdir()
    with pytest.raises(CohortError, match=r"loose.*features.yaml.*bayesrad extract"):
        read_blocks(tmp_path / "loose")
    with pytest.raises(CohortError, match="does not exist"):
        read_blocks(tmp_path / "nowhere")


def test_progress_off_a_terminal_is_whole_lines():
    log = io.StringIO()
    bar = progress_bar(10, desc="structure bootstrap", unit="resamples", file=log)
    assert isinstance(bar, LineProgress)
    for _ in range(10):
        bar.update(1)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    # the first update and the close, not one line per update (interval: 30 s)
    assert text.splitlines()[0].startswith("structure bootstrap: 1/10 resamples (10%)")
    assert text.splitlines()[-1].startswith("structure bootstrap: 10/10 resamples (100%)")
    assert len(text.splitlines()) == 2
