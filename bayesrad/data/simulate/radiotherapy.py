"""Scenario ``radiotherapy``: lung cancer treated with radiotherapy.

Generating DAG (parameters in ``truth.parameters``)::

    centre, age_years, sex_male                         clinical roots
    sex_male -> histology (adenocarcinoma | squamous | large_cell)
    age_years -> ecog (0-2)
    histology -> radiomics latent (2 dims: [0] tumour size, [1] aggressiveness)
    radiomics -> positive_nodes (count) -> stage (1-4) <- radiomics[0]
    radiomics[1], histology -> genes latent (hypoxia, proliferation, immune modules)
    stage, ecog, centre -> dose_mean_gy -> d95_gy <- radiomics[0]
    dose_mean_gy, radiomics[0] -> lung_v20_pct
    dose_mean_gy, radiomics, genes[hypoxia], histology -> local_control (binary)
    age_years, ecog, stage, local_control, radiomics[1], genes[immune], centre -> overall_survival

Images (with ``out=``): a 144 mm CT crop around the tumour (lung -800 HU, chest wall), a PET
in SUV and a dose grid in Gy on the same grid, and a structure mask (1 = GTV, 2 = the lung
of the crop; the DOSE row names both, roi ``gtv;lung``). The size latent
sets the volume (``tumour_volume_ml = exp(3.2 + 0.8 z0)``), the aggressiveness latent sets PET
uptake (``suv_mean``), its heterogeneity, CT texture, lobulation and a necrotic core; the dose
grid's DVH reproduces ``dose_mean_gy`` and ``d95_gy`` over the GTV exactly and
``lung_v20_pct`` (% of the imaged lung at >= 20 Gy) to the voxel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.special import expit

from bayesrad.data.simulate._core import Modality, Scenario
from bayesrad.data.simulate._engine import NetworkSampler
from bayesrad.data.simulate._genes import add_gene_block
from bayesrad.data.simulate._render import (
    Grid, PatientImages, dose_grid, lobulated_blob, pet_blur, pet_noise, smooth_noise,
)

CENTRES = ("centre_A", "centre_B", "centre_C", "centre_D")
GENE_MODULES = ("hypoxia", "proliferation", "immune")

# Radiomics block: (column, intercept, loadings on [size, aggressiveness], noise sd, unit).
RADIOMICS_COLUMNS = (
    ("ct_gtv_shape_log_volume_ml", 3.2, (0.8, 0.0), 0.08, "log(ml)"),
    ("ct_gtv_shape_max_diameter_mm", 45.0, (11.0, 2.0), 3.0, "mm"),
    ("ct_gtv_shape_sphericity", 0.74, (-0.03, -0.04), 0.02, None),
    ("ct_gtv_firstorder_mean_hu", 25.0, (0.0, -6.0), 4.0, "HU"),
    ("ct_gtv_firstorder_std_hu", 40.0, (3.0, 9.0), 4.0, "HU"),
    ("ct_gtv_glcm_contrast", 30.0, (2.0, 8.0), 4.0, None),
    ("ct_gtv_glszm_zone_entropy", 5.5, (0.2, 0.3), 0.15, None),
    ("pet_gtv_suvmax", 9.0, (1.0, 2.5), 0.8, "SUV"),
    ("pet_gtv_suvmean", 5.0, (0.4, 1.3), 0.4, "SUV"),
    ("pet_gtv_firstorder_entropy", 3.0, (0.1, 0.25), 0.1, None),
    ("pet_gtv_uptake_cov", 0.25, (0.01, 0.06), 0.02, None),
)


def image_phenotype(z_size: np.ndarray, z_aggr: np.ndarray) -> dict[str, np.ndarray]:
    """The rendered tumour phenotype as deterministic functions of the radiomics latent."""
    return {
        "tumour_volume_ml": np.exp(3.2 + 0.8 * z_size),
        "suv_mean": 5.0 * np.exp(0.4 * z_aggr),
        "uptake_heterogeneity": 0.15 + 0.25 * expit(1.2 * z_aggr),
        "ct_texture_sd_hu": 25.0 * np.exp(0.3 * z_aggr),
        "lobulation": 0.06 + 0.14 * expit(1.2 * z_aggr),
        "necrosis_fraction": 0.35 * expit(2.0 * (z_aggr + 0.5 * z_size - 1.5)),
    }


def generate(n: int, rng: np.random.Generator) -> dict:
    g = NetworkSampler(n, rng)
    g.group("centre", CENTRES, (0.35, 0.30, 0.20, 0.15))
    g.continuous("age_years", "clinical", 67.0, 9.0, unit="years")
    g.binary("sex_male", "clinical", 0.4)
    g.categorical("histology", "clinical", ("adenocarcinoma", "squamous", "large_cell"), (0.0, -0.3, -1.4),
                  coefs={"sex_male": (0.0, 0.7, 0.3)})
    g.ordinal("ecog", "clinical", (0, 1, 2), cutpoints=(2.4, 4.6), coefs={"age_years": 0.045})
    z = g.latent("radiomics", "radiomics", 2, coefs=[
        {"histology[squamous]": 0.4, "histology[large_cell]": 0.5},
        {"histology[squamous]": 0.3, "histology[large_cell]": 0.9},
    ])
    g.factor_block("radiomics", [c[0] for c in RADIOMICS_COLUMNS], [c[1] for c in RADIOMICS_COLUMNS],
                   [c[2] for c in RADIOMICS_COLUMNS], [c[3] for c in RADIOMICS_COLUMNS],
                   units=[c[4] for c in RADIOMICS_COLUMNS])
    g.count("positive_nodes", "clinical", 0.0, coefs={"radiomics[0]": 0.3, "radiomics[1]": 0.5})
    g.ordinal("stage", "clinical", (1, 2, 3, 4), cutpoints=(-1.0, 0.6, 2.8),
              coefs={"radiomics[0]": 1.0, "positive_nodes": 0.5})
    gene_modules = add_gene_block(g, {
        "hypoxia": {"radiomics[1]": 0.8},
        "proliferation": {"radiomics[1]": 0.5, "histology[squamous]": 0.6},
        "immune": {},
    })
    g.continuous("dose_mean_gy", "dosimetry", 57.0, 1.8, coefs={"stage": 1.5, "ecog": -1.2},
                 groups={"centre": 1.5}, unit="Gy")
    g.continuous("d95_gy", "dosimetry", -2.0, 0.6, coefs={"dose_mean_gy": 0.97, "radiomics[0]": -0.6}, unit="Gy")
    g.continuous("lung_v20_pct", "dosimetry", 7.0, 4.0, coefs={"dose_mean_gy": 0.3, "radiomics[0]": 4.0}, unit="%")
    g.binary("local_control", "outcome", -9.2, coefs={
        "dose_mean_gy": 0.17, "radiomics[0]": -0.7, "radiomics[1]": -0.4, "genes[0]": -0.5,
        "histology[squamous]": -0.3,
    })
    g.survival("overall_survival", "outcome", 8.7, 0.8, coefs={
        "age_years": -0.02, "ecog": -0.25, "stage": -0.2, "local_control": 0.6,
        "radiomics[1]": -0.2, "genes[2]": 0.2,
    }, groups={"centre": 0.1})
    phenotype = image_phenotype(z[:, 0], z[:, 1])
    return {
        "generator": g,
        "latents": phenotype,
        "gene_modules": gene_modules,
        "latent_dims": {"radiomics": ["size", "aggressiveness"], "genes": list(GENE_MODULES)},
    }


def render(patient: dict, rng: np.random.Generator, grid: Grid) -> PatientImages:
    """CT (HU), PET (SUV), dose (Gy) and tumour mask for one patient."""
    centre = rng.uniform(-8.0, 8.0, 3)
    mask, rel = lobulated_blob(grid, centre, patient["tumour_volume_ml"], patient["lobulation"], rng)
    necrotic = rel <= np.cbrt(patient["necrosis_fraction"])
    # Two random fields serve all textures: a fine one shared by CT texture and PET uptake
    # heterogeneity (the same tumour biology shows in both) and a coarse one for the background.
    fine = smooth_noise(rng, grid.shape, 1.0)
    coarse = smooth_noise(rng, grid.shape, 3.0)
    # Lung background with a chest wall on one side of the crop.
    wall = np.broadcast_to(grid.x, grid.shape) > 0.6 * grid.x.max() + 6.0 * coarse
    ct = np.where(wall, 40.0, -800.0) + 30.0 * coarse
    tumour_ct = 30.0 + patient["ct_texture_sd_hu"] * fine - 25.0 * necrotic
    ct = np.where(mask, tumour_ct, ct)
    ct = ndimage.gaussian_filter(ct, 0.5) + rng.normal(0.0, 12.0, grid.shape)
    uptake = patient["suv_mean"] * np.maximum(1.0 + patient["uptake_heterogeneity"] * fine, 0.1)
    uptake = np.where(necrotic, 0.3 * uptake, uptake)
    suv = np.where(mask, uptake, np.where(wall, 0.9, 0.5))
    pet = pet_noise(rng, pet_blur(grid, suv))
    lung = ~wall & ~mask
    dose = dose_grid(grid, mask, patient["dose_mean_gy"], patient["d95_gy"], rng,
                     organ=lung, organ_v20_pct=patient["lung_v20_pct"])
    images = PatientImages()
    structures = np.where(mask, 1, np.where(lung, 2, 0))
    images.arrays = {"ct": (np.clip(ct, -1024, 3000), "ct"), "pet": (pet, "float"), "dose": (dose, "float"),
                     "structures": (structures, "mask")}
    images.rows = [
        {"modality": "CT", "file": "ct", "mask_file": "structures", "mask_labels": "1", "roi": "gtv", "units": "HU"},
        {"modality": "PET", "file": "pet", "mask_file": "structures", "mask_labels": "1", "roi": "gtv", "units": "SUV"},
        {"modality": "DOSE", "file": "dose", "mask_file": "structures", "mask_labels": "1;2", "roi": "gtv;lung",
         "units": "Gy"},
    ]
    return images


SCENARIO = Scenario(
    name="radiotherapy",
    id_prefix="RT",
    modalities={
        "imaging": Modality(blocks=("radiomics",), images=("CT", "PET")),
        "dosimetry": Modality(blocks=("dosimetry",), images=("DOSE",)),
        "genes": Modality(blocks=("genes",)),
    },
    default_missing={"imaging": 0.05, "genes": 0.2},
    generate=generate,
    render=render,
    description="lung cancer radiotherapy: clinical, CT+PET, dose, genes; local control and overall survival",
)
