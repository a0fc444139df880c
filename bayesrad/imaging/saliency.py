"""Voxel heatmaps of how a prediction depends on the image, written back onto the input grid.

- ``gradient_saliency``: |gradient x input| of the prediction w.r.t. the voxels (MONAI
  ``VanillaGrad`` / ``SmoothGrad``), summed over channels and lightly smoothed.
- ``occlusion_saliency``: the change of the prediction when a cube around each voxel is
  set to a baseline (MONAI ``OcclusionSensitivity``), model-agnostic.
- ``integrated_gradients`` / ``integrated_gradient_saliency``: Sundararajan et al. (2017),
  the input-minus-baseline times the gradient averaged along the straight path from the
  baseline; the attributions add up to prediction(x) - prediction(baseline). Signed by
  default: positive voxels push the prediction up (for an aggressiveness predictor, the
  aggressive tissue), negative ones down.
- ``ImagePredictor``: encoder + a linear head (e.g. a ridge probe of a target node fitted on the
  embeddings), so gradients run through the encoder and the model of the target.
- ``heatmap_to_image`` / ``save_heatmap``: the heatmap (on the preprocessed grid, whose affine
  travels with it) resampled with SimpleITK onto the original image's grid, written as NIfTI
  (same size, spacing, origin, direction as the input image) plus a PNG overlay of the axial
  slices where the heatmap is largest.
- ``heatmap_auc``: area under the ROC curve of heatmap values against a true region mask.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.visualize import OcclusionSensitivity, SmoothGrad, VanillaGrad
from scipy import ndimage
from sklearn.metrics import roc_auc_score
from torch import nn

from bayesrad.errors import ImageError, ModelError
from bayesrad.imaging.encoders import VolumeEncoder
from bayesrad.imaging.transforms import metatensor_to_sitk

METHODS = ("gradient", "smoothgrad", "occlusion", "integrated_gradients")


class ImagePredictor(nn.Module):
    """``volume (B, C, S, S, S) -> prediction (B, K)``: encoder, then a standardised linear head.

    ``coef`` (K, F) and ``intercept`` (K,) act on ``(features - feature_mean) / feature_scale``,
    the parametrisation of an sklearn ``StandardScaler`` + linear model fitted on the
    embeddings (``from_sklearn``).
    """

    def __init__(self, encoder: VolumeEncoder, coef, intercept, feature_mean=None, feature_scale=None):
        super().__init__()
        self.encoder = encoder.eval()
        coef = torch.as_tensor(np.atleast_2d(coef), dtype=torch.float32)
        f = encoder.feature_dim
        if coef.shape[1] != f:
            raise ModelError(f"linear head has {coef.shape[1]} inputs but the encoder gives {f} features")
        self.register_buffer("coef", coef)
        self.register_buffer("intercept", torch.as_tensor(np.atleast_1d(intercept), dtype=torch.float32))
        self.register_buffer("mean", torch.as_tensor(np.zeros(f) if feature_mean is None else feature_mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(np.ones(f) if feature_scale is None else feature_scale, dtype=torch.float32))

    @classmethod
    def from_sklearn(cls, encoder: VolumeEncoder, pipeline) -> "ImagePredictor":
        """From a fitted ``make_pipeline(StandardScaler(), Ridge()/LogisticRegression())`` on embeddings."""
        scaler, model = pipeline[0], pipeline[-1]
        return cls(encoder, model.coef_, model.intercept_, scaler.mean_, scaler.scale_)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (self.encoder(x) - self.mean) / self.scale
        return z @ self.coef.T + self.intercept


def _check_volume(volume: torch.Tensor) -> torch.Tensor:
    v = torch.as_tensor(volume).float()
    if v.ndim == 4:
        v = v[None]
    if v.ndim != 5 or v.shape[0] != 1:
        raise ImageError(f"saliency takes one volume (C, S, S, S) or (1, C, S, S, S), got {tuple(v.shape)}")
    return v


def gradient_saliency(model: nn.Module, volume: torch.Tensor, target: int = 0, smooth: bool = False,
                      sigma_voxels: float = 1.0, n_samples: int = 16) -> np.ndarray:
    """|gradient x input| heatmap (S, S, S) of output ``target`` of ``model`` for one volume.

    ``smooth`` averages gradients over ``n_samples`` noisy copies (SmoothGrad, 10% noise).
    The map is summed over channels, Gaussian-smoothed by ``sigma_voxels`` and scaled to max 1.
    """
    v = _check_volume(volume)
    model = model.eval()
    if smooth:
        grad = SmoothGrad(model, stdev_spread=0.1, n_samples=n_samples, verbose=False)(v, index=target)
    else:
        grad = VanillaGrad(model)(v, index=target)
    heat = (torch.as_tensor(grad) * v).abs().sum(1)[0].detach().numpy()
    return _normalise(ndimage.gaussian_filter(heat, sigma_voxels) if sigma_voxels > 0 else heat)


def occlusion_saliency(model: nn.Module, volume: torch.Tensor, target: int = 0, mask_size: int = 4,
                       overlap: float = 0.5, n_batch: int = 16, baseline: float = 0.0) -> np.ndarray:
    """Occlusion heatmap (S, S, S): |prediction - prediction with a ``mask_size``^3 cube set to
    ``baseline``| around each voxel (MONAI ``OcclusionSensitivity``), scaled to max 1.

    The default baseline 0 is "no signal" after preprocessing (bottom of the CT window, SUV 0).
    """
    v = _check_volume(volume)
    model = model.eval()
    with torch.no_grad():
        base = model(v)[0, target].item()
    occ = OcclusionSensitivity(model, mask_size=mask_size, n_batch=n_batch, overlap=overlap, mode=float(baseline),
                               verbose=False, activate=False)
    with torch.no_grad(), warnings.catch_warnings():
        # MONAI 1.6 indexes with a list of slices inside OcclusionSensitivity (torch warns; the
        # result is still correct, which tests/imaging/test_saliency.py checks)
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
        maps, _ = occ(v)
    heat = (maps[0, target] - base).abs().detach().numpy()
    return _normalise(heat)


def integrated_gradients(model: nn.Module, volume: torch.Tensor, target: int = 0, baseline: float = 0.0,
                         steps: int = 32, batch_size: int = 16) -> np.ndarray:
    """Integrated gradients (C, S, S, S) of output ``target`` for one volume (C, S, S, S).

    ``(x - b) * mean_k grad f(b + a_k (x - b))`` with ``a_k`` the ``steps`` midpoints of [0, 1]
    and ``b`` a constant ``baseline`` volume (0 = "no signal" after preprocessing). Written here
    because MONAI has no integrated gradients and it is a few lines on top of autograd (Captum
    would be one more dependency for it). The attributions sum to f(x) - f(b) up to the
    Riemann-sum error, which shrinks with ``steps``.
    """
    v = _check_volume(volume)
    model = model.eval()
    base = torch.full_like(v, float(baseline))
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    total = torch.zeros_like(v)
    for start in range(0, steps, batch_size):
        a = alphas[start:start + batch_size].view(-1, 1, 1, 1, 1)
        path = (base + a * (v - base)).requires_grad_(True)
        (grad,) = torch.autograd.grad(model(path)[:, target].sum(), path)
        total += grad.sum(0, keepdim=True)
    return ((v - base) * total / steps)[0].detach().numpy()


def integrated_gradient_saliency(model: nn.Module, volume: torch.Tensor, target: int = 0, signed: bool = True,
                                 sigma_voxels: float = 1.0, steps: int = 32, baseline: float = 0.0) -> np.ndarray:
    """Heatmap (S, S, S) from ``integrated_gradients`` summed over channels.

    ``signed`` keeps the direction (scaled so that max |value| = 1; positive raises the
    prediction); otherwise the absolute attribution is mapped (max 1). ``sigma_voxels``: Gaussian
    smoothing of the map (about the scanner's resolution: voxel-level gradients of a strided
    CNN alternate in sign from voxel to voxel, which the image cannot resolve anyway).
    """
    attributions = integrated_gradients(model, volume, target, baseline, steps)
    heat = attributions.sum(0) if signed else np.abs(attributions).sum(0)
    if sigma_voxels > 0:
        heat = ndimage.gaussian_filter(heat, sigma_voxels)
    top = float(np.abs(heat).max())
    return (heat / top if top > 0 else heat).astype(np.float32)


def saliency_map(model: nn.Module, volume: torch.Tensor, method: str = "gradient", target: int = 0) -> np.ndarray:
    """Heatmap (S, S, S) by ``method`` in ``METHODS`` (``integrated_gradients``: signed, smoothed 1 voxel)."""
    if method == "integrated_gradients":
        return integrated_gradient_saliency(model, volume, target)
    if method == "gradient":
        return gradient_saliency(model, volume, target)
    if method == "smoothgrad":
        return gradient_saliency(model, volume, target, smooth=True)
    if method == "occlusion":
        return occlusion_saliency(model, volume, target)
    raise ModelError(f"saliency method {method!r} is unknown; use one of {list(METHODS)}")


def _normalise(heat: np.ndarray) -> np.ndarray:
    heat = np.asarray(heat, dtype=np.float32)
    top = float(heat.max())
    return heat / top if top > 0 else heat


def heatmap_auc(heatmap: np.ndarray, region: np.ndarray, within: np.ndarray | None = None) -> float:
    """ROC AUC of heatmap values separating voxels in ``region`` from the others (optionally only
    voxels in ``within``, e.g. the lesion). 0.5 = uninformative, 1 = region ranked first."""
    heat = np.asarray(heatmap, dtype=float).ravel()
    truth = np.asarray(region, dtype=bool).ravel()
    if heat.shape != truth.shape:
        raise ImageError(f"heatmap has {heat.size} voxels but the region mask {truth.size}; put both on one grid")
    keep = np.ones_like(truth) if within is None else np.asarray(within, dtype=bool).ravel()
    if truth[keep].all() or not truth[keep].any():
        raise ImageError("the region mask is all-true or all-false where compared; the AUC is undefined")
    return float(roc_auc_score(truth[keep], heat[keep]))


def heatmap_to_image(heatmap: np.ndarray, affine: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Resample a heatmap (x, y, z) on the preprocessed grid (RAS ``affine``) onto ``reference``'s grid.

    Voxels of the reference outside the preprocessed cube get 0.
    """
    moving = metatensor_to_sitk(np.asarray(heatmap, dtype=np.float32), affine)
    ref = reference
    if ref.GetDimension() == 4:
        size = list(ref.GetSize())
        ref = sitk.Extract(ref, size[:3] + [0], [0, 0, 0, 0])
    return sitk.Resample(moving, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def save_heatmap(heatmap: np.ndarray, affine: np.ndarray, reference: sitk.Image, out_dir: str | os.PathLike,
                 name: str = "saliency", n_slices: int = 3, title: str | None = None,
                 outline: np.ndarray | None = None, zoom_voxels: int | None = None) -> dict[str, Path]:
    """Write ``{name}.nii.gz`` (aligned with ``reference``) and ``{name}.png`` (overlay on the
    ``n_slices`` axial slices with the largest positive heatmap sum; values below 5% of the
    maximum, so a signed map's negative part, are not drawn). Returns the two paths.

    ``outline``: a mask on the reference grid (z, y, x), e.g. the true region, drawn as a cyan
    contour. ``zoom_voxels``: show only this many voxels around the heatmap's peak per slice.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image = heatmap_to_image(heatmap, affine, reference)
    nii = out / f"{name}.nii.gz"
    sitk.WriteImage(image, str(nii))
    heat = sitk.GetArrayFromImage(image)  # (z, y, x)
    ref = reference if reference.GetDimension() == 3 else sitk.Extract(
        reference, list(reference.GetSize()[:3]) + [0], [0, 0, 0, reference.GetSize()[3] - 1])
    anatomy = sitk.GetArrayFromImage(ref).astype(float)
    # slices with the most positive heat (a signed map's negative part is not drawn)
    order = np.argsort(-np.clip(heat, 0, None).reshape(heat.shape[0], -1).sum(1))[:max(1, n_slices)]
    fig, axes = plt.subplots(1, len(order), figsize=(3.2 * len(order), 3.4), squeeze=False)
    lo, hi = np.percentile(anatomy, [1, 99])
    if outline is not None and np.asarray(outline).shape != heat.shape:
        raise ImageError(f"outline has shape {np.asarray(outline).shape}, the reference grid (z, y, x) {heat.shape}")
    window = (slice(None), slice(None))
    if zoom_voxels:
        _, cy, cx = np.unravel_index(int(np.argmax(heat)), heat.shape)
        half = zoom_voxels // 2
        window = (slice(max(cy - half, 0), cy + half), slice(max(cx - half, 0), cx + half))
    for ax, z in zip(axes[0], sorted(order)):
        ax.imshow(anatomy[z][window], cmap="gray", vmin=lo, vmax=hi, origin="lower")
        ax.imshow(np.ma.masked_less(heat[z][window], 0.05 * max(heat.max(), 1e-12)), cmap="inferno", alpha=0.55,
                  origin="lower", vmin=0, vmax=max(heat.max(), 1e-12))
        if outline is not None and np.asarray(outline)[z][window].any():
            ax.contour(np.asarray(outline)[z][window].astype(float), levels=[0.5], colors="cyan", linewidths=1.0,
                       origin="lower")
        ax.set_title(f"slice z={z}")
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    png = out / f"{name}.png"
    fig.savefig(png, dpi=80)
    plt.close(fig)
    return {"nifti": nii, "png": png}


__all__ = ["METHODS", "ImagePredictor", "gradient_saliency", "occlusion_saliency", "integrated_gradients",
           "integrated_gradient_saliency", "saliency_map",
           "heatmap_auc", "heatmap_to_image", "save_heatmap"]
