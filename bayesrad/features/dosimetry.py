"""Dose-volume histograms and dosimetric features from a dose grid and structure masks.

A structure mask whose grid differs from the dose grid is resampled onto the dose grid with
nearest-neighbour interpolation (labels must stay labels), so every dose voxel counts once
with the dose grid's voxel volume.

Conventions (as in the DVH literature, e.g. ICRU 83):

- ``Dx`` (Gy): the minimum dose received by the hottest ``x`` % of the structure volume,
  computed on voxels without interpolation, so it is exact for a voxelised dose.
- ``Vx`` (%): the percentage of the structure volume receiving at least ``x`` Gy.
- EQD2 (Gy): the linear-quadratic equivalent dose in 2-Gy fractions, voxel by voxel,
  ``EQD2 = D (d + a/b) / (2 + a/b)`` with ``d = D / n_fractions`` the dose per fraction.
- gEUD (Gy): Niemierko's generalised equivalent uniform dose ``(mean_i D_i^a)^(1/a)``
  (a = 1: mean dose; a large: tends to the maximum; a negative, for targets: towards the minimum).

Arrays are indexed (z, y, x); spacing is (x, y, z) in mm as SimpleITK gives it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk

from bayesrad.data.readers import (
    check_geometry,
    image_to_array,
    parse_labels,
    read_image,
    resample_to,
)
from bayesrad.errors import FeatureError, ImageError, ImageGeometryError

DEFAULT_D_LEVELS_PCT: tuple[float, ...] = (2.0, 50.0, 95.0, 98.0)
DEFAULT_V_LEVELS_GY: tuple[float, ...] = (5.0, 20.0)

# Dose grids from treatment planning systems carry tiny negative values from interpolation;
# below this a negative dose is a real error (wrong units or a corrupt file).
_NEGATIVE_DOSE_TOLERANCE_GY = 1e-3


def _who(patient_id: str | None, roi: str | None = None) -> str:
    parts = []
    if patient_id is not None:
        parts.append(f"patient {patient_id!r}")
    if roi is not None:
        parts.append(f"structure {roi!r}")
    return (", ".join(parts) + ": ") if parts else ""


def _level_name(value: float) -> str:
    """20 -> '20', 20.5 -> '20p5' (a column-name-safe number)."""
    text = f"{float(value):g}"
    return text.replace(".", "p").replace("-", "m")


def _snake(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")


def eqd2(dose_gy: np.ndarray | float, alpha_beta_gy: float, n_fractions: int) -> np.ndarray:
    """Equivalent dose in 2-Gy fractions (Gy), element-wise.

    ``dose_gy``: total physical dose (Gy), any shape; ``alpha_beta_gy``: the tissue's
    alpha/beta ratio (Gy, e.g. 10 for tumours, 3 for late-responding normal tissue);
    ``n_fractions``: number of equal fractions the total dose was given in.
    """
    if not alpha_beta_gy > 0:
        raise FeatureError(f"alpha_beta_gy must be positive (got {alpha_beta_gy!r}); typical values are 3 or 10 Gy")
    if int(n_fractions) != n_fractions or n_fractions < 1:
        raise FeatureError(f"n_fractions must be a positive integer (got {n_fractions!r})")
    dose = np.asarray(dose_gy, dtype=float)
    dose_per_fraction = dose / float(n_fractions)
    return dose * (dose_per_fraction + alpha_beta_gy) / (2.0 + alpha_beta_gy)


def geud(dose_gy: np.ndarray, a: float) -> float:
    """Generalised equivalent uniform dose (Gy) of equal-volume voxel doses ``dose_gy`` (1D).

    ``a`` is the volume-effect parameter (a = 1 gives the mean dose). For a < 0 a voxel
    with zero dose drives gEUD to 0, the mathematical limit.
    """
    doses = np.asarray(dose_gy, dtype=float).ravel()
    if doses.size == 0:
        raise FeatureError("gEUD of an empty structure is undefined; check the structure mask")
    if a == 0 or not math.isfinite(a):
        raise FeatureError(f"gEUD parameter a must be finite and nonzero (got {a!r}); a=1 is the mean dose")
    if a < 0 and np.any(doses <= 0):
        return 0.0
    # Scale by the maximum so that large |a| does not overflow.
    scale = float(doses.max())
    if scale <= 0:
        return 0.0
    return float(scale * np.mean((doses / scale) ** a) ** (1.0 / a))


def dose_at_volume(dose_gy: np.ndarray, volume_pct: float) -> float:
    """``D_x`` (Gy): minimum dose to the hottest ``volume_pct`` % of equal-volume voxels."""
    if not 0 < volume_pct <= 100:
        raise FeatureError(f"D_x needs 0 < x <= 100 % (got {volume_pct!r})")
    doses = np.sort(np.asarray(dose_gy, dtype=float).ravel())[::-1]
    # The 1e-9 keeps exact products such as 95 % of 100 voxels from rounding up to 96.
    n_hottest = max(1, math.ceil(volume_pct / 100.0 * doses.size - 1e-9))
    return float(doses[n_hottest - 1])


def volume_at_dose(dose_gy: np.ndarray, threshold_gy: float) -> float:
    """``V_x`` (%): percentage of equal-volume voxels receiving at least ``threshold_gy`` Gy."""
    doses = np.asarray(dose_gy, dtype=float).ravel()
    return float(100.0 * np.count_nonzero(doses >= threshold_gy) / doses.size)


def dose_volume_histogram(
    dose_gy: np.ndarray, voxel_volume_cc: float = 1.0, bin_width_gy: float = 0.1
) -> pd.DataFrame:
    """Cumulative DVH of a structure's voxel doses (1D array, Gy).

    Returns a DataFrame with columns ``dose_gy`` (bin edges from 0 to above the maximum,
    step ``bin_width_gy``), ``volume_pct`` (percentage of the structure receiving at least
    that dose) and ``volume_cc`` (the same in cm^3, with ``voxel_volume_cc`` per voxel).
    """
    doses = np.asarray(dose_gy, dtype=float).ravel()
    if doses.size == 0:
        raise FeatureError("the DVH of an empty structure is undefined; check the structure mask")
    if not bin_width_gy > 0:
        raise FeatureError(f"bin_width_gy must be positive (got {bin_width_gy!r})")
    edges = np.arange(0.0, doses.max() + 2 * bin_width_gy, bin_width_gy)
    sorted_doses = np.sort(doses)
    at_least = doses.size - np.searchsorted(sorted_doses, edges, side="left")
    return pd.DataFrame(
        {
            "dose_gy": edges,
            "volume_pct": 100.0 * at_least / doses.size,
            "volume_cc": at_least * voxel_volume_cc,
        }
    )


def dvh_metrics(
    dose_gy: np.ndarray,
    *,
    voxel_volume_cc: float = 1.0,
    d_levels_pct: Sequence[float] = DEFAULT_D_LEVELS_PCT,
    v_levels_gy: Sequence[float] = DEFAULT_V_LEVELS_GY,
    alpha_beta_gy: float | None = None,
    n_fractions: int | None = None,
    geud_a: float | None = None,
) -> dict[str, float]:
    """Dosimetric features of one structure from its voxel doses (1D array, Gy).

    Keys: ``volume_cc``, ``mean_gy``, ``max_gy``, ``min_gy``, ``d<x>_gy`` for each
    ``d_levels_pct``, ``v<x>_pct`` for each ``v_levels_gy``; with ``geud_a``: ``geud_gy``;
    with ``alpha_beta_gy`` and ``n_fractions``: ``eqd2_mean_gy``, ``eqd2_max_gy``,
    ``eqd2_d<x>_gy`` and (with ``geud_a``) ``eqd2_geud_gy``.
    """
    doses = np.asarray(dose_gy, dtype=float).ravel()
    if doses.size == 0:
        raise FeatureError("dosimetric features of an empty structure are undefined; check the structure mask")
    features: dict[str, float] = {
        "volume_cc": float(doses.size * voxel_volume_cc),
        "mean_gy": float(doses.mean()),
        "max_gy": float(doses.max()),
        "min_gy": float(doses.min()),
    }
    for level in d_levels_pct:
        features[f"d{_level_name(level)}_gy"] = dose_at_volume(doses, level)
    for level in v_levels_gy:
        features[f"v{_level_name(level)}_pct"] = volume_at_dose(doses, level)
    if geud_a is not None:
        features["geud_gy"] = geud(doses, geud_a)
    if (alpha_beta_gy is None) != (n_fractions is None):
        raise FeatureError(
            "EQD2 needs both alpha_beta_gy and n_fractions; give both (e.g. alpha_beta_gy=3, n_fractions=30) or neither"
        )
    if alpha_beta_gy is not None:
        eqd2_doses = eqd2(doses, alpha_beta_gy, n_fractions)
        features["eqd2_mean_gy"] = float(eqd2_doses.mean())
        features["eqd2_max_gy"] = float(eqd2_doses.max())
        for level in d_levels_pct:
            features[f"eqd2_d{_level_name(level)}_gy"] = dose_at_volume(eqd2_doses, level)
        if geud_a is not None:
            features["eqd2_geud_gy"] = geud(eqd2_doses, geud_a)
    return features


def _per_roi(value, roi: str, what: str):
    """A setting given either once for all structures or as {roi: value}."""
    if isinstance(value, Mapping):
        if roi in value:
            return value[roi]
        if "default" in value:
            return value["default"]
        raise FeatureError(
            f"{what} has no entry for structure {roi!r} (entries: {sorted(value)}); add it or a 'default' entry"
        )
    return value


def _as_image(image, spacing_mm, what: str, patient_id) -> sitk.Image:
    if isinstance(image, sitk.Image):
        return image
    array = np.asarray(image)
    if array.ndim != 3:
        raise FeatureError(f"{_who(patient_id)}{what} must be a 3D (z, y, x) array or a SimpleITK image (got shape {array.shape})")
    out = sitk.GetImageFromArray(array)
    out.SetSpacing(tuple(float(s) for s in spacing_mm))
    return out


def dose_features(
    dose,
    masks: Mapping[str, object],
    *,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
    patient_id: str | None = None,
    prefix: str = "dose",
    d_levels_pct: Sequence[float] = DEFAULT_D_LEVELS_PCT,
    v_levels_gy: Sequence[float] = DEFAULT_V_LEVELS_GY,
    alpha_beta_gy: float | Mapping[str, float] | None = None,
    n_fractions: int | None = None,
    geud_a: float | Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Dosimetric features of one patient: ``{"<prefix>_<roi>_<feature>": value}``.

    ``dose``: the dose grid (Gy) as a SimpleITK image or a (z, y, x) array; ``masks``:
    ``{roi_name: mask}``, each a SimpleITK label image (nonzero = inside; resampled onto the
    dose grid with nearest neighbour when its geometry differs) or a boolean (z, y, x)
    array on the dose grid. ``spacing_mm`` (x, y, z) is used only for arrays.
    ``alpha_beta_gy`` and ``geud_a`` may be per structure (``{roi: value}``, optional
    ``"default"``). Feature names are those of :func:`dvh_metrics`.

    Raises ``ImageError`` for NaN or negative doses and for a structure left empty on the
    dose grid, ``ImageGeometryError`` for a mask array whose shape differs from the dose.
    """
    dose_image = _as_image(dose, spacing_mm, "the dose grid", patient_id)
    if dose_image.GetDimension() != 3:
        raise ImageError(f"{_who(patient_id)}the dose grid must be 3D (got {dose_image.GetDimension()}D)")
    dose_array = image_to_array(dose_image, dtype=np.float64)
    if not np.all(np.isfinite(dose_array)):
        raise ImageError(f"{_who(patient_id)}the dose grid holds NaN or infinite voxels; re-export the dose from the planning system")
    if dose_array.min() < -_NEGATIVE_DOSE_TOLERANCE_GY:
        raise ImageError(
            f"{_who(patient_id)}the dose grid has negative doses (min {dose_array.min():.4g}); "
            "check that it is a physical dose in Gy (DICOM RTDOSE needs DoseGridScaling applied)"
        )
    dose_array = np.clip(dose_array, 0.0, None)
    voxel_volume_cc = float(np.prod(dose_image.GetSpacing())) / 1000.0
    if not masks:
        raise FeatureError(f"{_who(patient_id)}no structure masks given; pass masks={{'gtv': mask, ...}}")

    features: dict[str, float] = {}
    for roi, mask in masks.items():
        inside = _mask_on_dose_grid(mask, dose_image, dose_array.shape, roi, patient_id)
        if not inside.any():
            raise ImageError(
                f"{_who(patient_id, roi)}the structure has no voxel on the dose grid "
                "(empty mask, or the structure lies outside the dose grid); check the structure set"
            )
        roi_features = dvh_metrics(
            dose_array[inside],
            voxel_volume_cc=voxel_volume_cc,
            d_levels_pct=d_levels_pct,
            v_levels_gy=v_levels_gy,
            alpha_beta_gy=_per_roi(alpha_beta_gy, roi, "alpha_beta_gy"),
            n_fractions=n_fractions if _per_roi(alpha_beta_gy, roi, "alpha_beta_gy") is not None else None,
            geud_a=_per_roi(geud_a, roi, "geud_a"),
        )
        stem = f"{prefix}_{_snake(roi)}"
        features.update({f"{stem}_{name}": value for name, value in roi_features.items()})
    return features


def _mask_on_dose_grid(mask, dose_image: sitk.Image, dose_shape, roi: str, patient_id) -> np.ndarray:
    if isinstance(mask, sitk.Image):
        try:
            check_geometry(dose_image, mask, patient_id=patient_id, names=("dose grid", f"mask of {roi!r}"))
        except ImageGeometryError:
            outside = _fraction_outside(mask, dose_image)
            if outside > 0:
                raise ImageGeometryError(
                    f"{_who(patient_id, roi)}{100 * outside:.1f} % of the structure lies outside the dose grid, "
                    "so its DVH would be truncated; export the dose grid over the whole structure"
                ) from None
            mask = resample_to(mask, dose_image, interpolator="nearest")
        return sitk.GetArrayViewFromImage(mask) != 0
    array = np.asarray(mask)
    if array.shape != tuple(dose_shape):
        raise ImageGeometryError(
            f"{_who(patient_id, roi)}mask shape {array.shape} differs from dose grid shape {tuple(dose_shape)}; "
            "pass SimpleITK images so the mask can be resampled onto the dose grid"
        )
    return array != 0


def _fraction_outside(mask: sitk.Image, dose_image: sitk.Image) -> float:
    """Share of the mask's voxel centres that fall outside the dose grid's voxels."""
    index_zyx = np.argwhere(sitk.GetArrayViewFromImage(mask) != 0)
    if len(index_zyx) == 0:
        return 0.0
    index_xyz = index_zyx[:, ::-1].astype(float)
    mask_direction = np.asarray(mask.GetDirection()).reshape(3, 3)
    points = np.asarray(mask.GetOrigin()) + (index_xyz * np.asarray(mask.GetSpacing())) @ mask_direction.T
    dose_direction = np.asarray(dose_image.GetDirection()).reshape(3, 3)
    # Direction matrices are orthonormal: the inverse is the transpose.
    dose_index = ((points - np.asarray(dose_image.GetOrigin())) @ dose_direction) / np.asarray(dose_image.GetSpacing())
    size = np.asarray(dose_image.GetSize())
    inside = np.all((dose_index >= -0.5) & (dose_index <= size - 0.5), axis=1)
    return float(1.0 - inside.mean())


def _split_rois(row: pd.Series) -> dict[str, tuple[int, ...] | None]:
    """ROI names and their labels from an images-table row (``roi`` "gtv;lung", ``mask_labels`` "1;2")."""
    labels = parse_labels(row.get("mask_labels"))
    roi_text = row.get("roi")
    names = [r.strip() for r in str(roi_text).split(";") if r.strip()] if isinstance(roi_text, str) else []
    if labels is not None and len(names) == len(labels) and len(labels) > 1:
        return {name: (label,) for name, label in zip(names, labels)}
    name = names[0] if len(names) == 1 else ("roi" if not names else "_".join(names))
    return {name: labels}


def patient_dose_features(
    rows: pd.DataFrame, patient_id: str | None = None, **settings
) -> dict[str, float]:
    """Dosimetric features of one patient from their rows of ``cohort.images``.

    Uses the ``DOSE`` row's ``path`` as the dose grid; each structure is a row (of any
    modality, the DOSE row included) with a ``mask_path``, named by its ``roi`` column
    (``roi`` "gtv;lung" with ``mask_labels`` "1;2" names two labels of one mask file).
    ``settings`` are passed to :func:`dose_features`.
    """
    dose_rows = rows[rows["modality"].astype(str).str.upper() == "DOSE"]
    if dose_rows.empty:
        raise FeatureError(f"{_who(patient_id)}no DOSE image in the images table; add the dose grid with modality 'DOSE'")
    dose_image = read_image(dose_rows.iloc[0]["path"], patient_id)
    masks: dict[str, sitk.Image] = {}
    structure_rows = rows[rows["mask_path"].fillna("").astype(str) != ""]
    label_images: dict[str, sitk.Image] = {}  # several rows (CT, PET, DOSE) often share one mask file
    for _, row in structure_rows.iterrows():
        for roi, labels in _split_rois(row).items():
            if roi in masks:
                continue
            path = str(row["mask_path"])
            if path not in label_images:
                label_images[path] = read_image(path, patient_id)
            label_image = label_images[path]
            values = sitk.GetArrayViewFromImage(label_image)
            selected = values != 0 if labels is None else np.isin(values, labels)
            mask = sitk.GetImageFromArray(selected.astype(np.uint8))
            mask.CopyInformation(label_image)
            masks[roi] = mask
    if not masks:
        raise FeatureError(
            f"{_who(patient_id)}no structure mask (mask_path) for the dose grid; add structure masks to the images table"
        )
    return dose_features(dose_image, masks, patient_id=patient_id, **settings)


def extract_dosimetry(cohort, **settings) -> pd.DataFrame:
    """The dosimetry block of a cohort: one row per patient with a DOSE image.

    ``cohort``: a ``bayesrad.Cohort`` whose ``images`` table holds a ``DOSE`` row per
    patient and structure masks (see :func:`patient_dose_features`); ``settings`` go to
    :func:`dose_features`. Returns a DataFrame indexed by ``patient_id``, columns
    ``dose_<roi>_<feature>``. Raises on the first bad patient, naming it (the cohort runner
    in ``bayesrad.features.extract`` collects failures instead).
    """
    images = getattr(cohort, "images", None)
    if images is None or len(images) == 0:
        raise FeatureError("the cohort has no images table; build it with images (a manifest) to extract dosimetry")
    has_dose = images["modality"].astype(str).str.upper() == "DOSE"
    rows = {}
    for patient_id in pd.unique(images.loc[has_dose, "patient_id"]):
        patient_rows = images[images["patient_id"] == patient_id]
        rows[str(patient_id)] = patient_dose_features(patient_rows, patient_id=str(patient_id), **settings)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "patient_id"
    return table


__all__ = [
    "eqd2",
    "geud",
    "dose_at_volume",
    "volume_at_dose",
    "dose_volume_histogram",
    "dvh_metrics",
    "dose_features",
    "patient_dose_features",
    "extract_dosimetry",
]
