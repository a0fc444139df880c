"""Radiomics with pyradiomics: per patient, per image modality, per ROI, with provenance.

Settings are pyradiomics parameter sets (``imageType``, ``setting``, ``featureClass``) given
as a preset name (see ``bayesrad/features/presets/README.md``: ``pyradiomics_default``,
``pet_suv``, ``mr_normalised``, ``ibsi_phantom``, ``ibsi_a`` ... ``ibsi_e``), a YAML file or
a dict. Every result carries the SHA-256 of the canonical settings (``settings_hash``) so a
feature value can always be traced to the exact configuration that produced it.

Multi-label masks (e.g. a whole-body organ segmentation) give one ROI per label. PET helpers
check that a PET is in SUV and delineate lesions by a fixed SUV threshold or by a fraction
(41 %) of SUVmax inside a region.

Conventions: SimpleITK images; arrays (z, y, x); spacing in mm; CT in HU, PET in SUV (g/mL).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import yaml

from bayesrad.data.readers import check_geometry, parse_labels, read_image
from bayesrad.errors import FeatureError, ImageError

PRESET_DIR = Path(__file__).with_name("presets")

#: Feature classes pyradiomics can compute on a 3D (or force2D) ROI.
FEATURE_CLASSES = ("shape", "shape2D", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")

#: Image filters (pyradiomics image types) that can be switched on with ``image_filters``.
IMAGE_FILTERS = ("Original", "LoG", "Wavelet", "Square", "SquareRoot", "Logarithm", "Exponential", "Gradient", "LBP2D", "LBP3D")

#: Highest plausible SUV in a patient (bladder / kidneys of FDG rarely exceed ~50-70);
#: a larger maximum means Bq/mL or counts, not SUV.
SUV_MAX_PLAUSIBLE = 100.0

_SUV_UNITS = {"suv", "suvbw", "suvlbm", "suvbsa", "g/ml", "g/cc"}


def available_presets() -> list[str]:
    """Names of the bundled presets (YAML files in ``bayesrad/features/presets``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_settings(settings: str | os.PathLike | Mapping | None = "pyradiomics_default",
                  image_filters: Mapping | None = None, **overrides) -> dict:
    """A complete pyradiomics parameter set from a preset name, a YAML path or a dict.

    ``image_filters`` adds pyradiomics image types, e.g. ``{"LoG": {"sigma": [1.0, 3.0]},
    "Wavelet": {}}`` (LoG sigma in mm). ``overrides`` replace entries of ``setting`` (e.g.
    ``binWidth=0.5``). Returns a dict with keys ``imageType``, ``setting``, ``featureClass``.
    Raises ``FeatureError`` for an unknown preset, an unreadable file, or unknown keys.
    """
    if settings is None:
        settings = "pyradiomics_default"
    if isinstance(settings, Mapping):
        params = copy.deepcopy(dict(settings))
    else:
        text = str(settings)
        path = Path(text)
        if not path.suffix and (PRESET_DIR / f"{text}.yaml").exists():
            path = PRESET_DIR / f"{text}.yaml"
        if not path.exists():
            raise FeatureError(
                f"radiomics settings {text!r} is neither a preset ({', '.join(available_presets())}) "
                f"nor an existing YAML file; pass one of those or a dict"
            )
        try:
            params = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise FeatureError(f"radiomics settings file {str(path)!r} is not valid UTF-8 YAML: "
                               f"{' '.join(str(exc).split())}") from exc
        except IsADirectoryError as exc:
            raise FeatureError(f"radiomics settings {str(path)!r} is a directory; pass a YAML file") from exc
        if not isinstance(params, dict):
            raise FeatureError(f"radiomics settings file {str(path)!r} must hold a mapping (imageType, "
                               f"setting, featureClass), not a {type(params).__name__}")
    for key, kind in (("imageType", dict), ("setting", dict), ("featureClass", dict)):
        value = params.get(key)
        if value is not None and not isinstance(value, kind):
            raise FeatureError(f"radiomics settings: {key!r} must be a mapping (got {value!r})")
    for key in ("imageType", "featureClass"):
        for name, options in (params.get(key) or {}).items():
            if key == "imageType" and options is not None and not isinstance(options, dict):
                raise FeatureError(f"radiomics settings: imageType {name!r} takes a mapping of options "
                                   f"(got {options!r})")
            if key == "featureClass" and options is not None and not isinstance(options, list):
                raise FeatureError(f"radiomics settings: featureClass {name!r} takes a list of feature "
                                   f"names or nothing (got {options!r})")
    unknown = set(params) - {"imageType", "setting", "featureClass", "voxelSetting"}
    if unknown:
        raise FeatureError(
            f"radiomics settings: unknown top-level key(s) {sorted(map(str, unknown))}; "
            f"use imageType, setting, featureClass (pyradiomics parameter file layout)"
        )
    params.setdefault("imageType", {"Original": {}})
    params["imageType"] = {k: dict(v or {}) for k, v in (params["imageType"] or {"Original": {}}).items()}
    params["setting"] = dict(params.get("setting") or {})
    params["featureClass"] = dict(params.get("featureClass") or {c: None for c in FEATURE_CLASSES if c != "shape2D"})
    for name, options in (image_filters or {}).items():
        if name not in IMAGE_FILTERS:
            raise FeatureError(f"unknown image filter {name!r}; use one of {', '.join(IMAGE_FILTERS)}")
        params["imageType"][name] = dict(options or {})
    params["setting"].update(overrides)
    bad_classes = set(params["featureClass"]) - set(FEATURE_CLASSES)
    if bad_classes:
        raise FeatureError(f"radiomics settings: unknown feature class(es) {sorted(map(str, bad_classes))}; use {FEATURE_CLASSES}")
    bad_types = set(params["imageType"]) - set(IMAGE_FILTERS)
    if bad_types:
        raise FeatureError(f"radiomics settings: unknown image type(s) {sorted(map(str, bad_types))}; use {IMAGE_FILTERS}")
    return params


def settings_hash(params: Mapping) -> str:
    """SHA-256 (first 16 hex digits) of a parameter set in canonical JSON (sorted keys).

    Two parameter sets that differ only in key order or YAML formatting hash the same; any
    change of a value, filter or feature list changes the hash.
    """
    canonical = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


_EXTRACTORS: dict[str, object] = {}


def _cached_extractor(params: Mapping, diagnostics: bool = False):
    """One extractor per settings hash and process: building one validates the parameter
    schema (tens of ms), which would otherwise be paid for every ROI of a cohort.

    Without ``diagnostics`` pyradiomics' ``additionalInfo`` is off: it hashes image and mask
    and computes label statistics for every ROI (about half the time on small ROIs) and does
    not change any feature value, so it is not part of the settings hash.
    """
    digest = f"{settings_hash(params)}:{int(diagnostics)}"
    if digest not in _EXTRACTORS:
        params = copy.deepcopy(dict(params))
        params["setting"] = {**params.get("setting", {}), "additionalInfo": bool(diagnostics)}
        _EXTRACTORS[digest] = make_extractor(params)
    return _EXTRACTORS[digest]


def make_extractor(params: Mapping):
    """A ``radiomics.featureextractor.RadiomicsFeatureExtractor`` configured by ``params``."""
    import radiomics
    from radiomics import featureextractor

    # pyradiomics resets its own log level on import; INFO/WARNING lines would flood a cohort run.
    radiomics.setVerbosity(logging.ERROR)
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    params = dict(params)
    # pyradiomics' loader requires each featureClass entry to be a list or None.
    params["featureClass"] = {k: (list(v) if v else None) for k, v in params["featureClass"].items()}
    try:
        return featureextractor.RadiomicsFeatureExtractor(params)
    except (ValueError, KeyError, TypeError) as exc:
        raise FeatureError(f"pyradiomics rejected the settings: {exc}; check the names against its documentation") from exc


def snake_case(name: str) -> str:
    """``original_glcm_MaximumProbability`` -> ``original_glcm_maximum_probability``."""
    # split lower->Upper ("MeanAbsolute"), digit->Word ("10Percentile") and ACRONYM->Word
    # ("3DDiameter"), but keep "3D" and "LLH" whole
    name = re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[0-9A-Z])(?=[A-Z][a-z])", "_", name)
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def _who(patient_id, modality=None, roi=None) -> str:
    parts = []
    if patient_id is not None:
        parts.append(f"patient {patient_id!r}")
    if modality:
        parts.append(f"modality {modality}")
    if roi is not None:
        parts.append(f"ROI {roi!r}")
    return (", ".join(parts) + ": ") if parts else ""


def _as_image(value, patient_id, what: str) -> sitk.Image:
    if isinstance(value, sitk.Image):
        return value
    if isinstance(value, (str, os.PathLike)):
        return read_image(value, patient_id)
    raise FeatureError(f"{_who(patient_id)}{what} must be a SimpleITK image or a file path, got {type(value).__name__}")


def _check_roi_voxels(image: sitk.Image, roi_mask: np.ndarray, patient_id, modality, roi) -> None:
    """Refuse an empty ROI and NaN/inf voxels inside it (pyradiomics would return NaN features)."""
    n_voxels = int(roi_mask.sum())
    if n_voxels == 0:
        raise ImageError(f"{_who(patient_id, modality, roi)}the mask has no voxel for this ROI; check the segmentation or mask_labels")
    values = sitk.GetArrayViewFromImage(image)[roi_mask]
    n_bad = int(np.count_nonzero(~np.isfinite(values)))
    if n_bad:
        raise ImageError(
            f"{_who(patient_id, modality, roi)}{n_bad} of {n_voxels} voxels inside the ROI are NaN or infinite; "
            f"fix the image export (or crop the ROI to valid voxels)"
        )


def roi_labels(mask: sitk.Image, labels=None, rois: str | Sequence[str] | None = None) -> dict[str, int]:
    """ROI name -> label value for a (multi-)label mask.

    ``labels`` ("1;2;5", a list or None) selects labels (None: every nonzero label present);
    ``rois`` names them in the same order ("gtv;lung", a list; None or a length mismatch:
    ``label_<k>``, or the single name when one label is selected).
    """
    wanted = parse_labels(labels)
    if wanted is None:
        present = np.unique(sitk.GetArrayViewFromImage(mask))
        wanted = tuple(int(v) for v in present if v != 0)
    return _name_labels(wanted, rois)


def _name_labels(wanted: Sequence[int], rois) -> dict[str, int]:
    if isinstance(rois, str):
        rois = [r.strip() for r in rois.split(";") if r.strip()]
    names = list(rois or [])
    if len(names) == len(wanted):
        return {str(name): int(label) for name, label in zip(names, wanted)}
    if len(wanted) == 1 and len(names) == 1:
        return {names[0]: int(wanted[0])}
    return {f"label_{label}": int(label) for label in wanted}


def radiomics_features(image, mask, label: int = 1, settings="pyradiomics_default", *,
                       patient_id: str | None = None, modality: str | None = None, roi: str | None = None,
                       image_filters: Mapping | None = None, diagnostics: bool = False,
                       extractor=None) -> dict[str, float]:
    """pyradiomics features of one ROI (voxels of ``mask`` equal to ``label``).

    ``image``/``mask``: SimpleITK images or file paths on the same grid (else
    ``ImageGeometryError``). Returns ``{pyradiomics feature name: value}`` (e.g.
    ``original_firstorder_Mean`` in the image's units); with ``diagnostics=True`` the
    ``diagnostics_*`` entries too. Raises ``ImageError`` for an empty ROI or NaN voxels in it.
    """
    image = _as_image(image, patient_id, "image")
    mask = _as_image(mask, patient_id, "mask")
    check_geometry(image, mask, patient_id=patient_id)
    roi_mask = sitk.GetArrayViewFromImage(mask) == label
    _check_roi_voxels(image, roi_mask, patient_id, modality, roi if roi is not None else f"label {label}")
    if extractor is None:
        extractor = _cached_extractor(load_settings(settings, image_filters), diagnostics)
    try:
        result = extractor.execute(image, mask, label=int(label))
    except (ValueError, RuntimeError, IndexError) as exc:
        raise FeatureError(f"{_who(patient_id, modality, roi)}pyradiomics failed: {exc}") from exc
    out = {}
    for key, value in result.items():
        if key.startswith("diagnostics_"):
            if diagnostics:
                out[key] = value
            continue
        out[key] = float(value)
    return out


def extract_radiomics(image, mask, settings="pyradiomics_default", *, labels=None, rois=None,
                      modality: str = "CT", patient_id: str | None = None,
                      image_filters: Mapping | None = None) -> pd.DataFrame:
    """Features of every ROI of one image, long format.

    ``labels``/``rois`` as in :func:`roi_labels` (a multi-label mask gives one row per organ).
    Returns a DataFrame with one row per ROI: columns ``patient_id, modality, roi, label,
    settings_hash`` then the pyradiomics features (original names).
    """
    image = _as_image(image, patient_id, "image")
    mask = _as_image(mask, patient_id, "mask")
    check_geometry(image, mask, patient_id=patient_id)
    params = load_settings(settings, image_filters)
    digest = settings_hash(params)
    extractor = _cached_extractor(params)
    rows = []
    for roi, label in roi_labels(mask, labels, rois).items():
        features = radiomics_features(image, mask, label, patient_id=patient_id, modality=modality, roi=roi,
                                      extractor=extractor)
        rows.append({"patient_id": patient_id, "modality": modality, "roi": roi, "label": label,
                     "settings_hash": digest, **features})
    if not rows:
        raise ImageError(f"{_who(patient_id, modality)}the mask holds no labelled voxel; check the segmentation")
    return pd.DataFrame(rows)


def wide_columns(modality: str, roi: str, features: Mapping[str, float]) -> dict[str, float]:
    """``{pyradiomics name: v}`` -> ``{<modality>_<roi>_<feature>: v}`` in lower snake case."""
    # modality and ROI are names ("MR_T1C", "GTV"), not CamelCase: only lower-cased and cleaned
    prefix = "_".join(re.sub(r"[^0-9a-zA-Z]+", "_", str(part)).strip("_").lower() for part in (modality, roi))
    return {f"{prefix}_{snake_case(name)}": float(value) for name, value in features.items()}


def _settings_for(settings, modality: str):
    """Per-modality settings: a mapping keyed by modality (e.g. {"CT": ..., "PET": ...}) or one set."""
    if isinstance(settings, Mapping) and not ({"imageType", "setting", "featureClass"} & set(settings)):
        for key in (modality, modality.split("_")[0], "default"):
            if key in settings:
                return settings[key]
        return DEFAULT_MODALITY_SETTINGS.get(modality.split("_")[0].upper(), "pyradiomics_default")
    return settings


#: Preset per image modality when none is given: bins must suit the intensity unit.
DEFAULT_MODALITY_SETTINGS = {"CT": "pyradiomics_default", "PET": "pet_suv", "MR": "mr_normalised"}


def radiomics_tasks(rows: pd.DataFrame, settings=None, image_filters=None,
                    modalities: Sequence[str] | None = None) -> list[dict]:
    """The ROI-level work units of one patient: one dict per (image row, ROI).

    Each has ``patient_id, modality, roi, label, path, mask_path, units, params, settings_hash``.
    Rows without ``mask_path``, DOSE grids and 4D dynamic PET are skipped (dosimetry and
    kinetics handle those). ROI names come from the images table (``roi``, ``mask_labels``);
    an unnamed multi-label mask is read to find its labels.
    """
    tasks = []
    for _, row in rows.iterrows():
        modality = str(row["modality"])
        base = modality.split("_")[0].upper()
        if base in ("DOSE", "DPET") or modalities is not None and modality not in modalities and base not in modalities:
            continue
        mask_path = row.get("mask_path")
        if not isinstance(mask_path, str) or not mask_path:
            continue
        chosen = settings if settings is not None else DEFAULT_MODALITY_SETTINGS
        params = load_settings(_settings_for(chosen, modality), image_filters)
        labels = parse_labels(row.get("mask_labels"))
        roi_text = row.get("roi") if isinstance(row.get("roi"), str) else ""
        names = [r.strip() for r in roi_text.split(";") if r.strip()]
        if labels is None or (len(names) != len(labels) and not (len(labels) == 1 and len(names) == 1)):
            # The labels of an unnamed whole-body segmentation are only known from the file.
            rois = roi_labels(read_image(mask_path, row["patient_id"]), labels, names)
        else:
            rois = _name_labels(labels, names)
        for roi, label in rois.items():
            tasks.append({
                "patient_id": str(row["patient_id"]), "modality": modality, "roi": roi, "label": int(label),
                "path": str(row["path"]), "mask_path": mask_path, "units": str(row.get("units") or ""),
                "params": params, "settings_hash": settings_hash(params),
            })
    return tasks


def run_radiomics_task(task: Mapping) -> dict[str, float]:
    """Compute one work unit of :func:`radiomics_tasks`; wide column names. PET is SUV-checked."""
    patient_id, modality = task["patient_id"], task["modality"]
    image = read_image(task["path"], patient_id)
    if modality.split("_")[0].upper() == "PET":
        check_suv(image, units=task.get("units"), patient_id=patient_id)
    mask = read_image(task["mask_path"], patient_id)
    features = radiomics_features(image, mask, task["label"], task["params"], patient_id=patient_id,
                                  modality=modality, roi=task["roi"])
    return wide_columns(modality, task["roi"], features)


def patient_radiomics_features(rows: pd.DataFrame, patient_id: str | None = None, settings=None,
                               image_filters=None) -> dict[str, float]:
    """Radiomics of one patient from their rows of ``cohort.images`` (every image, every ROI).

    ``settings``: one parameter set for all modalities, or a mapping ``modality -> settings``
    (default :data:`DEFAULT_MODALITY_SETTINGS`: CT in HU, PET in SUV, MR normalised).
    Returns ``{<modality>_<roi>_<feature>: value}``.
    """
    out: dict[str, float] = {}
    for task in radiomics_tasks(rows, settings, image_filters):
        out.update(run_radiomics_task(task))
    if not out:
        raise FeatureError(f"{_who(patient_id)}no image with a mask (mask_path) to extract radiomics from; add masks to the images table")
    return out


# --------------------------------------------------------------------------------- PET helpers

def check_suv(pet, units: str | None = None, patient_id: str | None = None, on_error: str = "raise",
              max_plausible_suv: float = SUV_MAX_PLAUSIBLE) -> bool:
    """Check that a PET image is in SUV before SUV features or thresholds are computed.

    Refuses (``on_error="raise"``: ``ImageError``; ``"warn"``: a ``UserWarning`` and False) when
    ``units`` names something other than SUV (e.g. Bq/mL, counts) or when the voxel values are
    implausible for SUV: maximum above ``max_plausible_suv`` (activity concentrations are
    thousands of Bq/mL), or strongly negative minimum (< -1, reconstruction noise aside).
    Returns True when the image passes.
    """
    pet = _as_image(pet, patient_id, "PET")
    values = sitk.GetArrayViewFromImage(pet)
    finite = values[np.isfinite(values)]
    problem = None
    if units and str(units).strip().lower().replace(" ", "") not in _SUV_UNITS:
        problem = f"units are {units!r}, not SUV"
    elif finite.size == 0:
        problem = "no finite voxel"
    elif float(finite.max()) > max_plausible_suv:
        problem = f"maximum {float(finite.max()):.4g} exceeds a plausible SUV ({max_plausible_suv:g}); it looks like Bq/mL or counts"
    elif float(finite.min()) < -1.0:
        problem = f"minimum {float(finite.min()):.4g} is strongly negative, not an SUV"
    if problem is None:
        return True
    message = (f"{_who(patient_id, 'PET')}the PET is not in SUV: {problem}; convert it to SUV "
               f"(activity / (injected dose / body weight), decay-corrected) and set units='SUV'")
    if on_error == "warn":
        warnings.warn(message, UserWarning, stacklevel=2)
        return False
    raise ImageError(message)


def delineate_fixed_suv(pet, threshold_suv: float = 2.5, region=None, patient_id: str | None = None) -> sitk.Image:
    """Lesion mask: voxels with SUV >= ``threshold_suv`` (inside ``region`` if given).

    ``pet`` in SUV (checked); ``region``: a mask image on the PET grid (nonzero = inside).
    Returns a uint8 mask (1 = lesion) with the PET's geometry. ``ImageError`` if nothing
    reaches the threshold.
    """
    pet = _as_image(pet, patient_id, "PET")
    check_suv(pet, patient_id=patient_id)
    values = sitk.GetArrayFromImage(pet)
    inside = _region_array(pet, region, patient_id)
    lesion = (values >= threshold_suv) & inside
    if not lesion.any():
        raise ImageError(f"{_who(patient_id, 'PET')}no voxel reaches SUV {threshold_suv:g} in the region; lower the threshold or check the region")
    return _mask_like(lesion, pet)


def delineate_suvmax_fraction(pet, region, fraction: float = 0.41, patient_id: str | None = None) -> sitk.Image:
    """Lesion mask: voxels of ``region`` with SUV >= ``fraction`` x SUVmax of the region (41 % by default).

    The EANM convention for FDG PET volumes. ``region``: mask on the PET grid (a box or
    sphere around the lesion). Returns a uint8 mask with the PET's geometry.
    """
    if not 0.0 < fraction < 1.0:
        raise FeatureError(f"fraction of SUVmax must be in (0, 1), got {fraction}")
    pet = _as_image(pet, patient_id, "PET")
    check_suv(pet, patient_id=patient_id)
    values = sitk.GetArrayFromImage(pet)
    inside = _region_array(pet, region, patient_id)
    if region is None or not inside.any():
        raise ImageError(f"{_who(patient_id, 'PET')}the region around the lesion is empty; give a nonempty region mask")
    suv_max = float(np.nanmax(values[inside]))
    lesion = inside & (values >= fraction * suv_max)
    return _mask_like(lesion, pet)


def _region_array(pet: sitk.Image, region, patient_id) -> np.ndarray:
    if region is None:
        return np.ones(sitk.GetArrayViewFromImage(pet).shape, bool)
    region = _as_image(region, patient_id, "region")
    check_geometry(pet, region, patient_id=patient_id, names=("PET", "region"))
    return sitk.GetArrayViewFromImage(region) != 0


def _mask_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    mask = sitk.GetImageFromArray(array.astype(np.uint8))
    mask.CopyInformation(reference)
    return mask


__all__ = [
    "PRESET_DIR",
    "DEFAULT_MODALITY_SETTINGS",
    "available_presets",
    "load_settings",
    "settings_hash",
    "make_extractor",
    "snake_case",
    "roi_labels",
    "radiomics_features",
    "extract_radiomics",
    "wide_columns",
    "radiomics_tasks",
    "run_radiomics_task",
    "patient_radiomics_features",
    "check_suv",
    "delineate_fixed_suv",
    "delineate_suvmax_fraction",
]


# ------------------------------------------------------------------ validation on reference values
# The reference data (pyradiomics' baselines, IBSI chapter 1) are not shipped with bayesrad; these
# functions take the folder holding them (the project's shared test data: ``radiomics_reference``).

def _reference_root(data_dir) -> Path:
    root = Path(data_dir) if data_dir is not None else Path.cwd().parent / "shared" / "data" / "radiomics_reference"
    if not root.exists():
        raise FeatureError(f"reference data folder {str(root)!r} does not exist; pass data_dir= (the radiomics_reference folder)")
    return root


def reproduce_pyradiomics_baseline(data_dir=None, classes: Sequence[str] | None = None,
                                   columns: Sequence[str] | None = None, rtol: float = 1e-6) -> pd.DataFrame:
    """Recompute pyradiomics' own baseline values (``pyradiomics/data/baseline/baseline_<class>.csv``).

    Each baseline column (test case + configuration, e.g. ``brain1_resampling``) is recomputed
    from its ``diagnostics_Configuration_Settings`` and enabled image types; classes whose
    columns share settings are computed in one pyradiomics run. The ``shape2D`` columns were
    produced on a one-slice mask (the slice named by ``diagnostics_Mask-corrected_BoundingBox``),
    which is rebuilt here. ``classes``/``columns`` restrict the work (None: everything, ~5-8 min
    on 2 cores). Returns one row per (class, column, feature): ``baseline``, ``value``,
    ``rel_error`` and ``match`` (relative error <= ``rtol``).
    """
    import ast

    root = _reference_root(data_dir) / "pyradiomics" / "data"
    baseline_dir = root / "baseline"
    tables = {p.stem[len("baseline_"):]: pd.read_csv(p, index_col=0) for p in sorted(baseline_dir.glob("baseline_*.csv"))}
    if classes is not None:
        unknown = set(classes) - set(tables)
        if unknown:
            raise FeatureError(f"no pyradiomics baseline for class(es) {sorted(unknown)}; available: {sorted(tables)}")
        tables = {c: tables[c] for c in classes}
    # (column, settings text, image types text) -> classes computed together in one run.
    jobs: dict[tuple[str, str, str], list[str]] = {}
    for cls, table in tables.items():
        for column in table.columns:
            if columns is not None and column not in columns:
                continue
            key = (column, table.loc["diagnostics_Configuration_Settings", column],
                   table.loc["diagnostics_Configuration_EnabledImageTypes", column])
            jobs.setdefault(key, []).append(cls)
    rows = []
    for (column, settings_text, types_text), job_classes in jobs.items():
        from radiomics import featureextractor

        case = column.split("_")[0]
        image = sitk.ReadImage(str(root / f"{case}_image.nrrd"))
        mask = sitk.ReadImage(str(root / f"{case}_label.nrrd"))
        if job_classes == ["shape2D"]:
            z = ast.literal_eval(tables["shape2D"].loc["diagnostics_Mask-corrected_BoundingBox", column])[2]
            mask = mask[:, :, z:z + 1]
        make_extractor({"imageType": {"Original": {}}, "setting": {}, "featureClass": {}})  # sets verbosity
        extractor = featureextractor.RadiomicsFeatureExtractor(**ast.literal_eval(settings_text))
        extractor.disableAllFeatures()
        for cls in job_classes:
            extractor.enableFeatureClassByName(cls)
        extractor.enableImageTypes(**ast.literal_eval(types_text))
        result = extractor.execute(image, mask)
        for cls in job_classes:
            table = tables[cls]
            for feature in table.index:
                if feature.startswith("diagnostics_"):
                    continue
                reference = float(table.loc[feature, column])
                value = float(result.get(feature, np.nan))
                rows.append({"feature_class": cls, "column": column, "case": case, "feature": feature,
                             "baseline": reference, "value": value})
    out = pd.DataFrame(rows, columns=["feature_class", "column", "case", "feature", "baseline", "value"])
    scale = np.maximum(out["baseline"].abs(), np.finfo(float).tiny)
    out["rel_error"] = (out["value"] - out["baseline"]).abs() / scale
    out["match"] = (out["rel_error"] <= rtol) | (out["value"] == out["baseline"])
    return out


IBSI_DATASETS = ("digital_phantom", "A", "B", "C", "D", "E")


def _ibsi_reference(root: Path, dataset: str) -> pd.DataFrame:
    name = "digital_phantom" if dataset == "digital_phantom" else f"config_{dataset}"
    table = pd.read_csv(root / "reference_values" / "zrad" / f"ibsi_1_reference_values_{name}.csv",
                        encoding="utf-8-sig", dtype=str)
    table = table.rename(columns={"reference value": "reference_text"})
    return table[["tag", "family", "feature", "reference_text", "tolerance"]].dropna(subset=["tag"])


def _rounding_half_unit(text: str) -> float:
    """Half a unit in the last significant digit IBSI publishes (3 significant digits, or more when printed).

    "0.698" -> 0.0005, "1490" -> 5 (1494.6 rounds to 1490), "12.345" -> 0.0005.
    """
    from decimal import Decimal, InvalidOperation

    try:
        number = Decimal(str(text).strip())
    except InvalidOperation:
        return 0.0
    if number == 0:
        return 0.0
    printed = int(number.as_tuple().exponent)
    three_significant = int(np.floor(np.log10(abs(float(number))))) - 2
    # Trailing zeros of an integer ("1490") are not significant; printed decimals always are.
    exponent = printed if printed < 0 else max(printed, three_significant)
    return 0.5 * 10.0 ** exponent


def ibsi_validation(data_dir=None, datasets: Sequence[str] = IBSI_DATASETS) -> pd.DataFrame:
    """Check pyradiomics (through bayesrad's presets) against IBSI chapter 1 reference values.

    For the digital phantom and CT configurations A-E, every reference feature tag is marked
    ``within`` (|value - reference| <= tolerance + half a unit of the reference's last printed
    digit, since IBSI publishes 3 significant digits and tolerance 0 for the phantom),
    ``outside``, or ``not_implemented`` (no pyradiomics equivalent in the benchmark's mapping,
    or not computed by pyradiomics). Each configuration is run twice: averaged over directions
    (preset ``ibsi_<x>``) and merged (``weightingNorm: no_weighting``); the phantom also in 2D and
    3D. Returns one row per (dataset, tag) with ``reference``, ``tolerance``, ``value``,
    ``pyradiomics_feature``, ``status``.
    """
    root = _reference_root(data_dir) / "ibsi"
    frames = []
    for dataset in datasets:
        if dataset not in IBSI_DATASETS:
            raise FeatureError(f"unknown IBSI data set {dataset!r}; use one of {IBSI_DATASETS}")
        if dataset == "digital_phantom":
            folder = root / "data_sets" / "ibsi_1_digital_phantom" / "nifti"
            preset, mapping_file, dims = "ibsi_phantom", "mapping_phantom.csv", (True, False)
        else:
            folder = root / "data_sets" / "ibsi_1_ct_radiomics_phantom" / "nifti"
            preset = f"ibsi_{dataset.lower()}"
            mapping_file = f"mapping_case{'ABCDE'.index(dataset) + 1}.csv"
            dims = (bool(load_settings(preset)["setting"].get("force2D", False)),)
        image = sitk.ReadImage(str(folder / "image" / "phantom.nii.gz"))
        mask = sitk.ReadImage(str(folder / "mask" / "mask.nii.gz"))
        computed: dict[str, object] = {}
        for force2d in dims:
            prefix = "2D" if force2d else "3D"
            for merged in (False, True):
                params = load_settings(preset, force2D=force2d)
                if merged:
                    params["setting"]["weightingNorm"] = "no_weighting"
                    params["featureClass"] = {"glcm": None, "glrlm": None}
                result = make_extractor(params).execute(image, mask, label=1)
                for key, value in result.items():
                    computed[f"{prefix}_Combined_{key}" if merged else f"{prefix}_{key}"] = value
        mapping = pd.read_csv(root / "pyradiomics_ibsi_benchmark" / "mapping" / mapping_file, dtype=str)
        mapping = mapping.dropna(subset=["tag"]).drop_duplicates("tag").set_index("tag")
        reference = _ibsi_reference(root, dataset)
        rows = []
        for _, ref in reference.iterrows():
            tag = ref["tag"]
            feature = mapping["pyradiomics_feature"].get(tag) if tag in mapping.index else None
            value = np.nan
            if isinstance(feature, str) and feature:
                # The benchmark's mapping names shape features "2D_" for configuration C; pyradiomics
                # computes shape in 3D whatever force2D says, so both prefixes are the same feature.
                raw = computed.get(feature, computed.get(feature.replace("2D_original_shape", "3D_original_shape")))
                index = mapping["idx"].get(tag) if "idx" in mapping.columns else None
                if raw is not None:
                    try:
                        if isinstance(index, str) and index.strip():
                            raw = raw[int(float(index))]
                        value = float(raw)
                    except (TypeError, ValueError, IndexError):
                        value = np.nan
            try:
                ref_value = float(ref["reference_text"])
                tolerance = float(ref["tolerance"])
            except (TypeError, ValueError):
                continue
            if np.isnan(value):
                status = "not_implemented"
            elif abs(value - ref_value) <= tolerance + _rounding_half_unit(ref["reference_text"]) + 1e-12:
                status = "within"
            else:
                status = "outside"
            rows.append({"dataset": dataset, "family": ref["family"], "feature": ref["feature"], "tag": tag,
                         "reference": ref_value, "tolerance": tolerance, "value": value,
                         "pyradiomics_feature": feature if isinstance(feature, str) else "", "status": status})
        frames.append(pd.DataFrame(rows))
    return pd.concat(frames, ignore_index=True)
