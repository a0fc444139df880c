import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from bayesrad.errors import ImageError
from bayesrad.imaging.embed import embed_volumes
from bayesrad.imaging.encoders import build_encoder
from bayesrad.imaging.saliency import ImagePredictor, heatmap_auc, heatmap_to_image, saliency_map, save_heatmap
from bayesrad.imaging.transforms import PreprocessConfig, preprocess_patient
from tests.imaging._synth import sphere_patient


class RegionMean(nn.Module):
    """A known predictor: the mean intensity of a fixed region (the true relevant voxels)."""

    def __init__(self, region: torch.Tensor):
        super().__init__()
        self.register_buffer("region", region.float())

    def forward(self, x):
        return ((x * self.region).sum(dim=(1, 2, 3, 4)) / self.region.sum())[:, None]


@pytest.fixture
def volume_and_region():
    g = torch.Generator().manual_seed(0)
    x = 1.0 + 0.1 * torch.randn(1, 1, 16, 16, 16, generator=g)
    region = torch.zeros(1, 16, 16, 16)
    region[:, 3:8, 9:14, 4:10] = 1
    return x, region


@pytest.mark.parametrize("method", ["gradient", "occlusion"])
def test_heatmap_finds_the_region_the_prediction_depends_on(volume_and_region, method):
    x, region = volume_and_region
    heat = saliency_map(RegionMean(region), x, method=method)
    assert heat.shape == (16, 16, 16) and heat.max() == pytest.approx(1.0)
    assert heatmap_auc(heat, region[0].numpy()) > 0.9


def test_heatmap_auc_reference_values():
    region = np.zeros((4, 4, 4), bool)
    region[0] = True
    assert heatmap_auc(region.astype(float), region) == 1.0
    assert heatmap_auc(1.0 - region, region) == 0.0
    with pytest.raises(ImageError, match="undefined"):
        heatmap_auc(np.ones((4, 4, 4)), np.ones((4, 4, 4)))


def test_heatmap_goes_back_onto_the_original_grid(tmp_path):
    rows = pd.DataFrame(sphere_patient(tmp_path, "P1", 9.0, 5.0, centre_mm=(6.0, -4.0, 2.0)))
    vol = preprocess_patient(rows, "P1", PreprocessConfig(modalities=("CT", "PET"), size=16, spacing_mm=3.0))
    # a heatmap equal to the preprocessed mask must land on the original mask
    paths = save_heatmap(vol.mask[0].numpy(), vol.affine, vol.reference, tmp_path / "out", name="mask_heat")
    written = sitk.ReadImage(str(paths["nifti"]))
    assert written.GetSize() == vol.reference.GetSize()
    assert np.allclose(written.GetOrigin(), vol.reference.GetOrigin())
    assert np.allclose(written.GetSpacing(), vol.reference.GetSpacing())
    heat = sitk.GetArrayFromImage(written) > 0.5
    truth = sitk.GetArrayFromImage(sitk.ReadImage(rows.loc[0, "mask_path"])) > 0
    dice = 2 * (heat & truth).sum() / (heat.sum() + truth.sum())
    assert dice > 0.85
    assert paths["png"].stat().st_size > 1000
    assert heatmap_to_image(vol.mask[0].numpy(), vol.affine, vol.reference).GetSize() == vol.reference.GetSize()


def test_image_predictor_reproduces_the_sklearn_head():
    torch.manual_seed(0)
    encoder = build_encoder("resnet", 1, 16, 4).eval()
    x = torch.randn(10, 1, 16, 16, 16)
    features = embed_volumes(encoder, x, device="cpu")
    target = features[:, 0] * 2 + 1
    pipe = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(features, target)
    with torch.no_grad():
        ours = ImagePredictor.from_sklearn(encoder, pipe)(x)[:, 0].numpy()
    assert np.allclose(ours, pipe.predict(features), atol=1e-4)
