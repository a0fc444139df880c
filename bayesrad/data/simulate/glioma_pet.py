"""Scenario ``glioma_pet``: treated glioma with a new lesion, true progression or radionecrosis.

Generating DAG::

    age_years -> idh_mutant -> mgmt_methylated
    age_years -> radiotherapy_dose_gy;  weeks_since_radiotherapy (count)
    idh_mutant, mgmt_methylated -> radiomics latent [1] (aggressiveness)
    weeks_since_radiotherapy -> radiomics latent [0] (lesion size)
    idh_mutant, radiomics[1] -> who_grade (2-4)
    radiomics[1], radiotherapy_dose_gy, weeks_since_radiotherapy, idh_mutant -> progression
        (1 = true tumour progression, 0 = radionecrosis / treatment-related change)
    centre -> pet_background_log_suv (block ``pet_reference``)

Centres: each patient is scanned at one of ``CENTRES``, whose PET scanner calibration multiplies
every PET intensity by ``exp(SCANNER_LOG_FACTOR[centre])`` (fixed by the scenario, in
``truth.parameters["scanner_log_factor"]`` and, as the centre's random intercept of
``pet_background_log_suv``, in ``truth.centre_effects``). The static and dynamic PET images
carry the factor, so SUV-level image features (peak SUV, slopes in SUV/h) shift between
centres; ratios and times (TBR, time to peak, curve shapes) do not. The tabular radiomics
columns are each centre's calibrated read and carry no centre effect; the centre shows in
``pet_background_log_suv``, the log mean SUV of normal brain, the reference region every
centre measures. The centre node is sampled after every other node, so that adding it left
the other columns of a seed unchanged.

Images (with ``out=``), 192 mm field of view: a contrast-enhanced T1 MR (a.u.), a dynamic
amino-acid (FET-like) PET in SUV written as a 4D NIfTI (frames start at ``FRAME_STARTS_S``,
listed in the images table's ``frame_times``), the static 20-40 min PET, and the lesion mask.
Inside the lesion an aggressive subregion (``aggressive_fraction`` of the volume, set by the
aggressiveness latent) follows an early-peak-then-washout time-activity curve with a higher
tumour-to-background ratio; the rest of the lesion rises slowly (treatment-related change).
The true subregion masks are written to ``truth/images`` (``truth.aggressive_masks``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.special import expit

from bayesrad.data.simulate._core import Modality, Scenario
from bayesrad.data.simulate._engine import NetworkSampler
from bayesrad.data.simulate._render import Grid, PatientImages, lobulated_blob, pet_blur, smooth_noise

# Frame start times (s) of a 40-min dynamic acquisition; the last frame ends at 2400 s.
FRAME_STARTS_S = (0, 60, 180, 300, 480, 720, 1080, 1440, 1800, 2100)
FRAME_END_S = 2400
BACKGROUND_SUV = 1.0
CENTRES = ("centre_A", "centre_B", "centre_C", "centre_D")
CENTRE_SHARES = (0.3, 0.3, 0.2, 0.2)
# log of each scanner's calibration factor: -15% to +35% SUV, the spread of uncalibrated
# multicentre PET before EARL-style harmonisation.
SCANNER_LOG_FACTOR = {"centre_A": 0.0, "centre_B": -0.16, "centre_C": 0.12, "centre_D": 0.30}
# Residual sd of the normal-brain log SUV within a centre (biology and region placement).
BACKGROUND_LOG_SD = 0.08

RADIOMICS_COLUMNS = (
    ("mr_lesion_log_volume_ml", 2.5, (0.7, 0.0), 0.08, "log(ml)"),
    ("mr_lesion_enhancement_ratio", 1.5, (0.05, 0.12), 0.05, None),
    ("mr_lesion_firstorder_std", 80.0, (5.0, 20.0), 8.0, "a.u."),
    ("pet_lesion_tbr_max", 2.6, (0.1, 0.45), 0.15, None),
    ("pet_lesion_tbr_mean", 1.9, (0.05, 0.25), 0.1, None),
    ("dpet_lesion_time_to_peak_min", 22.0, (0.0, -7.0), 3.0, "min"),
    ("dpet_lesion_late_slope_suv_per_h", 0.2, (0.0, -0.5), 0.15, "SUV/h"),
)


def image_phenotype(z_size: np.ndarray, z_aggr: np.ndarray) -> dict[str, np.ndarray]:
    """Rendered lesion phenotype as deterministic functions of the latent."""
    return {
        "lesion_volume_ml": np.exp(2.5 + 0.7 * z_size),
        "aggressive_fraction": 0.05 + 0.85 * expit(1.5 * z_aggr - 0.3),
        "tbr_aggressive": 2.6 * np.exp(0.15 * z_aggr),
        "tbr_treatment": np.full_like(z_aggr, 1.7),
    }


def tac_aggressive(t_min: np.ndarray, level: float) -> np.ndarray:
    """Early peak (~9 min) then washout: SUV relative to background."""
    return level * (1.0 - np.exp(-t_min / 2.5)) * np.exp(-0.012 * t_min)


def tac_treatment(t_min: np.ndarray, level: float) -> np.ndarray:
    """Slowly rising curve without washout (treatment-related change)."""
    return level * (1.0 - np.exp(-t_min / 12.0))


def tac_background(t_min: np.ndarray) -> np.ndarray:
    return BACKGROUND_SUV * (1.0 - np.exp(-t_min / 2.0)) * (1.0 - 0.001 * t_min)


def generate(n: int, rng: np.random.Generator) -> dict:
    g = NetworkSampler(n, rng)
    g.continuous("age_years", "clinical", 52.0, 13.0, unit="years")
    g.binary("sex_male", "clinical", 0.3)
    g.binary("idh_mutant", "clinical", 2.0, coefs={"age_years": -0.05})
    g.binary("mgmt_methylated", "clinical", -0.6, coefs={"idh_mutant": 1.8})
    g.continuous("radiotherapy_dose_gy", "clinical", 64.0, 1.5, coefs={"age_years": -0.08}, unit="Gy")
    g.count("weeks_since_radiotherapy", "clinical", 3.6, unit="weeks")
    z = g.latent("radiomics", "radiomics", 2, coefs=[
        {"weeks_since_radiotherapy": 0.01},
        {"idh_mutant": -0.8, "mgmt_methylated": -0.4},
    ])
    g.factor_block("radiomics", [c[0] for c in RADIOMICS_COLUMNS], [c[1] for c in RADIOMICS_COLUMNS],
                   [c[2] for c in RADIOMICS_COLUMNS], [c[3] for c in RADIOMICS_COLUMNS],
                   units=[c[4] for c in RADIOMICS_COLUMNS])
    g.ordinal("who_grade", "clinical", (2, 3, 4), cutpoints=(-1.0, 0.5), coefs={"idh_mutant": -1.5, "radiomics[1]": 0.8})
    g.binary("progression", "outcome", 9.2, coefs={
        "radiomics[1]": 1.6, "radiotherapy_dose_gy": -0.15, "weeks_since_radiotherapy": 0.03, "idh_mutant": -0.6,
    })
    centres = g.group("centre", CENTRES, CENTRE_SHARES)
    g.continuous("pet_background_log_suv", "pet_reference", float(np.log(BACKGROUND_SUV)), BACKGROUND_LOG_SD,
                 groups={"centre": SCANNER_LOG_FACTOR}, unit="log(SUV)")
    scanner_factor = np.exp(np.array([SCANNER_LOG_FACTOR[c] for c in centres]))
    return {
        "generator": g,
        "latents": {**image_phenotype(z[:, 0], z[:, 1]), "scanner_factor": scanner_factor},
        "latent_dims": {"radiomics": ["size", "aggressiveness"]},
        "parameters": {"frames": {"start_s": list(FRAME_STARTS_S), "end_s": FRAME_END_S},
                       "scanner_log_factor": dict(SCANNER_LOG_FACTOR)},
    }


def render(patient: dict, rng: np.random.Generator, grid: Grid) -> PatientImages:
    """MR, dynamic PET (4D), static PET, lesion mask and the true aggressive subregion."""
    brain = ((grid.x / 62.0) ** 2 + (grid.y / 78.0) ** 2 + (grid.z / 58.0) ** 2) <= 1.0
    centre = rng.uniform(-22.0, 22.0, 3)
    lesion, rel = lobulated_blob(grid, centre, patient["lesion_volume_ml"], 0.12, rng)
    lesion &= brain
    # The aggressive part: the lesion voxels where a smooth random field is highest, so the
    # subregion is spatially coherent; at least one voxel so its mask is never empty.
    field_ = smooth_noise(rng, grid.shape, 2.0)[lesion]
    n_aggr = max(1, int(round(patient["aggressive_fraction"] * lesion.sum())))
    aggressive = np.zeros(grid.shape, bool)
    aggressive.flat[np.flatnonzero(lesion)[np.argsort(-field_)[:n_aggr]]] = True
    treatment = lesion & ~aggressive
    texture = np.maximum(1.0 + 0.1 * smooth_noise(rng, grid.shape, 1.0), 0.5)
    # The PSF is linear, so blurring each tissue map once and mixing their time-activity
    # curves frame by frame equals blurring every frame.
    maps = [pet_blur(grid, (brain & ~lesion) * texture), pet_blur(grid, treatment * texture),
            pet_blur(grid, aggressive * texture)]
    starts = np.asarray(FRAME_STARTS_S, float)
    ends = np.append(starts[1:], FRAME_END_S)
    mid_min = (starts + ends) / 2.0 / 60.0
    curves = np.stack([
        tac_background(mid_min),
        BACKGROUND_SUV * tac_treatment(mid_min, patient["tbr_treatment"]),
        BACKGROUND_SUV * tac_aggressive(mid_min, patient["tbr_aggressive"] * 1.35),
    ])
    frames = np.einsum("ct,czyx->tzyx", curves, np.stack(maps))
    # Short frames hold fewer counts: noise sd scales with 1/sqrt(duration).
    relative_sd = 0.1 * np.sqrt(60.0 / (ends - starts))[:, None, None, None]
    frames = np.maximum(frames + rng.standard_normal(frames.shape) * relative_sd * np.sqrt(np.maximum(frames, 0.0)), 0.0)
    # The centre's scanner calibration scales every reconstructed PET value (noise included).
    frames = frames * patient["scanner_factor"]
    late = (starts >= 1200)
    static = np.average(frames[late], axis=0, weights=(ends - starts)[late])
    mr = np.where(brain, 500.0, 50.0) + np.where(treatment, 180.0, 0.0) + np.where(aggressive, 420.0, 0.0)
    mr = ndimage.gaussian_filter(mr, 0.6) * texture + rng.normal(0.0, 15.0, grid.shape)
    images = PatientImages(frame_spacing_s=1.0)
    images.arrays = {"mr_t1c": (mr, "float"), "pet_static": (static, "float"), "pet_dynamic": (frames, "float"),
                     "lesion_mask": (lesion, "mask")}
    images.truth_arrays = {"aggressive_mask": (aggressive, "mask")}
    frame_times = ";".join(str(int(s)) for s in FRAME_STARTS_S)
    images.rows = [
        {"modality": "MR_T1C", "file": "mr_t1c", "mask_file": "lesion_mask", "mask_labels": "1", "roi": "lesion", "units": "a.u."},
        {"modality": "PET", "file": "pet_static", "mask_file": "lesion_mask", "mask_labels": "1", "roi": "lesion", "units": "SUV"},
        {"modality": "DPET", "file": "pet_dynamic", "mask_file": "lesion_mask", "mask_labels": "1", "roi": "lesion",
         "frame_times": frame_times, "units": "SUV"},
    ]
    return images


SCENARIO = Scenario(
    name="glioma_pet",
    id_prefix="GL",
    modalities={
        "mr": Modality(images=("MR_T1C",), columns=tuple(c[0] for c in RADIOMICS_COLUMNS if c[0].startswith("mr_"))),
        "pet": Modality(blocks=("radiomics", "pet_reference"), images=("PET", "DPET")),
    },
    default_missing={"mr": 0.05},
    generate=generate,
    render=render,
    field_of_view_mm=192.0,
    description="glioma after radiotherapy, four centres: MR, dynamic amino-acid PET; progression vs radionecrosis",
)
