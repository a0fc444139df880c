"""Small synthetic patients written as NIfTI for the imaging tests (tiny volumes, seeded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk


def make_image(array_zyx: np.ndarray, spacing=(2.0, 2.0, 2.0), origin=(0.0, 0.0, 0.0), direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(np.asarray(array_zyx))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        image.SetDirection(tuple(float(d) for d in direction))
    return image


def sphere_patient(root: Path, patient_id: str, radius_mm: float, suv: float, centre_mm=(0.0, 0.0, 0.0),
                   rng: np.random.Generator | None = None) -> list[dict]:
    """CT (2 mm grid, 40^3) and PET (4 mm grid, 20^3, shifted by 2 mm) of a sphere; mask on the CT grid.

    The sphere is +60 HU over 0 HU soft tissue in CT and ``suv`` over SUV 1 in PET. Returns the
    images-table rows.
    """
    rng = rng or np.random.default_rng(0)
    out = Path(root) / patient_id
    out.mkdir(parents=True, exist_ok=True)
    rows = []

    def coords(n, spacing, origin):
        idx = np.arange(n)
        return [origin[a] + idx * spacing for a in range(3)]

    ct_origin = (-39.0, -39.0, -39.0)
    x, y, z = coords(40, 2.0, ct_origin)
    r2 = (z[:, None, None] - centre_mm[2]) ** 2 + (y[None, :, None] - centre_mm[1]) ** 2 + (x[None, None, :] - centre_mm[0]) ** 2
    inside = r2 <= radius_mm**2
    ct = np.where(inside, 60.0, 0.0) + rng.normal(0, 5, inside.shape)
    sitk.WriteImage(make_image(ct.astype(np.float32), (2.0,) * 3, ct_origin), str(out / "ct.nii.gz"))
    sitk.WriteImage(make_image(inside.astype(np.uint8), (2.0,) * 3, ct_origin), str(out / "mask.nii.gz"))
    pet_origin = (-37.0, -37.0, -37.0)
    x, y, z = coords(20, 4.0, pet_origin)
    r2 = (z[:, None, None] - centre_mm[2]) ** 2 + (y[None, :, None] - centre_mm[1]) ** 2 + (x[None, None, :] - centre_mm[0]) ** 2
    pet = np.where(r2 <= radius_mm**2, suv, 1.0) + rng.normal(0, 0.05, r2.shape)
    sitk.WriteImage(make_image(pet.astype(np.float32), (4.0,) * 3, pet_origin), str(out / "pet.nii.gz"))
    rows.append(dict(patient_id=patient_id, modality="CT", path=str(out / "ct.nii.gz"), mask_path=str(out / "mask.nii.gz"),
                     mask_labels="1", roi="gtv", frame_times="", units="HU"))
    rows.append(dict(patient_id=patient_id, modality="PET", path=str(out / "pet.nii.gz"), mask_path="",
                     mask_labels="", roi="gtv", frame_times="", units="SUV"))
    return rows


def sphere_cohort_images(root: Path, n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n`` sphere patients with radius 6-14 mm and SUV 2-8; returns (images table, truth)."""
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for i in range(n):
        pid = f"P{i:03d}"
        radius, suv = rng.uniform(6, 14), rng.uniform(2, 8)
        centre = tuple(rng.uniform(-6, 6, 3))
        rows += sphere_patient(root, pid, radius, suv, centre, rng)
        truth.append({"patient_id": pid, "radius_mm": radius, "suv": suv})
    return pd.DataFrame(rows), pd.DataFrame(truth).set_index("patient_id")
