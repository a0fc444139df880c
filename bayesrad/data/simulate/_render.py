"""3D image synthesis shared by the scenarios: grids, lesion shapes, textures, PSF, dose.

Arrays are (z, y, x) like SimpleITK's; physical coordinates in mm with the grid centred on 0.
Everything is vectorised numpy/scipy on one patient's volume (48^3 = 110k voxels), so a
patient renders in tens of milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

# PET scanners resolve about 6 mm full width at half maximum; sigma = FWHM / 2.355.
PET_PSF_FWHM_MM = 6.0


class Grid:
    """An isotropic cubic voxel grid of ``size`` voxels spanning ``field_of_view_mm``.

    Attributes: ``spacing_mm`` (float), ``spacing_xyz`` / ``origin_xyz`` (SimpleITK order, mm),
    ``z, y, x``: broadcastable coordinate arrays (mm) of shapes (n,1,1), (1,n,1), (1,1,n).
    """

    def __init__(self, size: int, field_of_view_mm: float):
        self.size = int(size)
        self.spacing_mm = float(field_of_view_mm) / self.size
        centre = (np.arange(self.size) - (self.size - 1) / 2.0) * self.spacing_mm
        self.z = centre[:, None, None]
        self.y = centre[None, :, None]
        self.x = centre[None, None, :]
        self.spacing_xyz = (self.spacing_mm,) * 3
        self.origin_xyz = (float(centre[0]),) * 3
        self.shape = (self.size,) * 3

    @property
    def voxel_volume_ml(self) -> float:
        return self.spacing_mm**3 / 1000.0

    def sigma_voxels(self, sigma_mm: float) -> float:
        return sigma_mm / self.spacing_mm


@dataclass
class PatientImages:
    """One patient's rendered volumes and how they enter the images table.

    ``arrays``: file stem -> (array, kind) with kind ``"ct"`` (int16 HU), ``"float"``
    (float32) or ``"mask"`` (uint8). ``rows``: dicts with ``modality, file, mask_file,
    mask_labels, roi, units, frame_times``. ``truth_arrays``: truth-only volumes.
    ``lesions``: per-lesion truth records. ``frame_spacing_s``: 4th-axis spacing of 4D images.
    """

    arrays: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)
    truth_arrays: dict = field(default_factory=dict)
    lesions: list = field(default_factory=list)
    frame_spacing_s: float | None = None


def smooth_noise(rng: np.random.Generator, shape, sigma_voxels: float) -> np.ndarray:
    """Gaussian random field with unit standard deviation and correlation length ``sigma_voxels``."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_voxels, mode="wrap")
    return field_ / (field_.std() + 1e-12)


def _direction_terms(a, b, c) -> list:
    """Polynomials of degree 1-3 of a unit direction (a, b, c), the shape modes of a lobulated blob."""
    return [a, b, c, a * b, a * c, b * c, a**2 - b**2, 3 * c**2 - 1, a * b * c, a**3 - 3 * a * b**2]


def _sphere_term_sd(n_points: int = 4000) -> np.ndarray:
    """Standard deviation of each direction term over the unit sphere (Fibonacci points)."""
    k = np.arange(n_points) + 0.5
    polar = np.arccos(1 - 2 * k / n_points)
    azimuth = np.pi * (1 + 5**0.5) * k
    a, b, c = np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)
    return np.array([t.std() for t in _direction_terms(a, b, c)])


# So that the shape field f has unit sd over directions whatever the random coefficients' mix.
_TERM_SD = _sphere_term_sd()


def lobulated_blob(grid: Grid, centre_mm, volume_ml: float, lobulation: float, rng: np.random.Generator,
                   elongation: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """A tumour-like solid: an ellipsoid of ``volume_ml`` whose radius varies with direction.

    The radius is ``r0 * (1 + lobulation * f(u))`` with ``f`` a random polynomial of the unit
    direction ``u`` (degrees 1-3, unit sd over the sphere); larger ``lobulation`` gives a less
    spherical, more irregular shape. Returns (mask bool (z,y,x), normalised radial distance
    ``d / r(u)``: 0 at the centre, 1 on the surface).
    """
    cz, cy, cx = centre_mm
    axes = np.exp(rng.normal(0.0, elongation, 3))
    axes /= np.prod(axes) ** (1 / 3)
    coef = rng.standard_normal(len(_TERM_SD)) / _TERM_SD / np.sqrt(len(_TERM_SD))
    r0 = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1 / 3)
    # Only the box that can hold the blob (radius at most 2 r0 along the longest axis) is computed.
    reach = 2.0 * r0 * axes.max() + grid.spacing_mm
    box = tuple(slice(*np.searchsorted(axis.ravel(), (c - reach, c + reach))) for axis, c in
                zip((grid.z, grid.y, grid.x), (cz, cy, cx)))
    rel = np.full(grid.shape, np.inf, dtype=np.float32)
    dz = (grid.z[box[0]] - cz) / axes[0]
    dy = (grid.y[:, box[1]] - cy) / axes[1]
    dx = (grid.x[:, :, box[2]] - cx) / axes[2]
    dist = np.sqrt(dz**2 + dy**2 + dx**2) + 1e-6
    f = sum(c * t for c, t in zip(coef, _direction_terms(dz / dist, dy / dist, dx / dist)))
    radius = r0 * np.clip(1.0 + lobulation * f, 0.3, 2.0)
    rel[box] = dist / radius
    return rel <= 1.0, rel


def pet_blur(grid: Grid, volume: np.ndarray, fwhm_mm: float = PET_PSF_FWHM_MM) -> np.ndarray:
    """Blur with the scanner's Gaussian point-spread function (FWHM in mm)."""
    return ndimage.gaussian_filter(volume, grid.sigma_voxels(fwhm_mm / 2.355), mode="nearest")


def pet_noise(rng: np.random.Generator, suv: np.ndarray, relative_sd: float = 0.08) -> np.ndarray:
    """Counting noise: sd grows with the square root of the activity (SUV >= 0)."""
    return np.maximum(suv + rng.standard_normal(suv.shape) * relative_sd * np.sqrt(np.maximum(suv, 0.0)), 0.0)


def dose_grid(grid: Grid, target: np.ndarray, dose_mean_gy: float, d95_gy: float, rng: np.random.Generator,
              organ: np.ndarray | None = None, organ_v20_pct: float | None = None,
              margin_mm: float = 5.0, falloff_mm: float = 20.0, bath_gy: float = 2.0) -> np.ndarray:
    """A radiotherapy dose distribution (Gy) whose DVH has the given metrics.

    Inside ``target`` the dose is an affine map of a cold-edge field (distance to the surface
    plus smooth noise) chosen so that the voxel mean is exactly ``dose_mean_gy`` and the 5th
    percentile (D95) exactly ``d95_gy``. Outside it keeps the edge dose over a ``margin_mm``
    PTV margin, then falls off exponentially to a low-dose bath. With ``organ`` (a mask of an
    organ at risk) and ``organ_v20_pct``, the fall-off length is chosen so that exactly that
    percentage of the organ's voxels receives at least 20 Gy (as far as the margin allows).
    Returns the dose array (z, y, x).
    """
    sampling = (grid.spacing_mm,) * 3
    outside = ndimage.distance_transform_edt(~target, sampling=sampling)
    # Depth inside the target only matters within its bounding box (padded so the edge counts).
    box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in ndimage.find_objects(target.astype(np.uint8))[0])
    inside = ndimage.distance_transform_edt(np.pad(target[box], 1), sampling=sampling)[1:-1, 1:-1, 1:-1]
    noise = smooth_noise(rng, inside.shape, 1.5)
    local = target[box]
    values = np.minimum(inside[local], 10.0) / 10.0 + 0.15 * noise[local]
    centre = values.mean()
    low = np.percentile(values, 5)
    scale = (d95_gy - dose_mean_gy) / (low - centre)
    dose_in = dose_mean_gy + scale * (values - centre)
    edge = np.percentile(dose_in, 1)
    # Beam-path irregularity (smooth, +-2 mm) also keeps voxel distances from tying, so a
    # dose level splits the organ's voxels exactly where asked.
    beyond = np.maximum(outside - margin_mm + 2.0 * smooth_noise(rng, grid.shape, 2.0), 0.0)
    shoulder = 1.0 - 0.03 * np.minimum(outside / margin_mm, 1.0)
    if organ is not None and organ_v20_pct is not None:
        falloff_mm = _falloff_for_v20(beyond[organ], shoulder[organ], edge, bath_gy, organ_v20_pct)
    dose = bath_gy + (edge - bath_gy) * np.exp(-beyond / falloff_mm) * shoulder
    dose_box = dose[box]
    dose_box[local] = dose_in
    return dose


def _falloff_for_v20(beyond_mm: np.ndarray, shoulder: np.ndarray, edge_gy: float, bath_gy: float,
                     v20_pct: float) -> float:
    """Fall-off length (mm) that puts ``v20_pct`` % of the given voxels at >= 20 Gy.

    A voxel reaches 20 Gy when ``falloff >= beyond / log(shoulder / ratio)`` with
    ``ratio = (20 - bath) / (edge - bath)``; so the fall-off is the matching order statistic
    of those per-voxel thresholds (halfway to the next, so float32 rounding cannot flip one).
    """
    ratio = (20.0 - bath_gy) / (edge_gy - bath_gy)
    threshold = np.sort(beyond_mm / np.log(shoulder / ratio))
    k = int(round(v20_pct / 100.0 * threshold.size))
    if k <= 0:
        return 1e-3
    if k >= threshold.size:
        return 2.0 * threshold[-1] + 1.0
    return max(0.5 * (threshold[k - 1] + threshold[k]), 1e-3)
