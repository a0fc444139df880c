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
from bayesrad.imaging.saliency import (
    ImagePredictor, heatmap_auc, heatmap_to_image, integrated_gradient_saliency, integrated_gradients, saliency_map,
    save_heatmap,
)
from bayesrad.imaging.transforms import PreprocessConfig, preprocess_patient
from tests.imaging._synth import sphere_patient


class RegionMean(nn.Module):
    """A known predictor: the mean intensity of a fixed region (the true relevant voxels)."""

    def __init__(self, region: torch.Tensor):
        super().__init__()
        self.register_buffer("region", region.float())

    def forward(self, x):
        return ((x * self.region).sum(dim=(1, 2, 3, 4)) / self.region.sum())[:, None]


class RegionContrast(nn.Module):
    """Mean intensity of region ``a`` minus that of region ``b``."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.a, self.b = RegionMean(a), RegionMean(b)

    def forward(self, x):
        return self.a(x) - self.b(x)


@pytest.fixture
def volume_and_region():
    g = torch.Generator().manual_seed(0)
    x = 1.0 + 0.1 * torch.randn(1, 1, 16, 16, 16, generator=g)
    region = torch.zeros(1, 16, 16, 16)
    region[:, 3:8, 9:14, 4:10] = 1
    return x, region


@pytest.mark.parametrize("method", ["gradient", "occlusion", "integrated_gradients"])
def test_heatmap_finds_the_region_the_prediction_depends_on(volume_and_region, method):
    x, region = volume_and_region
    heat = saliency_map(RegionMean(region), x, method=method)
    assert heat.shape == (16, 16, 16) and heat.max() == pytest.approx(1.0)
    assert heatmap_auc(heat, region[0].numpy()) > 0.9


def test_integrated_gradients_add_up_to_the_change_of_the_prediction():
    # a smooth nonlinear CNN (a ReLU net needs ~1000 steps: its kinks break the Riemann sum):
    # the attributions sum to f(x) - f(baseline) (completeness)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv3d(2, 4, 3), nn.Softplus(), nn.Conv3d(4, 4, 3, stride=2), nn.Tanh(),
                          nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 1))
    x = torch.rand(1, 2, 16, 16, 16)
    attributions = integrated_gradients(model, x, steps=64, baseline=0.2)
    assert attributions.shape == (2, 16, 16, 16)
    with torch.no_grad():
        change = float(model(x)[0, 0] - model(torch.full_like(x, 0.2))[0, 0])
    assert abs(change) > 0.01
    assert float(attributions.sum()) == pytest.approx(change, rel=0.005)


def test_signed_integrated_gradients_tell_raising_from_lowering_voxels(volume_and_region):
    # prediction = mean of region A - mean of region B: A voxels raise it, B voxels lower it
    x, a = volume_and_region
    b = torch.zeros_like(a)
    b[:, 10:14, 2:6, 10:14] = 1
    model = RegionContrast(a, b)
    heat = integrated_gradient_saliency(model, x, sigma_voxels=0)
    assert np.abs(heat).max() == pytest.approx(1.0)
    assert (heat[a[0].bool().numpy()] > 0).all() and (heat[b[0].bool().numpy()] < 0).all()
    assert heatmap_auc(heat, a[0].numpy(), within=(a + b)[0].numpy()) == 1.0
    unsigned = integrated_gradient_saliency(model, x, signed=False, sigma_voxels=0)
    assert (unsigned >= 0).all() and unsigned[b[0].bool().numpy()].min() > 0


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
    outlined = save_heatmap(vol.mask[0].numpy(), vol.affine, vol.reference, tmp_path / "out", name="outlined",
                            outline=truth, zoom_voxels=12)
    assert outlined["png"].stat().st_size > 1000
    with pytest.raises(ImageError, match="outline has shape"):
        save_heatmap(vol.mask[0].numpy(), vol.affine, vol.reference, tmp_path / "out", outline=truth[1:])
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
