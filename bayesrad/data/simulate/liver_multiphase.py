"""Scenario ``liver_multiphase``: primary liver cancer on three-phase CT, HCC vs iCCA vs mixed.

Generating DAG::

    age_years, sex_male, viral_hepatitis -> cirrhosis
    cirrhosis, viral_hepatitis -> tumour_class (HCC | iCCA | mixed; outcome, patient level only)
    tumour_class -> log10_afp_ng_ml, log10_ca19_9_u_ml            (labs block)
    tumour_class -> radiomics latent: [0] size, [1] arterial hyper-enhancement and washout
                    (HCC-like), [2] delayed enhancement of fibrous stroma (iCCA-like)

Images (with ``out=``), 192 mm field of view: ``CT_arterial``, ``CT_portal`` and
``CT_delayed`` (HU, same grid) and one label map: 1 = liver parenchyma, 2 = lesion (the image
rows reference label 2, roi ``lesion``). Lesion attenuation per phase is a linear function of
the latent (``lesion_hu_arterial`` ...), so HCC enhances in the arterial phase and washes out,
iCCA enhances late, and mixed tumours sit in between with more heterogeneity.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bayesrad.data.simulate._core import Modality, Scenario
from bayesrad.data.simulate._engine import NetworkSampler
from bayesrad.data.simulate._render import Grid, PatientImages, lobulated_blob, smooth_noise

CLASSES = ("HCC", "iCCA", "mixed")
PHASES = ("arterial", "portal", "delayed")
# Liver parenchyma and aorta attenuation (HU) per phase of a standard contrast protocol.
LIVER_HU = {"arterial": 70.0, "portal": 110.0, "delayed": 90.0}
AORTA_HU = {"arterial": 300.0, "portal": 180.0, "delayed": 120.0}
# Lesion HU per phase: intercept + loadings on the enhancement latents [1] and [2].
LESION_HU = {"arterial": (100.0, 25.0, -5.0), "portal": (95.0, 5.0, 8.0), "delayed": (80.0, -12.0, 20.0)}

RADIOMICS_COLUMNS = (
    ("ct_lesion_log_volume_ml", 3.0, (0.8, 0.0, 0.0), 0.08, "log(ml)"),
    ("ct_arterial_lesion_mean_hu", 100.0, (0.0, 25.0, -5.0), 6.0, "HU"),
    ("ct_portal_lesion_mean_hu", 95.0, (0.0, 5.0, 8.0), 6.0, "HU"),
    ("ct_delayed_lesion_mean_hu", 80.0, (0.0, -12.0, 20.0), 6.0, "HU"),
    ("ct_arterial_lesion_std_hu", 20.0, (2.0, 4.0, 3.0), 3.0, "HU"),
    ("ct_delayed_lesion_glcm_contrast", 15.0, (1.0, 2.0, 5.0), 3.0, None),
    ("ct_lesion_sphericity", 0.78, (-0.02, 0.0, -0.03), 0.02, None),
)


def image_phenotype(z: np.ndarray) -> dict[str, np.ndarray]:
    """Lesion volume and per-phase attenuation as deterministic functions of the latent."""
    out = {"lesion_volume_ml": np.exp(3.0 + 0.8 * z[:, 0])}
    for phase, (a, b, c) in LESION_HU.items():
        out[f"lesion_hu_{phase}"] = a + b * z[:, 1] + c * z[:, 2]
    # Mixed tumours hold both components side by side: heterogeneity grows where both latents are high.
    out["lesion_heterogeneity_hu"] = 10.0 + 6.0 * np.minimum(np.abs(z[:, 1] + 1.0), np.abs(z[:, 2] - 1.0)).clip(0, 2)
    return out


def generate(n: int, rng: np.random.Generator) -> dict:
    g = NetworkSampler(n, rng)
    g.continuous("age_years", "clinical", 64.0, 10.0, unit="years")
    g.binary("sex_male", "clinical", 1.0)
    g.binary("viral_hepatitis", "clinical", -0.8)
    g.binary("cirrhosis", "clinical", -1.2, coefs={"viral_hepatitis": 1.8, "sex_male": 0.3})
    g.categorical("tumour_class", "outcome", CLASSES, (0.0, 0.3, -1.0), coefs={
        "cirrhosis": (0.0, -1.6, -0.6), "viral_hepatitis": (0.0, -1.0, -0.3),
    })
    g.continuous("log10_afp_ng_ml", "labs", 1.8, 0.7, coefs={"tumour_class[iCCA]": -1.2, "tumour_class[mixed]": -0.5},
                 unit="log10(ng/ml)")
    g.continuous("log10_ca19_9_u_ml", "labs", 1.3, 0.6, coefs={"tumour_class[iCCA]": 1.0, "tumour_class[mixed]": 0.5},
                 unit="log10(U/ml)")
    z = g.latent("radiomics", "radiomics", 3, coefs=[
        {"tumour_class[iCCA]": 0.4},
        {"tumour_class[iCCA]": -2.0, "tumour_class[mixed]": -1.0},
        {"tumour_class[iCCA]": 2.0, "tumour_class[mixed]": 1.0},
    ])
    g.factor_block("radiomics", [c[0] for c in RADIOMICS_COLUMNS], [c[1] for c in RADIOMICS_COLUMNS],
                   [c[2] for c in RADIOMICS_COLUMNS], [c[3] for c in RADIOMICS_COLUMNS],
                   units=[c[4] for c in RADIOMICS_COLUMNS])
    return {
        "generator": g,
        "latents": image_phenotype(z),
        "latent_dims": {"radiomics": ["size", "arterial_washout", "delayed_enhancement"]},
    }


def render(patient: dict, rng: np.random.Generator, grid: Grid) -> PatientImages:
    """Three CT phases and the liver/lesion label map for one patient."""
    body = np.broadcast_to((grid.x / 92.0) ** 2 + (grid.y / 76.0) ** 2 <= 1.0, grid.shape)
    liver = ((grid.x + 22.0) / 62.0) ** 2 + ((grid.y + 5.0) / 50.0) ** 2 + (grid.z / 65.0) ** 2 <= 1.0
    aorta = np.broadcast_to((grid.x - 22.0) ** 2 + (grid.y - 42.0) ** 2 <= 11.0**2, grid.shape)
    liver &= body & ~aorta
    centre = (rng.uniform(-25.0, 25.0), rng.uniform(-20.0, 12.0), rng.uniform(-45.0, 0.0))  # (z, y, x) mm
    lesion, _ = lobulated_blob(grid, centre, patient["lesion_volume_ml"], 0.12, rng)
    lesion &= liver
    if not lesion.any():
        # A lesion smaller than a voxel still marks the voxel nearest its centre.
        nearest = tuple(int(np.abs(axis.ravel() - c).argmin()) for axis, c in zip((grid.z, grid.y, grid.x), centre))
        lesion[nearest] = True
    texture = smooth_noise(rng, grid.shape, 1.0)
    mixing = smooth_noise(rng, grid.shape, 2.0)
    noise = [rng.normal(0.0, 10.0, grid.shape) for _ in PHASES]
    images = PatientImages()
    labels = np.where(lesion, 2, np.where(liver, 1, 0)).astype(np.uint8)
    images.arrays["liver_lesion_mask"] = (labels, "mask")
    for phase, phase_noise in zip(PHASES, noise):
        ct = np.where(body, 40.0, -1000.0)
        ct = np.where(liver, LIVER_HU[phase], ct)
        ct = np.where(aorta & body, AORTA_HU[phase], ct)
        lesion_hu = patient[f"lesion_hu_{phase}"] + patient["lesion_heterogeneity_hu"] * (0.6 * texture + 0.8 * mixing)
        ct = np.where(lesion, lesion_hu, ct)
        ct = ndimage.gaussian_filter(ct, 0.5) + phase_noise
        images.arrays[f"ct_{phase}"] = (np.clip(ct, -1024, 3000), "ct")
        images.rows.append({"modality": f"CT_{phase}", "file": f"ct_{phase}", "mask_file": "liver_lesion_mask",
                            "mask_labels": "2", "roi": "lesion", "units": "HU"})
    return images


SCENARIO = Scenario(
    name="liver_multiphase",
    id_prefix="LV",
    modalities={
        "imaging": Modality(blocks=("radiomics",), images=tuple(f"CT_{p}" for p in PHASES)),
        "labs": Modality(blocks=("labs",)),
    },
    default_missing={"labs": 0.1},
    generate=generate,
    render=render,
    field_of_view_mm=192.0,
    description="primary liver cancer, arterial/portal/delayed CT; HCC vs iCCA vs mixed",
)
