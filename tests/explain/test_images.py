"""Image nodes link to saliency maps: a latent node over the deep block of the packaged encoder,
its linear head checked against the model's own predictions, the maps written by
``link_saliency`` and by `bayesrad explain --encoder`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bayesrad.cli import app
from bayesrad.data import Cohort
from bayesrad.errors import CohortError, ModelError
from bayesrad.explain import shapley
from bayesrad.explain.images import image_head, image_nodes, image_saliency, link_saliency
from bayesrad.graph.graph import Graph, NodeSpec
from bayesrad.imaging import embed_cohort, packaged_encoder
from bayesrad.model import HybridBN
from tests.imaging._synth import sphere_cohort_images


@pytest.fixture(scope="module")
def image_fit(tmp_path_factory):
    root = tmp_path_factory.mktemp("spheres")
    images, truth = sphere_cohort_images(root, 16, seed=0)
    ids = pd.Index(truth.index, name="patient_id")
    rng = np.random.default_rng(0)
    clinical = pd.DataFrame({"y": 0.5 * truth["suv"].to_numpy() + rng.normal(0, 0.3, len(ids)),
                             "age": rng.normal(60, 5, len(ids))}, index=ids)
    deep = embed_cohort(Cohort(blocks={"clinical": clinical}, images=images),
                        packaged_encoder(), device="cpu")
    cohort = Cohort(blocks={"clinical": clinical, "deep": deep}, images=images)
    graph = Graph([NodeSpec("image", "latent", block="deep", latent_dim=2),
                   NodeSpec("age", "continuous", block="clinical"),
                   NodeSpec("y", "continuous", block="clinical")])
    graph.add_edge("image", "y")
    graph.add_edge("age", "y")
    model = HybridBN(graph, num_steps=150, min_steps=50, seed=0, num_threads=1,
                     n_samples=50).fit(cohort)
    return model, cohort, deep


def test_image_head_matches_the_models_predictions(image_fit):
    model, cohort, deep = image_fit
    assert image_nodes(model) == ["image"]
    head = image_head(model, "image", "y")
    st = model.preprocessor_.stats_["image"]
    assert head.shape == (len(st["columns"]),)
    # the model's own answer: E[y | deep columns] of P000 minus E[y | columns at their
    # training means] (age unknown in both: common random numbers cancel it), draw by draw
    pid = "P000"
    rows = pd.DataFrame([deep.loc[pid].to_numpy(), st["mean"]], columns=deep.columns,
                        index=pd.Index([pid, "at_mean"], name="patient_id"))
    d = model.predict_draws({"deep": rows}, "y", n_samples=50, seed=0, n_particles=8,
                            ignore=["age"])
    sd_y = model.preprocessor_.stats_["y"]["sd"]
    x_std = (deep.loc[pid].to_numpy() - np.asarray(st["mean"])) / np.asarray(st["sd"])
    assert abs(head @ x_std) > 0.01
    assert float((d[:, 0] - d[:, 1]).mean()) == pytest.approx(sd_y * head @ x_std, rel=1e-3)
    # through the encoder on the preprocessed volume: the same number (embed_cohort ran the
    # same encoder on the same volume)
    res = image_saliency(model, cohort, "image", pid, "y", packaged_encoder())
    assert res["contribution"] == pytest.approx(head @ x_std, rel=1e-3, abs=1e-4)
    assert res["heatmap"].shape == (32, 32, 32) and np.abs(res["heatmap"]).max() == pytest.approx(1.0)
    with pytest.raises(ModelError, match="'age' is continuous"):
        image_head(model, "age", "y")
    with pytest.raises(ModelError, match="no linear directed path from 'image' to 'age'"):
        image_head(model, "image", "age")
    with pytest.raises(CohortError, match="'NOPE'"):
        image_saliency(model, cohort, "image", "NOPE", "y", packaged_encoder())


def test_explanations_link_image_nodes_to_saliency_maps(image_fit, tmp_path):
    model, cohort, _ = image_fit
    table = shapley(model, cohort, "y", patients=["P001"], n_samples=30, n_particles=4)
    linked = link_saliency(table, model, cohort, packaged_encoder(), tmp_path / "maps")
    row = linked.set_index("node")
    assert row.loc["age", "saliency"] == ""
    png = tmp_path / "maps" / "saliency_image_P001.png"
    assert row.loc["image", "saliency"] == str(png) and png.stat().st_size > 1000
    assert (tmp_path / "maps" / "saliency_image_P001.nii.gz").exists()
    # the CLI: --encoder writes the map next to contributions.csv
    model.save(tmp_path / "model")
    cohort.to_directory(tmp_path / "cohort")
    result = CliRunner().invoke(app, [
        "explain", str(tmp_path / "model"), str(tmp_path / "cohort"), "--target", "y",
        "--patient", "P002", "--out", str(tmp_path / "out"), "--n-samples", "20",
        "--encoder", "encoder_small"])
    assert result.exit_code == 0, result.output
    csv = pd.read_csv(tmp_path / "out" / "contributions.csv").set_index("node")
    assert csv.loc["image", "saliency"].endswith("saliency_image_P002.png")
    assert (tmp_path / "out" / "saliency_image_P002.png").stat().st_size > 1000
