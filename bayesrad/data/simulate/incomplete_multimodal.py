"""Scenario ``incomplete_multimodal``: CT, PET and MR radiomics, genes and clinical data, with
heavy missingness (MCAR and MAR given observed clinical variables) to test marginalisation.

Generating DAG::

    age_years, sex_male -> smoking_pack_years (count)
    smoking_pack_years -> ct_radiomics latent: [0] tumour size, [1] density/texture
    ct_radiomics[0] -> stage (1-4);  age_years, stage -> ecog (0-2)
    ct_radiomics -> pet_radiomics latent (metabolic activity)
    ct_radiomics[0] -> mr_radiomics latent (diffusion restriction / cellularity)
    pet_radiomics -> genes latent (hypoxia, proliferation; immune is a root)
    pet_radiomics, mr_radiomics, genes[immune], stage, ecog -> response (binary)
    response, ct_radiomics[0], genes[proliferation], age_years -> progression_free_survival

Default missingness: CT 20 % MCAR, PET 40 % MAR given stage, MR 50 % MAR given age, genes
50 % MCAR. Tabular blocks only: this scenario writes no images.
"""

from __future__ import annotations

import numpy as np

from bayesrad.data.simulate._core import Modality, Scenario
from bayesrad.data.simulate._engine import NetworkSampler
from bayesrad.data.simulate._genes import add_gene_block

CT_COLUMNS = (
    ("ct_tumour_log_volume_ml", 3.0, (0.8, 0.0), 0.1, "log(ml)"),
    ("ct_tumour_max_diameter_mm", 40.0, (10.0, 1.0), 3.0, "mm"),
    ("ct_tumour_mean_hu", 30.0, (0.0, 8.0), 4.0, "HU"),
    ("ct_tumour_std_hu", 35.0, (2.0, 6.0), 4.0, "HU"),
    ("ct_tumour_glcm_contrast", 25.0, (1.0, 7.0), 3.0, None),
    ("ct_tumour_sphericity", 0.75, (-0.03, -0.02), 0.02, None),
)
PET_COLUMNS = (
    ("pet_tumour_suvmax", 8.0, (2.5,), 0.8, "SUV"),
    ("pet_tumour_suvmean", 4.5, (1.2,), 0.4, "SUV"),
    ("pet_tumour_log_tlg", 4.5, (0.6,), 0.2, "log(SUV*ml)"),
    ("pet_tumour_entropy", 3.0, (0.2,), 0.1, None),
)
MR_COLUMNS = (
    ("mr_tumour_adc_mean", 1.1, (-0.15,), 0.05, "1e-3 mm2/s"),
    ("mr_tumour_adc_p10", 0.8, (-0.12,), 0.05, "1e-3 mm2/s"),
    ("mr_tumour_t2_std", 60.0, (8.0,), 6.0, "a.u."),
    ("mr_tumour_dce_ktrans", 0.25, (0.05,), 0.03, "1/min"),
)


def _factor(g: NetworkSampler, latent: str, columns) -> None:
    g.factor_block(latent, [c[0] for c in columns], [c[1] for c in columns], [c[2] for c in columns],
                   [c[3] for c in columns], units=[c[4] for c in columns])


def generate(n: int, rng: np.random.Generator) -> dict:
    g = NetworkSampler(n, rng)
    g.continuous("age_years", "clinical", 61.0, 10.0, unit="years")
    g.binary("sex_male", "clinical", 0.2)
    g.count("smoking_pack_years", "clinical", 2.9, coefs={"sex_male": 0.3}, unit="pack-years")
    g.latent("ct_radiomics", "ct_radiomics", 2, coefs=[{}, {"smoking_pack_years": 0.02}])
    _factor(g, "ct_radiomics", CT_COLUMNS)
    g.ordinal("stage", "clinical", (1, 2, 3, 4), cutpoints=(-1.2, 0.3, 1.8), coefs={"ct_radiomics[0]": 1.0})
    g.ordinal("ecog", "clinical", (0, 1, 2), cutpoints=(3.0, 5.0), coefs={"age_years": 0.04, "stage": 0.3})
    g.latent("pet_radiomics", "pet_radiomics", 1, coefs=[{"ct_radiomics[0]": 0.5, "ct_radiomics[1]": 0.4}])
    _factor(g, "pet_radiomics", PET_COLUMNS)
    g.latent("mr_radiomics", "mr_radiomics", 1, coefs=[{"ct_radiomics[0]": 0.6}])
    _factor(g, "mr_radiomics", MR_COLUMNS)
    gene_modules = add_gene_block(g, {
        "hypoxia": {"pet_radiomics": 0.8},
        "proliferation": {"pet_radiomics": 0.4},
        "immune": {},
    }, n_genes=200, genes_per_module=30)
    g.binary("response", "outcome", 1.6, coefs={
        "pet_radiomics": -0.8, "mr_radiomics": -0.5, "genes[2]": 0.6, "stage": -0.4, "ecog": -0.3,
    })
    g.survival("progression_free_survival", "outcome", 7.1, 0.9, coefs={
        "response": 0.8, "ct_radiomics[0]": -0.3, "genes[1]": -0.25, "age_years": -0.01,
    }, admin_days=(730.0, 1825.0), dropout_days=4000.0)
    return {
        "generator": g,
        "gene_modules": gene_modules,
        "latent_dims": {"ct_radiomics": ["size", "density"], "pet_radiomics": ["metabolic_activity"],
                        "mr_radiomics": ["cellularity"], "genes": ["hypoxia", "proliferation", "immune"]},
    }


SCENARIO = Scenario(
    name="incomplete_multimodal",
    id_prefix="IM",
    modalities={
        "ct": Modality(blocks=("ct_radiomics",)),
        "pet": Modality(blocks=("pet_radiomics",)),
        "mr": Modality(blocks=("mr_radiomics",)),
        "genes": Modality(blocks=("genes",)),
    },
    default_missing={
        "ct": 0.2,
        "pet": {"rate": 0.4, "mechanism": "MAR", "depends_on": "stage"},
        "mr": {"rate": 0.5, "mechanism": "MAR", "depends_on": "age_years"},
        "genes": 0.5,
    },
    generate=generate,
    render=None,
    description="CT/PET/MR radiomics, genes and clinical data with heavy MCAR and MAR missingness",
)
