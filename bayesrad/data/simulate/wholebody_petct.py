"""Scenario ``wholebody_petct``: whole-body FDG PET/CT over several centres, treatment response.

Generating DAG (organ uptake on the log scale, block ``organ_suv``)::

    centre -> blood_glucose_mmol_l (centres differ in patient mix: a confounder)
    age_years, sex_male, bmi_kg_m2, blood_glucose_mmol_l           clinical
    bmi, glucose -> liver_log_suvmean -> spleen_log_suvmean -> bone_marrow_log_suvmean
    liver -> kidney_log_suvmean;  liver -> lung_log_suvmean;  glucose, age -> brain_log_suvmean
    radiomics latent: [0] tumour burden, [1] tumour metabolic activity
    radiomics[0] -> n_metastases (count) ;  radiomics[0] -> bone_marrow (marrow reaction)
    radiomics[0], n_metastases, age_years -> response (binary outcome)

Centre effects: each centre's scanner multiplies every PET intensity by ``exp(c_centre)``
(``truth.parameters["scanner_log_factor"]``). On the log scale this is an additive shift of
every measured organ node; because organ nodes are parents of each other, the random
intercept of a node in the graph is ``c * (1 - sum of its organ parents' coefficients)``
(``truth.centre_effects``), which makes every measured node exactly ``true * exp(c)``. The
same shift enters the metabolic latent (``c / 0.3``, its lesion log-SUV loading). The
biological effect of blood glucose (protected in harmonisation) is
``parameters["protected"]``.

Images (with ``out=``), 400 mm field of view: CT (HU), PET (SUV), a multi-label organ mask
(``ORGAN_LABELS``) and a lesion mask (lesion ``i`` has label ``i``; 1 is the primary tumour).
Lesion positions, organs and volumes are in ``truth.lesions`` after writing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bayesrad.data.simulate._core import Modality, Scenario
from bayesrad.data.simulate._engine import NetworkSampler
from bayesrad.data.simulate._render import Grid, PatientImages, lobulated_blob, pet_blur, pet_noise, smooth_noise

CENTRES = ("centre_A", "centre_B", "centre_C", "centre_D")
ORGAN_LABELS = {"liver": 1, "spleen": 2, "lung_left": 3, "lung_right": 4, "kidney_left": 5, "kidney_right": 6,
                "brain": 7, "bone_marrow": 8}
# Ellipsoids: centre (x, y, z) and semi-axes (x, y, z) in mm; z points to the head.
ORGAN_SHAPES = {
    "lung_left": ((55.0, 0.0, 60.0), (45.0, 55.0, 75.0)),
    "lung_right": ((-55.0, 0.0, 60.0), (48.0, 55.0, 80.0)),
    "liver": ((-50.0, 0.0, -40.0), (65.0, 55.0, 45.0)),
    "spleen": ((70.0, 20.0, -30.0), (28.0, 25.0, 40.0)),
    "kidney_left": ((55.0, 45.0, -100.0), (22.0, 22.0, 45.0)),
    "kidney_right": ((-55.0, 45.0, -110.0), (22.0, 22.0, 45.0)),
    "brain": ((0.0, 0.0, 160.0), (60.0, 75.0, 45.0)),
}
ORGAN_HU = {"liver": 55.0, "spleen": 45.0, "lung_left": -800.0, "lung_right": -800.0, "kidney_left": 30.0,
            "kidney_right": 30.0, "brain": 35.0, "bone_marrow": 350.0}
ORGAN_NODE = {"liver": "liver", "spleen": "spleen", "lung_left": "lung", "lung_right": "lung",
              "kidney_left": "kidney", "kidney_right": "kidney", "brain": "brain", "bone_marrow": "bone_marrow"}
LESION_SITES = ("liver", "lung_left", "lung_right", "bone_marrow", "soft_tissue")
# Loading of the lesion log-SUV on the metabolic latent; the scanner shift enters the latent divided by it.
LESION_LOG_SUV_LOADING = 0.3
SCANNER_LOG_SD = 0.12

# Organ network: node -> (intercept, coefficients, residual sd) on log SUVmean.
ORGAN_MODEL = {
    "liver": (0.76, {"bmi_kg_m2": 0.012, "blood_glucose_mmol_l": -0.05}, 0.08),
    "spleen": (0.035, {"liver_log_suvmean": 0.7}, 0.08),
    "bone_marrow": (0.116, {"spleen_log_suvmean": 0.6, "radiomics[0]": 0.05}, 0.1),
    "kidney": (0.68, {"liver_log_suvmean": 0.3}, 0.12),
    "lung": (-0.83, {"liver_log_suvmean": 0.4}, 0.1),
    "brain": (3.03, {"blood_glucose_mmol_l": -0.12, "age_years": -0.005}, 0.1),
}

RADIOMICS_COLUMNS = (
    ("pet_lesion_log_suvmax", np.log(6.0), (0.0, LESION_LOG_SUV_LOADING), 0.08, "log(SUV)"),
    ("pet_lesion_log_mtv_ml", 2.8, (0.7, 0.0), 0.1, "log(ml)"),
    ("pet_lesion_heterogeneity_cov", 0.25, (0.02, 0.05), 0.02, None),
    ("ct_lesion_mean_hu", 35.0, (0.0, -4.0), 5.0, "HU"),
    ("ct_lesion_glcm_contrast", 20.0, (2.0, 4.0), 3.0, None),
)


def image_phenotype(z: np.ndarray) -> dict[str, np.ndarray]:
    """Primary tumour volume and mean lesion uptake (SUVmax / 1.3) from the latent."""
    return {
        "primary_volume_ml": np.exp(2.8 + 0.7 * z[:, 0]),
        "lesion_suv_mean": 6.0 * np.exp(LESION_LOG_SUV_LOADING * z[:, 1]) / 1.3,
    }


def generate(n: int, rng: np.random.Generator) -> dict:
    g = NetworkSampler(n, rng)
    g.group("centre", CENTRES, (0.3, 0.3, 0.2, 0.2))
    scanner = dict(zip(CENTRES, rng.normal(0.0, SCANNER_LOG_SD, len(CENTRES)).tolist()))
    g.continuous("age_years", "clinical", 62.0, 11.0, unit="years")
    g.binary("sex_male", "clinical", 0.1)
    g.continuous("bmi_kg_m2", "clinical", 27.0, 4.5, unit="kg/m2")
    g.continuous("blood_glucose_mmol_l", "clinical", 5.8, 0.9, groups={"centre": 0.5}, unit="mmol/l")
    z = g.latent("radiomics", "radiomics", 2, coefs=[{}, {}],
                 groups=[{}, {"centre": {c: v / LESION_LOG_SUV_LOADING for c, v in scanner.items()}}])
    g.factor_block("radiomics", [c[0] for c in RADIOMICS_COLUMNS], [c[1] for c in RADIOMICS_COLUMNS],
                   [c[2] for c in RADIOMICS_COLUMNS], [c[3] for c in RADIOMICS_COLUMNS],
                   units=[c[4] for c in RADIOMICS_COLUMNS])
    g.count("n_metastases", "clinical", 0.2, coefs={"radiomics[0]": 0.5})
    for organ, (intercept, coefs, sd) in ORGAN_MODEL.items():
        organ_parents = sum(c for k, c in coefs.items() if k.endswith("_log_suvmean"))
        centre_effect = {c: v * (1.0 - organ_parents) for c, v in scanner.items()}
        g.continuous(f"{organ}_log_suvmean", "organ_suv", intercept, sd, coefs=coefs,
                     groups={"centre": centre_effect}, unit="log(SUV)")
    g.binary("response", "outcome", 2.2, coefs={"radiomics[0]": -0.8, "n_metastases": -0.35, "age_years": -0.02})
    # Background soft tissue carries the scanner factor too (it is no node of the graph).
    scanner_factor = np.exp(np.array([scanner[c] for c in g.values["centre"]]))
    return {
        "generator": g,
        "latents": {**image_phenotype(z), "scanner_factor": scanner_factor},
        "latent_dims": {"radiomics": ["tumour_burden", "metabolic_activity"]},
        "parameters": {"scanner_log_factor": scanner, "protected": ["blood_glucose_mmol_l"],
                       "organ_labels": ORGAN_LABELS},
    }


def _ellipsoid(grid: Grid, centre, axes) -> np.ndarray:
    (cx, cy, cz), (ax, ay, az) = centre, axes
    return ((grid.x - cx) / ax) ** 2 + ((grid.y - cy) / ay) ** 2 + ((grid.z - cz) / az) ** 2 <= 1.0


def render(patient: dict, rng: np.random.Generator, grid: Grid) -> PatientImages:
    """CT, PET, organ label map and lesion label map for one patient."""
    body = ((grid.x / 150.0) ** 2 + (grid.y / 100.0) ** 2 <= 1.0) & (grid.z < 120.0) & (grid.z > -195.0)
    body |= _ellipsoid(grid, (0.0, 0.0, 160.0), (72.0, 90.0, 60.0))
    organs = np.zeros(grid.shape, np.uint8)
    for organ, (centre, axes) in ORGAN_SHAPES.items():
        organs[_ellipsoid(grid, centre, axes) & (organs == 0)] = ORGAN_LABELS[organ]
    spine = np.broadcast_to(grid.x**2 + (grid.y - 70.0) ** 2 <= 16.0**2, grid.shape) & (grid.z < 115.0) & (grid.z > -195.0)
    organs[spine] = ORGAN_LABELS["bone_marrow"]
    organs[~body] = 0
    suv = np.where(body, 0.8 * patient["scanner_factor"], 0.0)
    ct = np.where(body, 20.0, -1000.0)
    for organ, label in ORGAN_LABELS.items():
        inside = organs == label
        suv = np.where(inside, np.exp(patient[f"{ORGAN_NODE[organ]}_log_suvmean"]), suv)
        ct = np.where(inside, ORGAN_HU[organ], ct)
    lesions = np.zeros(grid.shape, np.uint8)
    n_lesions = 1 + int(patient["n_metastases"])
    records = []
    heterogeneity = smooth_noise(rng, grid.shape, 1.0)
    for lesion_id in range(1, n_lesions + 1):
        site = "soft_tissue" if lesion_id == 1 else LESION_SITES[rng.integers(len(LESION_SITES))]
        if site == "soft_tissue":
            candidates = np.flatnonzero(body & (organs == 0) & (np.abs(grid.z) < 100.0))
        else:
            candidates = np.flatnonzero(organs == ORGAN_LABELS[site])
        zi, yi, xi = np.unravel_index(candidates[rng.integers(len(candidates))], grid.shape)
        centre = (grid.z.ravel()[zi], grid.y.ravel()[yi], grid.x.ravel()[xi])
        volume = patient["primary_volume_ml"] * (1.0 if lesion_id == 1 else rng.uniform(0.15, 0.6))
        blob, _ = lobulated_blob(grid, centre, volume, 0.1, rng)
        blob &= body & (lesions == 0)
        if not blob.any():
            blob[zi, yi, xi] = True
        lesions[blob] = lesion_id
        lesion_suv = patient["lesion_suv_mean"] * (1.0 if lesion_id == 1 else rng.uniform(0.6, 1.1))
        suv = np.where(blob, lesion_suv * np.maximum(1.0 + 0.25 * heterogeneity, 0.2), suv)
        ct = np.where(blob, 35.0 + 15.0 * heterogeneity, ct)
        records.append({"lesion_id": lesion_id, "site": site, "volume_ml": float(blob.sum() * grid.voxel_volume_ml),
                        "suv_mean": float(lesion_suv), "centre_z_mm": float(centre[0]),
                        "centre_y_mm": float(centre[1]), "centre_x_mm": float(centre[2])})
    pet = pet_noise(rng, pet_blur(grid, suv), relative_sd=0.06)
    ct = ndimage.gaussian_filter(ct, 0.5) + rng.normal(0.0, 12.0, grid.shape)
    images = PatientImages()
    images.arrays = {"ct": (np.clip(ct, -1024, 3000), "ct"), "pet": (pet, "float"), "organ_mask": (organs, "mask"),
                     "lesion_mask": (lesions, "mask")}
    organ_labels = ";".join(str(v) for v in ORGAN_LABELS.values())
    images.rows = [
        {"modality": "CT", "file": "ct", "mask_file": "lesion_mask", "mask_labels": "", "roi": "lesions", "units": "HU"},
        {"modality": "PET", "file": "pet", "mask_file": "lesion_mask", "mask_labels": "", "roi": "lesions", "units": "SUV"},
        {"modality": "PET", "file": "pet", "mask_file": "organ_mask", "mask_labels": organ_labels, "roi": "organs",
         "units": "SUV"},
    ]
    images.lesions = records
    return images


SCENARIO = Scenario(
    name="wholebody_petct",
    id_prefix="WB",
    modalities={
        "imaging": Modality(blocks=("radiomics", "organ_suv"), images=("CT", "PET")),
    },
    default_missing={"imaging": 0.0},
    generate=generate,
    render=render,
    field_of_view_mm=400.0,
    description="whole-body FDG PET/CT, organ uptake network, scanner effects per centre; treatment response",
)
