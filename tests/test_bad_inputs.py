"""Bad inputs at every layer: each raises its bayesrad error class, and the message names
the culprit (file, column, node, patient or setting). Issue 17's probes, as tests that
create their own inputs."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bayesrad.data import Cohort
from bayesrad.errors import (BayesradError, CohortError, GraphError, MissingFileError, ModelError,
                             ModelFileError, SchemaError)
from bayesrad.graph.graph import Graph, NodeSpec
from bayesrad.graph.node_table import build_node_table, impute_numeric, table_from_frame
from bayesrad.graph.structure import compare_graphs
from bayesrad.model import HybridBN

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------- cohort directories
CLINICAL = "patient_id,age_years,dose_mean_gy\nP1,60,70\nP2,70,66\nP3,55,72\n"

COHORT_CASES = {
    # name: ({file: bytes or text}, error class, text the message must name)
    "empty clinical.csv": ({"clinical.csv": ""}, CohortError, "clinical.csv"),
    "binary clinical.csv": ({"clinical.csv": b"\xff\xfe\x00\x81garbage\x00"}, CohortError, "clinical.csv"),
    "ragged clinical.csv": ({"clinical.csv": 'patient_id,a\nP1,"1\n'}, CohortError, "clinical.csv"),
    "no patient_id": ({"clinical.csv": "id,age\nP1,3\n"}, CohortError, "patient_id"),
    "duplicated column": ({"clinical.csv": "patient_id,age,age\nP1,3,4\n"}, CohortError, "age"),
    "duplicated patient": ({"clinical.csv": "patient_id,age\nP1,3\nP1,4\n"}, CohortError, "P1"),
    "inf in numeric": ({"clinical.csv": "patient_id,dose\nP1,70\nP2,inf\nP3,60\nP4,61.5\n"}, SchemaError, "P2"),
    "-inf in numeric": ({"clinical.csv": "patient_id,dose\nP1,70\nP2,-inf\nP3,60\nP4,61.5\n"}, SchemaError, "dose"),
    "empty manifest": ({"clinical.csv": CLINICAL, "manifest.csv": ""}, CohortError, "manifest"),
    "binary manifest": ({"clinical.csv": CLINICAL, "manifest.csv": b"\x89PNG\r\n\x1a\n\xff\xfe"}, CohortError,
                        "manifest"),
    "manifest without path": ({"clinical.csv": CLINICAL, "manifest.csv": "patient_id,modality\nP1,CT\n"},
                              CohortError, "path"),
    "manifest mask_labels text": ({"clinical.csv": CLINICAL, "manifest.csv":
                                   "patient_id,modality,path,mask_labels\nP1,CT,x.nii.gz,gtv\n"},
                                  CohortError, "gtv"),
    "manifest unknown patient": ({"clinical.csv": CLINICAL, "manifest.csv":
                                  "patient_id,modality,path\nP9,CT,x.nii.gz\n"}, MissingFileError, "P9"),
    "cohort.yaml syntax": ({"cohort.yaml": "format: [unclosed\n"}, CohortError, "cohort.yaml"),
    "cohort.yaml python tag": ({"cohort.yaml": "!!python/object/apply:os.system ['echo pwned']\n"},
                               CohortError, "cohort.yaml"),
    "cohort.yaml not utf-8": ({"cohort.yaml": b"format: \xff\xfe\n"}, CohortError, "UTF-8"),
    "cohort.yaml a list": ({"cohort.yaml": "- 1\n- 2\n"}, CohortError, "cohort.yaml"),
    "cohort.yaml newer version": ({"cohort.yaml": "format: bayesrad-cohort\nversion: 99\n"}, CohortError, "99"),
    "cohort.yaml block without file": ({"cohort.yaml": "format: bayesrad-cohort\nversion: 1\nblocks:\n"
                                        "  clinical: {schema: {}}\n"}, CohortError, "clinical"),
    "cohort.yaml blocks a list": ({"cohort.yaml": "format: bayesrad-cohort\nversion: 1\nblocks: [a]\n"},
                                  CohortError, "blocks"),
    "cohort.yaml unknown kind": ({"cohort.yaml": "format: bayesrad-cohort\nversion: 1\nblocks:\n"
                                  "  clinical: {file: clinical.csv, schema: {age_years: weird}}\n",
                                  "clinical.csv": CLINICAL}, SchemaError, "age_years"),
    "cohort.yaml missing table": ({"cohort.yaml": "format: bayesrad-cohort\nversion: 1\nblocks:\n"
                                   "  clinical: {file: nope.csv}\n"}, MissingFileError, "nope.csv"),
    "patients.csv without patient_id": ({"cohort.yaml": "format: bayesrad-cohort\nversion: 1\nblocks:\n"
                                         "  clinical: {file: clinical.csv}\n", "clinical.csv": CLINICAL,
                                         "patients.csv": "who\nP1\n"}, CohortError, "patients.csv"),
    "truncated h5ad": ({"clinical.csv": CLINICAL, "genes.h5ad": b"\x89HDF\r\n\x1a\n" + b"\0" * 40},
                       CohortError, "genes.h5ad"),
}


def _cohort_version() -> int:
    from bayesrad.data import cohort

    return cohort.COHORT_FORMAT_VERSION


def _write(root: Path, files: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, str):
            content = content.replace("version: 1\n", f"version: {_cohort_version()}\n")
            (root / name).write_text(content)
        else:
            (root / name).write_bytes(content)


@pytest.mark.parametrize("case", sorted(COHORT_CASES))
def test_bad_cohort_directory(case, tmp_path):
    files, error, culprit = COHORT_CASES[case]
    _write(tmp_path / "c", files)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error) as info:
            Cohort.from_directory(tmp_path / "c")
    assert culprit in str(info.value)


def test_header_only_outcome_warns(tmp_path):
    _write(tmp_path / "c", {"clinical.csv": CLINICAL, "outcome.csv": "patient_id,local_control\n"})
    with pytest.warns(UserWarning, match="outcome.*no rows"):
        Cohort.from_directory(tmp_path / "c")


def test_unknown_modality_warns(tmp_path):
    (tmp_path / "x.nii.gz").write_bytes(b"")
    _write(tmp_path, {"clinical.csv": CLINICAL, "manifest.csv": "patient_id,modality,path\nP1,XRAY,x.nii.gz\n"})
    with pytest.warns(UserWarning, match="XRAY"):
        with pytest.raises(BayesradError):  # the empty file itself is then refused at header check
            Cohort.from_directory(tmp_path)


def test_duplicated_column_in_memory_block():
    frame = pd.DataFrame([[1, 2]], columns=["a", "a"], index=pd.Index(["P1"], name="patient_id"))
    with pytest.raises(CohortError, match="'a'"):
        Cohort({"clinical": frame})


# ----------------------------------------------------------------- graph YAML
GRAPH_CASES = {
    "syntax": ("nodes: [\n", "graph.yaml"),
    "not utf-8": (b"nodes: \xff\n", "UTF-8"),
    "python tag": ("!!python/object/apply:os.system ['echo pwned']\n", "graph.yaml"),
    "nodes a number": ("nodes: 5\n", "nodes"),
    "edge a string": ("nodes:\n- {name: a, kind: continuous}\n- {name: b, kind: continuous}\nedges:\n- a->b\n",
                      "a->b"),
    "edge of three": ("nodes:\n- {name: a, kind: continuous}\n- {name: b, kind: continuous}\nedges:\n"
                      "- [a, b, a]\n", "pair"),
    "latent_dim text": ("nodes:\n- {name: r, kind: latent, block: radiomics, latent_dim: two}\n", "two"),
    "unknown kind": ("nodes:\n- {name: a, kind: gaussian}\n", "gaussian"),
    "unknown node field": ("nodes:\n- {name: a, kind: continuous, colour: red}\n", "colour"),
    "cycle": ("nodes:\n- {name: a, kind: continuous}\n- {name: b, kind: continuous}\nedges:\n"
              "- [a, b]\n- [b, a]\n", "graph.yaml"),
    "edge to unknown node": ("nodes:\n- {name: a, kind: continuous}\nedges:\n- [a, zz]\n", "zz"),
    "name a list": ("nodes:\n- {name: [a], kind: continuous}\n", "graph.yaml"),
    "edges a mapping": ("nodes:\n- {name: a, kind: continuous}\nedges: {a: b}\n", "edges"),
    "format newer": ("format: bayesrad-graph-99\nnodes: []\n", "bayesrad-graph-99"),
}


@pytest.mark.parametrize("case", sorted(GRAPH_CASES))
def test_bad_graph_yaml(case, tmp_path):
    content, culprit = GRAPH_CASES[case]
    path = tmp_path / "graph.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(GraphError) as info:
        Graph.from_yaml(path)
    assert culprit in str(info.value)


def test_graph_yaml_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="nope.yaml"):
        Graph.from_yaml(tmp_path / "nope.yaml")


# ----------------------------------------------------------------- node tables and structure
def test_all_continuous_table_with_a_missing_value_imputes():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 3)), columns=["a", "b", "c"])
    frame.iloc[3, 1] = np.nan
    filled = impute_numeric(frame, seed=0)
    assert not filled.isna().any().any() and filled.iloc[3, 0] == frame.iloc[3, 0]


def test_duplicated_column_in_node_table():
    frame = pd.DataFrame(np.ones((5, 2)), columns=["x", "x"])
    with pytest.raises(GraphError, match="'x'"):
        table_from_frame(frame)


def test_compare_graphs_refuses_a_cyclic_truth():
    with pytest.raises(GraphError, match="truth.*cycle"):
        compare_graphs([("a", "b")], [("a", "b"), ("b", "c"), ("c", "a")])


def test_wide_block_summarised_warns():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(30, 11)), columns=[f"p{i}" for i in range(11)],
                         index=pd.Index([f"P{i}" for i in range(30)], name="patient_id"))
    with pytest.warns(UserWarning, match="proteins.*11 numeric columns"):
        build_node_table({"proteins": frame})


# ----------------------------------------------------------------- model fit / predict
def _graph() -> Graph:
    graph = Graph([NodeSpec("age", "continuous", block="clinical"),
                   NodeSpec("dose", "continuous", block="clinical"),
                   NodeSpec("lc", "binary", block="outcome")])
    graph.add_edge("age", "dose")
    graph.add_edge("dose", "lc")
    return graph


def _blocks(n=60, seed=0):
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"P{i:03d}" for i in range(n)], name="patient_id")
    age = rng.normal(65, 9, n)
    dose = 60 + 0.3 * (age - 65) + rng.normal(0, 4, n)
    lc = (rng.random(n) < 1 / (1 + np.exp(-(dose - 60) / 4))).astype(float)
    return {"clinical": pd.DataFrame({"age": age, "dose": dose}, index=ids),
            "outcome": pd.DataFrame({"lc": lc}, index=ids)}


SMALL = dict(num_steps=30, min_steps=0, seed=0, num_threads=1, n_samples=50, predict_particles=4)


@pytest.fixture(scope="module")
def small_model():
    torch.set_num_threads(1)
    return HybridBN(_graph(), **SMALL).fit(_blocks())


SETTING_CASES = {
    "num_steps negative": ({"num_steps": -5}, "num_steps"),
    "num_steps text": ({"num_steps": "100"}, "num_steps"),
    "learning_rate zero": ({"learning_rate": 0.0}, "learning_rate"),
    "learning_rate nan": ({"learning_rate": float("nan")}, "learning_rate"),
    "lr_decay above one": ({"lr_decay": 2.0}, "lr_decay"),
    "n_samples 1e12": ({"n_samples": 10**12}, "n_samples"),
    "predict_particles zero": ({"predict_particles": 0}, "predict_particles"),
    "batch_size zero": ({"batch_size": 0}, "batch_size"),
    "guide unknown": ({"guide": "meanfield"}, "guide"),
    "method unknown": ({"method": "vi"}, "method"),
    "device tpu9": ({"device": "tpu9"}, "tpu9"),
    "num_chains zero": ({"num_chains": 0}, "num_chains"),
    "num_threads negative": ({"num_threads": -1}, "num_threads"),
    "progress text": ({"progress": "yes"}, "progress"),
}


@pytest.mark.parametrize("case", sorted(SETTING_CASES))
def test_invalid_setting_refused_at_fit(case):
    settings, culprit = SETTING_CASES[case]
    with pytest.raises(ModelError) as info:
        HybridBN(_graph(), **{**SMALL, **settings}).fit(_blocks(20))
    assert culprit in str(info.value)


DATA_CASES = {
    "inf dose": (lambda b: b["clinical"].assign(dose=b["clinical"]["dose"].where(
        b["clinical"].index != "P004", np.inf)), "P004"),
    "target empty for all": (None, "lc"),
    "text in dose": (lambda b: b["clinical"].assign(dose=b["clinical"]["dose"].astype(object).where(
        b["clinical"].index != "P007", "lots")), "P007"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_training_data(case):
    blocks = _blocks(30)
    change, culprit = DATA_CASES[case]
    if change is None:
        blocks["outcome"] = blocks["outcome"].assign(lc=np.nan)
    else:
        blocks["clinical"] = change(blocks)
    with pytest.raises(ModelError) as info:
        HybridBN(_graph(), **SMALL).fit(blocks)
    assert culprit in str(info.value)


def test_huge_values_scale_finitely():
    blocks = _blocks(30)
    blocks["clinical"] = blocks["clinical"].assign(age=blocks["clinical"]["age"] * 1e306)
    model = HybridBN(_graph(), **{**SMALL, "num_steps": 2}).fit(blocks)
    stats = model.preprocessor_.stats_["age"]
    assert np.isfinite(stats["mean"]) and np.isfinite(stats["sd"]) and stats["sd"] > 1e306
    standardised = model.train_design_.values["age"]
    assert np.all(np.isfinite(standardised)) and standardised.std() > 0.5


QUERY_CASES = {
    "do on the target": (dict(target="lc", do={"lc": 1.0}), "target itself"),
    "do unknown node": (dict(target="lc", do={"dosage": 70.0}), "dosage"),
    "do inf": (dict(target="lc", do={"dose": float("inf")}), "dose"),
    "do bad shift": (dict(target="lc", do={"dose": "+lots"}), "+lots"),
    "do text on continuous": (dict(target="lc", do={"dose": "lots"}), "lots"),
    "n_samples 1e12": (dict(target="lc", n_samples=10**12), "n_samples"),
    "unknown target": (dict(target="survival"), "survival"),
}


@pytest.mark.parametrize("case", sorted(QUERY_CASES))
def test_bad_query(small_model, case):
    kwargs, culprit = QUERY_CASES[case]
    with pytest.raises(ModelError) as info:
        small_model.predict(_blocks(5, seed=1), **kwargs)
    assert culprit in str(info.value)


def test_predict_without_evidence_is_the_prior_predictive(small_model):
    ids = pd.Index(["NEW1", "NEW2"], name="patient_id")
    empty = {"clinical": pd.DataFrame({"age": [np.nan, np.nan], "dose": [np.nan, np.nan]}, index=ids)}
    pred = small_model.predict(empty, "lc", seed=0)
    assert list(pred.index) == ["NEW1", "NEW2"]
    assert np.allclose(pred["mean"].iloc[0], pred["mean"].iloc[1], atol=0.1)


# ----------------------------------------------------------------- saved models: tampering
def _flip_weights(path):
    raw = bytearray((path / "params.safetensors").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (path / "params.safetensors").write_bytes(bytes(raw))


def _edit_meta(path, change):
    meta = json.loads((path / "meta.json").read_text())
    change(meta)
    (path / "meta.json").write_text(json.dumps(meta))


def _edit_graph_number(path):
    text = (path / "graph.yaml").read_text()
    (path / "graph.yaml").write_text(text + "# edited\n")


def _python_tag(path):
    (path / "graph.yaml").write_text("!!python/object/apply:os.system ['touch PWNED']\n")


def _pickle_weights(path):
    import pickle

    (path / "params.safetensors").write_bytes(pickle.dumps({"x": 1}))


def _nan_with_new_hashes(path):
    from safetensors.torch import load_file, save_file

    from bayesrad.model.persist import _sha256

    tensors = load_file(str(path / "params.safetensors"))
    key = sorted(tensors)[0]
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, str(path / "params.safetensors"))
    _edit_meta(path, lambda m: m["sha256"].__setitem__("params.safetensors", _sha256(path / "params.safetensors")))
    sums = {n: _sha256(path / n) for n in ("graph.yaml", "params.safetensors", "meta.json")}
    (path / "checksums.json").write_text(json.dumps(sums))


def _rehash(path):
    from bayesrad.model.persist import _sha256

    sums = {n: _sha256(path / n) for n in ("graph.yaml", "params.safetensors", "meta.json")}
    (path / "checksums.json").write_text(json.dumps(sums))


TAMPER_CASES = {
    "flipped byte in weights": (_flip_weights, "params.safetensors"),
    "edited scaling mean": (lambda p: _edit_meta(p, lambda m: m["preprocessing"]["stats"]["dose"].__setitem__(
        "mean", 61.0)), "meta.json"),
    "edited graph yaml": (_edit_graph_number, "graph.yaml"),
    "python tag in graph": (_python_tag, "graph.yaml"),
    "pickle as weights": (_pickle_weights, "params.safetensors"),
    "newer format version": (lambda p: _edit_meta(p, lambda m: m.__setitem__("format_version", 99)), "99"),
    "meta.json a list": (lambda p: (p / "meta.json").write_text("[1, 2]"), "meta.json"),
    "meta.json not json": (lambda p: (p / "meta.json").write_text("{nope"), "meta.json"),
    "checksums removed": (lambda p: (p / "checksums.json").unlink(), "checksums.json"),
    "weights removed": (lambda p: (p / "params.safetensors").unlink(), "params.safetensors"),
    "nan weights, hashes recomputed": (_nan_with_new_hashes, "non-finite"),
    "n_samples 1e12, rehashed": (lambda p: (_edit_meta(p, lambda m: m["settings"].__setitem__("n_samples", 10**12)),
                                            _rehash(p)), "n_samples"),
    "unknown setting, rehashed": (lambda p: (_edit_meta(p, lambda m: m["settings"].__setitem__("turbo", True)),
                                             _rehash(p)), "turbo"),
    "settings missing, rehashed": (lambda p: (_edit_meta(p, lambda m: m.pop("settings")), _rehash(p)), "settings"),
    "inf scaling sd, rehashed": (lambda p: (_edit_meta(p, lambda m: m["preprocessing"]["stats"]["age"].__setitem__(
        "sd", float("inf"))), _rehash(p)), "age"),
}


@pytest.mark.parametrize("case", sorted(TAMPER_CASES))
def test_tampered_model_refused(small_model, case, tmp_path, monkeypatch):
    path = tmp_path / "model"
    small_model.save(path)
    assert HybridBN.load(path).method_ == "svi"
    change, culprit = TAMPER_CASES[case]
    change(path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises((ModelFileError, MissingFileError)) as info:
        HybridBN.load(path)
    assert culprit in str(info.value)
    assert not (tmp_path / "PWNED").exists()


# ----------------------------------------------------------------- command line
def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bayesrad", *args], capture_output=True, text=True,
                          cwd=cwd, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
                          timeout=120)


def test_cli_bayesrad_error_is_one_line_exit_2(tmp_path):
    _write(tmp_path / "c", {"clinical.csv": ""})
    run = _cli("summary", str(tmp_path / "c"))
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert "bayesrad error:" in run.stdout and "clinical.csv" in run.stdout


def test_cli_unexpected_error_exit_1_and_debug(tmp_path):
    # --do with a text value reaches predict: a missing model folder is a bayesrad error,
    # so provoke an unexpected one instead: a directory given where the model's graph goes.
    from bayesrad import cli

    def boom(*a, **k):
        raise RuntimeError("kaboom")

    original = cli.app.registered_commands
    # in-process: main() turns any exception into one line and exit 1
    import typer

    app = typer.Typer()

    @app.command()
    def crash():
        boom()

    @app.command()
    def other():
        pass

    old = cli.app
    cli.app = app
    try:
        assert cli.main(["crash"]) == 1
        with pytest.raises(RuntimeError, match="kaboom"):
            cli.main(["crash", "--debug"])
    finally:
        cli.app = old
    assert original is cli.app.registered_commands


# ----------------------------------------------------------------- images
def _nifti(path, values):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(values), str(path))


@pytest.mark.parametrize("case", ["truncated", "inf voxel", "nan voxel", "not gzip"])
def test_corrupt_nifti_refused(case, tmp_path):
    from bayesrad.data.readers import read_image
    from bayesrad.errors import ImageError

    rng = np.random.default_rng(0)
    values = rng.normal(size=(12, 16, 16)).astype(np.float32)
    path = tmp_path / "ct.nii.gz"
    if case == "inf voxel":
        values[3, 4, 5] = np.inf
    if case == "nan voxel":
        values[3, 4, 5] = np.nan
    _nifti(path, values)
    if case == "truncated":
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) * 2 // 3])
    if case == "not gzip":
        path.write_bytes(b"\x1f\x8b" + b"\0" * 400)
    with pytest.raises(ImageError) as info:
        read_image(path, patient_id="P1")
    assert "'P1'" in str(info.value) and "ct.nii.gz" in str(info.value)


def test_cli_output_path_of_the_wrong_kind_is_refused_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from bayesrad.cli import app

    existing = tmp_path / "cohort.txt"
    existing.write_text("keep me")
    result = CliRunner().invoke(app, ["simulate", "incomplete_multimodal", "--out", str(existing),
                                      "--n-patients", "5"])
    assert result.exit_code == 2 and "is an existing file" in " ".join(result.output.split())
    assert existing.read_text() == "keep me"
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "model"), str(tmp_path),
                                      "--target", "y", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in " ".join(result.output.split())


# ----------------------------------------------------------------- issue 17, the rest of its list
def test_learn_structure_on_an_all_continuous_table_with_a_missing_value():
    """Was ``ValueError: No objects to concatenate``: now imputed, every node in the graph."""
    from bayesrad.graph.structure import learn_structure

    rng = np.random.default_rng(1)
    a = rng.normal(size=60)
    frame = pd.DataFrame({"a": a, "b": 2 * a + rng.normal(0, 0.3, 60), "c": rng.normal(size=60)})
    frame.iloc[5, 1] = np.nan
    graph = learn_structure(frame)
    assert sorted(graph.nodes) == ["a", "b", "c"]
    assert ("a", "b") in graph.edges or ("b", "a") in graph.edges


@pytest.mark.parametrize("method", ["hill_climb", "pc"])
def test_learn_structure_refuses_a_duplicated_column(method):
    from bayesrad.graph.structure import learn_structure

    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(30, 3)), columns=["x", "y", "x"])
    with pytest.raises(GraphError, match="'x'"):
        learn_structure(frame, method=method)


def test_target_inside_its_feature_block_is_not_its_own_parent():
    """A one-CSV cohort: the target sits among 12 radiomics columns; it becomes the target
    node and the block's latent node summarises the other 12 columns only."""
    rng = np.random.default_rng(0)
    ids = pd.Index([f"P{i}" for i in range(40)], name="patient_id")
    frame = pd.DataFrame(rng.normal(size=(40, 12)), columns=[f"f{i}" for i in range(12)], index=ids)
    frame["response"] = (rng.random(40) < 0.5).astype(float)
    graph = Graph.default({"radiomics": frame}, "response")
    assert graph.spec("response").kind == "binary"
    latent = [n for n in graph.nodes if graph.spec(n).kind == "latent"]
    assert len(latent) == 1 and "response" not in graph.spec(latent[0]).columns
    assert graph.parents("response") == latent


def test_unpaired_survival_target_is_refused():
    rng = np.random.default_rng(0)
    ids = pd.Index([f"P{i}" for i in range(30)], name="patient_id")
    blocks = {"clinical": pd.DataFrame({"age": rng.normal(60, 9, 30)}, index=ids),
              "outcome": pd.DataFrame({"os_days": rng.exponential(500, 30)}, index=ids)}
    with pytest.raises(GraphError) as info:
        Graph.default(blocks, "os_days")
    assert "'os_days'" in str(info.value) and "os_days_event" in str(info.value)


def test_unconverged_fit_warns_with_the_budget():
    from bayesrad.errors import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="num_steps=12"):
        HybridBN(_graph(), **{**SMALL, "num_steps": 12}).fit(_blocks(30))


# ----------------------------------------------------------------- perfectly collinear columns
def _collinear_blocks():
    rng = np.random.default_rng(3)
    ids = pd.Index([f"P{i:02d}" for i in range(40)], name="patient_id")
    age = rng.normal(60, 8, 40)
    dose = rng.normal(66, 4, 40)
    clinical = pd.DataFrame({"age": age, "age_again": age, "dose_gy": dose,
                             "site": rng.choice(["lung", "head", "neck"], 40)}, index=ids)
    clinical["site_code"] = clinical["site"].map({"lung": "L", "head": "H", "neck": "N"})
    plan = pd.DataFrame({"dose_cgy": 100 * dose + 20}, index=ids)
    return {"clinical": clinical, "plan": plan}


def test_collinear_columns_warn_naming_both():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_node_table(_collinear_blocks())
    messages = [str(w.message) for w in caught if "perfectly collinear" in str(w.message)]
    assert len(messages) == 3, messages
    copy, linear, levels = (next(m for m in messages if key in m) for key in ("'age_again'", "'dose_cgy'",
                                                                               "'site_code'"))
    assert "'age'" in copy and "age_again = age " in copy
    assert "'dose_gy' (block 'clinical')" in linear and "'dose_cgy' (block 'plan')" in linear
    assert "dose_cgy = 100 * dose_gy + 20" in linear
    assert "'site'" in levels


def test_collinear_columns_warn_when_learning_from_a_frame():
    from bayesrad.graph.structure import learn_structure

    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    frame = pd.DataFrame({"x": x, "x_scaled": 3 * x - 1, "y": x + rng.normal(size=50)})
    with pytest.warns(UserWarning, match=r"'x' and 'x_scaled' are perfectly collinear"):
        learn_structure(frame)


def test_nearly_collinear_columns_do_not_warn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    frame = pd.DataFrame({"x": x, "y": x + rng.normal(0, 1e-3, 200), "z": rng.normal(size=200)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table_from_frame(frame)


# ----------------------------------------------------------------- messages in plain Python
def test_messages_show_plain_values_not_numpy_reprs(tmp_path):
    """numpy 2 writes ``np.int64(0)`` / ``np.float64(inf)``; messages must read ``0`` / ``inf``."""
    from bayesrad.errors import plain, plain_text
    from bayesrad.graph.preparation import prepare_table
    from bayesrad.model.design import _codes

    messages = []
    frame = pd.DataFrame({"a": pd.Categorical([None, "u", "v", "u", "v", "u"]), "b": np.arange(6.0)})
    with pytest.raises(GraphError) as info:  # a RangeIndex: the row is np.int64(0)
        prepare_table(frame)
    messages.append(str(info.value))
    assert "row 0" in messages[-1]
    _write(tmp_path / "c", {"clinical.csv": "patient_id,dose\nP1,70\nP2,inf\nP3,60\nP4,61.5\n"})
    with pytest.raises(SchemaError) as info:
        Cohort.from_directory(tmp_path / "c")
    messages.append(str(info.value))
    assert "patient 'P2' (inf)" in messages[-1]
    column = pd.Series([1, 2, 7], index=pd.RangeIndex(3))
    with pytest.raises(ModelError) as info:
        _codes(column, [1, 2], "grade", "clinical")
    messages.append(str(info.value))
    assert "patient 2 has level 7" in messages[-1] and "[1, 2]" in messages[-1]
    # and the error classes write any numpy scalar left in a message as plain Python
    values = [np.int64(3), np.float64(0.5), np.str_("P7"), np.True_]
    messages.append(str(CohortError(f"row {np.int64(0)!r}: {values}")))
    assert messages[-1] == "row 0: [3, 0.5, 'P7', True]"
    assert plain(values) == [3, 0.5, "P7", True] and plain_text("np.float64(nan)") == "nan"
    assert not [m for m in messages if "np." in m], messages


def test_truncated_ct_lands_in_the_extraction_failures(tmp_path):
    """Was read without complaint (0 failures, 92 of 107 features wrong): now the patient's CT
    unit fails with an ImageError naming patient and file, and the other patient completes."""
    import bayesrad
    from bayesrad.features.extract import extract_cohort, radiomics_step

    cohort = bayesrad.simulate("radiotherapy", n_patients=2, seed=7, missing=0.0, out=tmp_path / "c",
                               image_size=16).cohort
    images = cohort.images.copy()
    ct = images[images["modality"] == "CT"].sort_values("patient_id")
    victim, path = ct["patient_id"].iloc[0], Path(ct["path"].iloc[0])
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    settings = {"setting": {"binWidth": 25, "label": 1}, "imageType": {"Original": {}},
                "featureClass": {"firstorder": None}}
    result = extract_cohort(images, None, steps=[radiomics_step(settings=settings, modalities=("CT",))],
                            progress=False)
    failures = result.failures
    assert list(failures["patient_id"]) == [victim] and list(failures["error"]) == ["ImageError"]
    assert victim in failures["reason"].iloc[0] and path.name in failures["reason"].iloc[0]
    assert result.blocks["radiomics"].loc[ct["patient_id"].iloc[1]].notna().all()


def test_summary_check_images_finds_what_a_header_check_cannot(tmp_path):
    """A truncated CT and an empty mask pass the header check; ``--check-images`` opens
    every file and names both (exit 2); without it, summary says voxels were not read."""
    import SimpleITK as sitk
    from typer.testing import CliRunner

    import bayesrad
    from bayesrad.cli import app

    cohort = bayesrad.simulate("radiotherapy", n_patients=2, seed=8, missing=0.0, out=tmp_path / "c",
                               image_size=16).cohort
    rows = cohort.images.sort_values("patient_id")
    ct = rows[rows["modality"] == "CT"].iloc[0]
    raw = Path(ct["path"]).read_bytes()
    Path(ct["path"]).write_bytes(raw[: len(raw) // 2])
    pet = rows[(rows["modality"] == "PET") & (rows["patient_id"] != ct["patient_id"])].iloc[0]
    mask = sitk.ReadImage(pet["mask_path"])
    empty = sitk.Image(mask.GetSize(), mask.GetPixelID())
    empty.CopyInformation(mask)
    sitk.WriteImage(empty, pet["mask_path"])
    quick = CliRunner().invoke(app, ["summary", str(tmp_path / "c")])
    assert quick.exit_code == 0 and "voxels not read" in quick.output
    full = CliRunner().invoke(app, ["summary", str(tmp_path / "c"), "--check-images"])
    # the console wraps at its width wherever the temporary path puts a line's end, which can
    # fall inside a patient id or a file name: compare with all whitespace removed
    assert full.exit_code == 2, full.output
    text = "".join(full.output.split())

    def said(phrase: str) -> bool:
        return "".join(phrase.split()) in text

    assert said(f"'{ct['patient_id']}'") and said(Path(ct["path"]).name)
    # every image row of the second patient that uses the emptied mask is named
    emptied = int((rows["mask_path"] == pet["mask_path"]).sum())
    assert said(f"'{pet['patient_id']}'") and said("absent (labels present: [])")
    assert said(f"{len(rows)} opened in full, {1 + emptied} with a problem")
