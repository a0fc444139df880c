from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bayesrad.data.cohort import Cohort
from bayesrad.errors import ModelError
from bayesrad.imaging.embed import embed_cohort, embedding_frame
from bayesrad.imaging.encoders import build_encoder, load_encoder, save_encoder
from bayesrad.imaging.transforms import PreprocessConfig
from tests.imaging._synth import sphere_cohort_images


@pytest.fixture(scope="module")
def sphere_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("spheres")
    images, truth = sphere_cohort_images(root, 8, seed=3)
    # P007 lacks its PET: a missing modality, so it must be absent from the deep block
    images = images[~((images.patient_id == "P007") & (images.modality == "PET"))]
    clinical = pd.DataFrame({"age": np.arange(8.0)}, index=pd.Index(truth.index, name="patient_id"))
    return Cohort({"clinical": clinical}, images, name="spheres"), truth


def test_embed_cohort_returns_the_deep_block(sphere_cohort, tmp_path):
    cohort, truth = sphere_cohort
    torch.manual_seed(0)
    encoder = build_encoder("resnet", in_channels=2, size=16, width=4)
    config = PreprocessConfig(modalities=("CT", "PET"), size=16, spacing_mm=3.0)
    save_encoder(encoder, tmp_path, {"preprocessing": config.to_dict()})
    deep = embed_cohort(cohort, tmp_path, device="cpu")
    assert list(deep.index) == [f"P{i:03d}" for i in range(7)]
    assert deep.index.name == "patient_id"
    assert deep.shape[1] == encoder.feature_dim and deep.columns[0] == "ct_pet_deep_000"
    assert np.isfinite(deep.to_numpy()).all()
    # the block joins the cohort as a modality that P007 misses
    joined = cohort.with_block("deep", deep)
    assert bool(joined.missing.loc["P007", "deep"]) and not bool(joined.missing.loc["P000", "deep"])
    reduced = embed_cohort(cohort, tmp_path, pca_dim=3, device="cpu")
    assert reduced.shape == (7, 3) and list(reduced.columns) == ["ct_pet_deep_pc01", "ct_pet_deep_pc02", "ct_pet_deep_pc03"]
    ratios = reduced.attrs["explained_variance_ratio"]
    assert ratios == sorted(ratios, reverse=True) and 0 < sum(ratios) <= 1 + 1e-9
    # PCA components are uncorrelated
    corr = np.corrcoef(reduced.to_numpy().T)
    assert np.allclose(corr[np.triu_indices(3, 1)], 0, atol=1e-6)


def test_pca_dimension_out_of_range_is_refused():
    with pytest.raises(ModelError, match="pca_dim=9"):
        embedding_frame(np.random.default_rng(0).normal(size=(5, 4)), list("abcde"), "ct", pca_dim=9)


ENCODER_SMALL = Path(__file__).resolve().parents[2] / "bayesrad" / "imaging" / "pretrained" / "encoder_small"


@pytest.mark.skipif(not (ENCODER_SMALL / "encoder.safetensors").is_file(), reason="encoder_small not trained yet")
def test_shipped_encoder_embeds_a_simulated_cohort(tmp_path):
    from bayesrad.data.simulate import simulate

    sim = simulate("radiotherapy", n_patients=4, seed=5, out=tmp_path / "rt", image_size=32, missing=0.0)
    deep = embed_cohort(sim.cohort, ENCODER_SMALL, device="cpu")
    encoder, record = load_encoder(ENCODER_SMALL)
    assert deep.shape == (4, encoder.feature_dim)
    assert record["preprocessing"]["modalities"] == ["CT", "PET"]
    assert np.isfinite(deep.to_numpy()).all() and deep.to_numpy().std(axis=0).max() > 0


def test_pretrain_then_embed_is_the_command_line_flow(sphere_cohort, tmp_path):
    from bayesrad.imaging.pretrain import pretrain_encoder

    cohort, _ = sphere_cohort
    result = pretrain_encoder(cohort, tmp_path / "enc", modalities=("CT", "PET"), size=16, spacing_mm=3.0, steps=3,
                              width=4, batch_size=2, patch_size=4, device="cpu")
    _, record = load_encoder(tmp_path / "enc")
    assert record["data"] == [{"cohort": "spheres", "n_patients": 7}]
    assert record["preprocessing"]["spacing_mm"] == 3.0 and len(result.loss_history) == 3
    deep = embed_cohort(cohort, tmp_path / "enc", pca_dim=2, device="cpu")
    assert deep.shape == (7, 2)
