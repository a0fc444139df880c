"""Reading images, masks and dose grids (NIfTI, NRRD, DICOM series) with SimpleITK.

SimpleITK is used rather than MONAI's ``LoadImage`` here because MONAI's NRRD and DICOM
readers need the ``itk`` package, while SimpleITK reads all three formats with their
geometry; MONAI transforms take over in ``bayesrad.imaging``.

Conventions: arrays are indexed (z, y, x) as SimpleITK returns them; spacing, origin and
direction are in SimpleITK's physical (x, y, z) order, in millimetres.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from bayesrad.errors import ImageError, ImageGeometryError, MissingFileError

# Two grids are the same when spacing and origin agree to this many millimetres and
# direction cosines to this absolute tolerance (DICOM headers round to ~1e-5).
SPACING_TOLERANCE_MM = 1e-3
ORIGIN_TOLERANCE_MM = 1e-2
DIRECTION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Geometry:
    """The voxel grid of an image: size (x, y, z[, t]) in voxels, spacing and origin in mm."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(
            tuple(image.GetSize()),
            tuple(image.GetSpacing()),
            tuple(image.GetOrigin()),
            tuple(image.GetDirection()),
        )


def _where(path, patient_id) -> str:
    return f"patient {patient_id!r}, file {str(path)!r}" if patient_id is not None else f"file {str(path)!r}"


def read_image(path: str | os.PathLike, patient_id: str | None = None) -> sitk.Image:
    """Read a NIfTI/NRRD/MHA file or a directory holding one DICOM series.

    Returns a ``SimpleITK.Image`` with its geometry. Raises ``MissingFileError`` when the
    path does not exist and ``ImageError`` when it cannot be read (naming the patient).
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(
            f"{_where(path, patient_id)} does not exist; fix the path in the manifest or add the file"
        )
    try:
        if path.is_dir():
            return _read_dicom_series(path, patient_id)
        image = sitk.ReadImage(str(path))
    except ImageError:
        raise
    except RuntimeError as exc:  # SimpleITK raises RuntimeError for unreadable files
        raise ImageError(f"{_where(path, patient_id)} could not be read as an image: {exc}".strip()) from exc
    if path.name.endswith((".nii", ".nii.gz")):
        _refuse_nifti_nan(path, patient_id)
    return image


def _refuse_nifti_nan(path: Path, patient_id) -> None:
    """SimpleITK reads NaN voxels of a float NIfTI as 0, and a truncated ``.nii.gz`` without
    complaint (the missing voxels come out as garbage: 92 of 107 features differed in issue
    17); nibabel decompresses the whole file and raises on a short one. Refuse both, and
    infinite voxels."""
    import zlib

    import nibabel

    try:
        header_image = nibabel.load(str(path))
        voxels = np.asarray(header_image.dataobj)
    except (EOFError, OSError, ValueError, zlib.error, nibabel.filebasedimages.ImageFileError) as exc:
        raise ImageError(
            f"{_where(path, patient_id)} is truncated or corrupt ({type(exc).__name__}: {exc}); "
            f"export or copy the file again"
        ) from exc
    if not np.issubdtype(voxels.dtype, np.floating):
        return
    n_nan = int(np.isnan(voxels).sum())
    if n_nan:
        raise ImageError(
            f"{_where(path, patient_id)} has {n_nan} NaN voxel(s); fix the export (NaN is not a "
            f"valid intensity) or set them to a background value explicitly"
        )
    n_inf = int(np.isinf(voxels).sum())
    if n_inf:
        raise ImageError(
            f"{_where(path, patient_id)} has {n_inf} infinite voxel(s); fix the export or set them "
            f"to a valid intensity explicitly"
        )


def _read_dicom_series(directory: Path, patient_id) -> sitk.Image:
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(directory))
    if not series_ids:
        raise ImageError(f"{_where(directory, patient_id)}: no DICOM series found in this directory")
    if len(series_ids) > 1:
        raise ImageError(
            f"{_where(directory, patient_id)} holds {len(series_ids)} DICOM series "
            f"({', '.join(series_ids[:3])}...); put each series in its own directory"
        )
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(directory), series_ids[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    return reader.Execute()


def read_geometry(path: str | os.PathLike, patient_id: str | None = None) -> Geometry:
    """The grid of an image file from its header only (cheap: voxels are not read)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(
            f"{_where(path, patient_id)} does not exist; fix the path in the manifest or add the file"
        )
    if path.is_dir():
        return Geometry.of(read_image(path, patient_id))
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageError(f"{_where(path, patient_id)} could not be read as an image: {exc}".strip()) from exc
    return Geometry(
        tuple(reader.GetSize()), tuple(reader.GetSpacing()), tuple(reader.GetOrigin()), tuple(reader.GetDirection())
    )


def check_geometry(
    image: sitk.Image | Geometry,
    other: sitk.Image | Geometry,
    *,
    patient_id: str | None = None,
    names: tuple[str, str] = ("image", "mask"),
    spatial_only: bool = True,
) -> None:
    """Raise ``ImageGeometryError`` unless both grids agree in size, spacing, origin, direction.

    ``spatial_only`` compares the first three axes only, so a 4D dynamic PET can be checked
    against its 3D mask.
    """
    a = image if isinstance(image, Geometry) else Geometry.of(image)
    b = other if isinstance(other, Geometry) else Geometry.of(other)
    n = 3 if spatial_only else max(len(a.size), len(b.size))
    who = f"patient {patient_id!r}: " if patient_id is not None else ""
    fix = f"resample the {names[1]} onto the {names[0]} grid (bayesrad.data.readers.resample_to)"
    if tuple(a.size[:n]) != tuple(b.size[:n]):
        raise ImageGeometryError(f"{who}{names[0]} size {a.size[:n]} differs from {names[1]} size {b.size[:n]}; {fix}")
    if not np.allclose(a.spacing[:n], b.spacing[:n], atol=SPACING_TOLERANCE_MM):
        raise ImageGeometryError(
            f"{who}{names[0]} spacing {_fmt(a.spacing[:n])} mm differs from {names[1]} spacing {_fmt(b.spacing[:n])} mm; {fix}"
        )
    if not np.allclose(a.origin[:n], b.origin[:n], atol=ORIGIN_TOLERANCE_MM):
        raise ImageGeometryError(
            f"{who}{names[0]} origin {_fmt(a.origin[:n])} mm differs from {names[1]} origin {_fmt(b.origin[:n])} mm; {fix}"
        )
    da = np.asarray(a.direction).reshape(len(a.size), len(a.size))[:n, :n]
    db = np.asarray(b.direction).reshape(len(b.size), len(b.size))[:n, :n]
    if not np.allclose(da, db, atol=DIRECTION_TOLERANCE):
        raise ImageGeometryError(f"{who}{names[0]} and {names[1]} have different orientations (direction cosines); {fix}")


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def parse_labels(labels) -> tuple[int, ...] | None:
    """``"1;2;5"`` / ``[1, 2]`` / ``1`` -> ``(1, 2, 5)``; empty or None -> None (any nonzero)."""
    if labels is None or (isinstance(labels, float) and np.isnan(labels)):
        return None
    if isinstance(labels, (int, np.integer)):
        return (int(labels),)
    if isinstance(labels, str):
        parts = [p for p in labels.replace(",", ";").split(";") if p.strip()]
        return tuple(int(float(p)) for p in parts) or None
    return tuple(int(v) for v in labels) or None


def read_mask(
    path: str | os.PathLike,
    reference: sitk.Image | Geometry | None = None,
    labels=None,
    patient_id: str | None = None,
) -> sitk.Image:
    """Read a label mask, check it against its image and check it is usable.

    ``labels`` selects label values (``None``: any nonzero voxel). Raises
    ``ImageGeometryError`` when the grid differs from ``reference`` and ``ImageError`` when
    the mask is empty or a requested label is absent. Returns the label image unchanged.
    """
    mask = read_image(path, patient_id)
    if reference is not None:
        check_geometry(reference, mask, patient_id=patient_id)
    values = sitk.GetArrayViewFromImage(mask)
    wanted = parse_labels(labels)
    who = _where(path, patient_id)
    if wanted is None:
        if not np.any(values):
            raise ImageError(f"{who}: the mask is empty (no nonzero voxel); check the segmentation export")
    else:
        present = set(np.unique(values).astype(int).tolist())
        absent = [lab for lab in wanted if lab not in present]
        if absent:
            raise ImageError(
                f"{who}: mask label(s) {absent} absent (labels present: {sorted(present - {0})}); "
                f"fix mask_labels in the manifest"
            )
    return mask


def image_to_array(image: sitk.Image, dtype=np.float32) -> np.ndarray:
    """Voxel values as a numpy array indexed (z, y, x) (4D: (t, z, y, x))."""
    return sitk.GetArrayFromImage(image).astype(dtype, copy=False)


def resample_to(image: sitk.Image, reference: sitk.Image, interpolator: str = "linear", default_value: float = 0.0) -> sitk.Image:
    """Resample ``image`` onto the grid of ``reference`` (``"nearest"`` for label masks)."""
    interp = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}
    if interpolator not in interp:
        raise ImageError(f"unknown interpolator {interpolator!r}; use one of {sorted(interp)}")
    return sitk.Resample(image, reference, sitk.Transform(), interp[interpolator], default_value, image.GetPixelID())


__all__ = [
    "Geometry",
    "check_image_files",
    "read_image",
    "read_geometry",
    "read_mask",
    "check_geometry",
    "parse_labels",
    "image_to_array",
    "resample_to",
]


def check_image_files(images) -> "pd.DataFrame":
    """Open every image and mask of an images table (``Cohort.images``) in full, as extraction
    will: what a header check cannot see (a truncated or corrupt file, NaN/inf voxels, an empty
    mask or an absent label) is found before a long run (``bayesrad summary --check-images``).

    Returns one row per problem: ``patient_id, modality, file, error, reason`` (empty when
    every file reads). Nothing is raised: every file is checked.
    """
    import pandas as pd

    from bayesrad.errors import BayesradError

    problems = []
    for row in images.itertuples(index=False):
        checks = [(row.path, lambda r: read_image(r.path, r.patient_id))]
        if getattr(row, "mask_path", ""):
            checks.append((row.mask_path, lambda r: read_mask(r.mask_path, read_geometry(r.path, r.patient_id),
                                                             r.mask_labels or None, r.patient_id)))
        for path, check in checks:
            try:
                check(row)
            except BayesradError as exc:
                problems.append({"patient_id": row.patient_id, "modality": row.modality, "file": str(path),
                                 "error": type(exc).__name__, "reason": str(exc)})
                break  # the mask of an unreadable image tells nothing more
    return pd.DataFrame(problems, columns=["patient_id", "modality", "file", "error", "reason"])
