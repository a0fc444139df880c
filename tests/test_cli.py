"""The command line on a cohort folder, as a pipeline user runs it: simulate -> summary ->
extract -> genes -> embed -> harmonize -> structure -> fit -> predict -> evaluate, the derived
blocks flowing into the model through ``--features`` directories (features.yaml), and the
outputs describing themselves."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from bayesrad.cli import app
from bayesrad.model import HybridBN

runner = CliRunner()


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """The whole chain once, on 30 patients with 24-voxel images and 150 SVI steps."""
    tmp = tmp_path_factory.mktemp("chain")
    cohort_dir, feats, deep, harm = tmp / "cohort", tmp / "features", tmp / "deep", tmp / "harmonized"
    modules = tmp / "modules"
    out = _run("simulate", "radiotherapy", "--out", cohort_dir, "--n-patients", 30, "--seed", 3,
               "--image-size", 24)
    assert "30 patients" in out and (cohort_dir / "manifest.csv").exists()
    assert "clinical" in _run("summary", cohort_dir)
    _run("extract", cohort_dir, "--out", feats, "--steps", "radiomics", "--no-progress")
    genes_out = _run("genes", cohort_dir, "--out", modules, "--n-top-genes", 150, "--n-modules", 3)
    _run("embed", cohort_dir, "--encoder", "encoder_small", "--out", deep, "--pca-dim", 2)
    _run("harmonize", cohort_dir, "--features", feats, "--blocks", "radiomics", "--batch", "centre",
         "--out", harm)
    features = ["--features", feats, "--features", modules, "--features", deep, "--features", harm]
    graph = tmp / "graph.yaml"
    _run("structure", cohort_dir, *features, "--out", graph)
    _run("fit", cohort_dir, *features, "--graph", graph, "--out", tmp / "model", "--num-steps", 150)
    _run("predict", tmp / "model", cohort_dir, *features, "--target", "local_control", "--out",
         tmp / "pred.csv")
    _run("evaluate", cohort_dir, *features, "--target", "local_control", "--models", "l2", "--cv", "2x1",
         "--n-boot", 50, "--out", tmp / "evaluation")
    return {"tmp": tmp, "cohort": cohort_dir, "features": features, "feats": feats, "deep": deep,
            "harm": harm, "modules": modules, "model": HybridBN.load(tmp / "model"), "genes_out": genes_out}


def test_extracted_and_embedded_blocks_are_nodes_of_the_fitted_graph(chain):
    model = chain["model"]
    assert {"radiomics", "deep"} <= set(model.graph_.nodes)
    # the radiomics node explains the extracted (then harmonised) pyradiomics columns, not the
    # simulator's pre-made table; the deep node the encoder's components
    extracted = pd.read_csv(chain["feats"] / "radiomics.csv", index_col=0)
    radiomics_columns = model.preprocessor_.stats_["radiomics"]["columns"]
    assert radiomics_columns and set(radiomics_columns) <= set(extracted.columns)
    assert all(c.startswith(("ct_", "pet_")) for c in radiomics_columns)
    embedded = pd.read_csv(chain["deep"] / "deep.csv", index_col=0)
    assert model.preprocessor_.stats_["deep"]["columns"] == list(embedded.columns)
    # the harmonised block, not the raw one, reached the model
    harmonised = pd.read_csv(chain["harm"] / "radiomics.csv", index_col=0)
    assert not harmonised[radiomics_columns].equals(extracted.loc[harmonised.index, radiomics_columns])


def test_gene_modules_are_a_block_of_the_chain(chain):
    """`bayesrad genes` writes the eigengene block, which replaces the raw counts in the model."""
    model, graph = chain["model"], chain["model"].graph_
    eigengenes = pd.read_csv(chain["modules"] / "gene_modules.csv", index_col=0)
    entry = yaml.safe_load((chain["modules"] / "features.yaml").read_text())["blocks"]["gene_modules"]
    assert entry["step"] == "genes/fit" and entry["replaces"] == ["genes"] and entry["n_modules"] >= 2
    assert list(eigengenes.columns) == [f"genes_module{k}_eigengene" for k in range(1, entry["n_modules"] + 1)]
    assert f"{entry['n_modules']} eigengenes" in " ".join(chain["genes_out"].split())
    # each eigengene is a node of the fitted graph; the raw counts are not
    assert set(eigengenes.columns) <= set(graph.nodes) and "genes" not in graph.nodes
    assert {graph.spec(c).block for c in eigengenes.columns} == {"gene_modules"}
    # eigengenes have unit (sample) variance over the patients they were fitted on
    assert ((eigengenes.std(ddof=1) - 1).abs() < 1e-6).all()
    # new patients are scored with the fitted modules, not refitted
    _run("genes", chain["cohort"], "--using", chain["modules"], "--out", chain["tmp"] / "modules_applied")
    applied = pd.read_csv(chain["tmp"] / "modules_applied" / "gene_modules.csv", index_col=0)
    pd.testing.assert_frame_equal(applied, eigengenes, rtol=1e-8)


def test_evaluate_closes_the_chain(chain):
    metrics = json.loads((chain["tmp"] / "evaluation" / "metrics.json").read_text())
    text = json.dumps(metrics)
    assert "l2" in text and "auc" in text
    assert (chain["tmp"] / "evaluation" / "report.html").stat().st_size > 1000


def test_every_derived_block_carries_its_provenance(chain):
    for directory, block, step in ((chain["feats"], "radiomics", "extract/radiomics"),
                                   (chain["deep"], "deep", "embed"),
                                   (chain["harm"], "radiomics", "harmonize/fit")):
        entry = yaml.safe_load((directory / "features.yaml").read_text())["blocks"][block]
        assert entry["step"] == step and len(entry["settings_hash"]) == 12 and entry["created"][:2] == "20"
    assert (chain["harm"] / "combat_radiomics.joblib").is_file()
    # applying the saved ComBat model to (here the same) patients reproduces the fitted output
    _run("harmonize", chain["cohort"], "--features", chain["feats"], "--using", chain["harm"],
         "--out", chain["tmp"] / "applied")
    applied = pd.read_csv(chain["tmp"] / "applied" / "radiomics.csv", index_col=0)
    fitted = pd.read_csv(chain["harm"] / "radiomics.csv", index_col=0)
    pd.testing.assert_frame_equal(applied, fitted, rtol=1e-8)


def test_predictions_describe_themselves(chain):
    predictions = pd.read_csv(chain["tmp"] / "pred.csv", index_col="patient_id")
    assert len(predictions) == 30 and predictions["mean"].between(0, 1).all()
    assert ((predictions["q05"] <= predictions["mean"]) & (predictions["mean"] <= predictions["q95"])).all()
    meta = json.loads((chain["tmp"] / "pred.csv.json").read_text())
    assert meta["target"] == "local_control" and meta["kind"] == "binary"
    assert meta["interval_levels"]["90%"] == [0.05, 0.95] and meta["interval_levels"]["95%"] == [0.025, 0.975]
    assert len(meta["model_id"]) == 16 and meta["columns"] == list(predictions.columns)


def test_interventions_are_checked(chain):
    base = ["predict", chain["tmp"] / "model", chain["cohort"], *chain["features"], "--target", "local_control"]
    # what if each patient had received 10 Gy more, without using their survival as evidence
    _run(*base, "--out", chain["tmp"] / "what_if.csv", "--do", "dose_mean_gy=+10", "--ignore", "overall_survival")
    assert pd.read_csv(chain["tmp"] / "what_if.csv", index_col="patient_id")["mean"].between(0, 1).all()
    far = runner.invoke(app, [str(a) for a in base + ["--out", chain["tmp"] / "far.csv", "--do", "dose_mean_gy=500"]])
    assert far.exit_code == 0 and "training sds above" in far.output
    refused = runner.invoke(app, [str(a) for a in base + ["--out", chain["tmp"] / "x.csv", "--do", "dose_mean_gy=500",
                                                          "--strict"]])
    assert refused.exit_code == 2 and "bayesrad error" in refused.output and "dose_mean_gy" in refused.output
    lots = runner.invoke(app, [str(a) for a in base + ["--out", chain["tmp"] / "x.csv", "--do", "dose_mean_gy=lots"]])
    assert lots.exit_code == 2 and "'lots'" in lots.output and "not a number" in lots.output
    bare = runner.invoke(app, [str(a) for a in base + ["--out", chain["tmp"] / "x.csv", "--do", "dose"]])
    assert bare.exit_code == 2 and "NODE=VALUE" in bare.output


def test_extract_gives_kinetic_habitats_with_maps_for_dynamic_pet(tmp_path):
    cohort_dir, feats = tmp_path / "glioma", tmp_path / "features"
    _run("simulate", "glioma_pet", "--out", cohort_dir, "--n-patients", 8, "--seed", 1, "--image-size", 16)
    _run("extract", cohort_dir, "--out", feats, "--steps", "kinetics", "--no-progress")
    kinetics = pd.read_csv(feats / "kinetics.csv", index_col="patient_id")
    entry = yaml.safe_load((feats / "features.yaml").read_text())["blocks"]["kinetics"]
    assert entry["step"] == "extract/kinetics+habitats" and entry["n_habitats"] >= 2
    # whole-lesion and per-habitat features for every patient, one habitat map per patient
    assert len(kinetics) == 8 and kinetics.notna().all().all()
    for h in range(1, entry["n_habitats"] + 1):
        assert f"dpet_lesion_habitat{h}_fraction" in kinetics.columns
    fractions = kinetics.filter(regex=r"habitat\d+_fraction$").sum(axis=1)
    assert (abs(fractions - 1.0) < 1e-9).all()
    assert sorted(p.name for p in (feats / "habitats").glob("*_habitats.nii.gz")) == \
        sorted(f"{p}_habitats.nii.gz" for p in kinetics.index)


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path):
    result = runner.invoke(app, ["summary", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "bayesrad error" in result.output and "nowhere" in result.output
    result = runner.invoke(app, ["simulate", "mars_colony", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "mars_colony" in result.output
    result = runner.invoke(app, ["structure", str(tmp_path), "--features", str(tmp_path / "none"),
                                 "--out", str(tmp_path / "g.yaml")])
    assert result.exit_code == 2 and "none" in result.output
