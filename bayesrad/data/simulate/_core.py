"""Simulation results, missingness and writing: what every scenario shares.

A scenario module provides a ``Scenario``: its modalities (which blocks and image modalities go
missing together), default missingness, a ``generate(n, rng)`` function that samples the
tabular part through a ``NetworkSampler`` and returns scenario-specific truth, and a
``render(patient, rng, grid)`` function that turns one patient's latent phenotype into image
arrays. Rendering draws from a per-patient random stream, so the tabular data are identical
with or without images.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import SimpleITK as sitk
import yaml
from scipy.special import expit

from bayesrad.data.cohort import Cohort
from bayesrad.data.simulate._render import Grid, PatientImages
from bayesrad.errors import CohortError

# Slope of the MAR missingness logit per standard deviation of the driving column: strong
# enough that a complete-case analysis is visibly biased, weak enough that no stratum is empty.
MAR_SLOPE_PER_SD = 1.5
# Blocks that never go missing unless a missing= dict names them explicitly.
_ALWAYS_OBSERVED = ("clinical", "outcome")


@dataclass(frozen=True)
class Modality:
    """What a patient lacks when this modality is missing: whole blocks (the patient leaves
    them), image modalities (no file), and single columns of other blocks (set to NaN, e.g.
    the MR features of a block that mixes MR and PET features)."""

    blocks: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """A clinical setting: its generating model and its image renderer."""

    name: str
    id_prefix: str
    modalities: dict[str, Modality]
    default_missing: dict
    generate: Callable[[int, np.random.Generator], dict]
    render: Callable[[dict, np.random.Generator, Grid], PatientImages] | None
    field_of_view_mm: float = 144.0
    description: str = ""


@dataclass
class Truth:
    """The generating model of a simulated cohort and each patient's hidden values.

    Attributes
    ----------
    graph : networkx.DiGraph over node names (column names, latent block names, ``centre``);
        node attributes ``kind`` and ``block`` (plus ``levels``, ``unit``, ``latent_dim``,
        ``columns``, ``event`` where they apply).
    parameters : dict of parameter tables, convention in ``bayesrad.data.simulate._engine``;
        also ``missingness`` (per modality: rate, mechanism, depends_on, intercept, slope) and
        ``latent_dims`` (meaning of each latent dimension).
    latents : DataFrame indexed by ``patient_id`` (all patients, missing modalities included):
        latent dimensions (``radiomics[0]``...), the image phenotype used to render
        (e.g. ``tumour_volume_ml``, ``suv_mean``, ``uptake_heterogeneity``), true event times.
    outcome_probability : DataFrame indexed by ``patient_id``: P(outcome = 1) of each binary
        outcome and ``f"{outcome}[{level}]"`` class probabilities, given the outcome's parents.
    gene_modules : Series gene -> module id (the ``genes[j]`` dimension it loads on, -1 for
        none), or None.
    centre_effects : ``{child: {centre: effect}}`` (random intercepts; for log-scale PET
        nodes ``exp(effect)`` is the multiplicative scanner factor), or None.
    lesions : DataFrame, one row per rendered lesion (patient_id, lesion_id, site, volume_ml,
        suv_mean, centre in mm), filled by ``Simulation.write``; else None.
    truth_images : DataFrame of truth-only images written by ``Simulation.write``
        (patient_id, name, path), e.g. the glioma aggressive-subregion masks; else empty.
    """

    graph: nx.DiGraph
    parameters: dict
    latents: pd.DataFrame
    outcome_probability: pd.DataFrame
    gene_modules: pd.Series | None = None
    centre_effects: dict | None = None
    lesions: pd.DataFrame | None = None
    truth_images: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["patient_id", "name", "path"]))

    def __repr__(self) -> str:
        kinds = pd.Series(dict(self.graph.nodes(data="kind"))).value_counts().to_dict()
        return (f"Truth({self.graph.number_of_nodes()} nodes {kinds}, {self.graph.number_of_edges()} edges, "
                f"latents {list(self.latents.columns)[:6]}..., outcomes {list(self.outcome_probability.columns)})")

    @property
    def aggressive_masks(self) -> pd.Series:
        """patient_id -> path of the true aggressive-subregion mask (glioma, after writing)."""
        rows = self.truth_images[self.truth_images["name"] == "aggressive_mask"]
        return pd.Series(rows["path"].to_numpy(), index=pd.Index(rows["patient_id"], name="patient_id"), name="path")

    def write(self, path: str | Path) -> Path:
        """Write graph (YAML), parameters (JSON), latents and outcome probabilities (CSV)."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        nodes = [{"name": n, **{k: _plain(v) for k, v in attrs.items()}} for n, attrs in self.graph.nodes(data=True)]
        edges = [[u, v] for u, v in self.graph.edges]
        (root / "graph.yaml").write_text(yaml.safe_dump({"nodes": nodes, "edges": edges}, sort_keys=False))
        (root / "parameters.json").write_text(json.dumps(_jsonable(self.parameters), indent=1))
        self.latents.to_csv(root / "latents.csv")
        self.outcome_probability.to_csv(root / "outcome_probability.csv")
        if self.gene_modules is not None:
            self.gene_modules.rename("module").to_csv(root / "gene_modules.csv")
        if self.centre_effects is not None:
            (root / "centre_effects.json").write_text(json.dumps(_jsonable(self.centre_effects), indent=1))
        if self.lesions is not None:
            self.lesions.to_csv(root / "lesions.csv", index=False)
        if len(self.truth_images):
            self.truth_images.to_csv(root / "truth_images.csv", index=False)
        return root


def _plain(value):
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _jsonable(obj):
    """Tuple keys -> ``"parent -> child"``, numpy -> Python, for JSON."""
    if isinstance(obj, dict):
        return {(" -> ".join(map(str, k)) if isinstance(k, tuple) else str(k)): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (pd.Series, pd.DataFrame)):
        return _jsonable(obj.to_dict())
    return obj


@dataclass
class Simulation:
    """A simulated cohort with its truth.

    Attributes
    ----------
    cohort : the ``Cohort`` (tabular blocks; ``images`` filled once written).
    truth : the ``Truth``.
    scenario, seed, image_size : how it was made.
    """

    cohort: Cohort
    truth: Truth
    scenario: str
    seed: int
    image_size: int
    _patients: pd.DataFrame = field(repr=False, default=None)
    _image_missing: dict = field(repr=False, default_factory=dict)

    def __repr__(self) -> str:
        return (f"Simulation({self.scenario!r}, {self.cohort.n_patients} patients, seed={self.seed}, "
                f"blocks={list(self.cohort.blocks)}, images={len(self.cohort.images)})")

    def write(self, path: str | Path) -> Cohort:
        """Render and write images (NIfTI), the cohort (``Cohort.to_directory``) and ``truth/``.

        Images go to ``path/images/<patient_id>/<name>.nii[.gz]`` with spacing and origin in mm;
        truth-only images (e.g. aggressive-subregion masks) to ``path/truth/images/``. A
        patient missing an image modality gets no file for it. Returns the cohort with its
        images table (also stored as ``self.cohort``).
        """
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        scenario = SCENARIO_REGISTRY[self.scenario]
        rows, truth_rows, lesion_rows = [], [], []
        if scenario.render is not None:
            grid = Grid(self.image_size, scenario.field_of_view_mm)
            for index, (pid, patient) in enumerate(self._patients.iterrows()):
                rng = np.random.default_rng([self.seed, 1, index])
                rendered = scenario.render(patient.to_dict(), rng, grid)
                present = [m for m in rendered.rows if pid not in self._image_missing.get(m["modality"], ())]
                needed = {m["file"] for m in present} | {m["mask_file"] for m in present if m.get("mask_file")}
                folder = root / "images" / pid
                written = {}
                for name, (array, kind) in rendered.arrays.items():
                    if name in needed:
                        written[name] = _write_nifti(array, kind, grid, folder / name, rendered.frame_spacing_s)
                for m in present:
                    rows.append({
                        "patient_id": pid, "modality": m["modality"], "path": str(written[m["file"]]),
                        "mask_path": str(written[m["mask_file"]]) if m.get("mask_file") else "",
                        "mask_labels": m.get("mask_labels", ""), "roi": m.get("roi", ""),
                        "frame_times": m.get("frame_times", ""), "units": m.get("units", ""),
                    })
                for name, (array, kind) in rendered.truth_arrays.items():
                    file = _write_nifti(array, kind, grid, root / "truth" / "images" / f"{pid}_{name}", None)
                    truth_rows.append({"patient_id": pid, "name": name, "path": str(file)})
                lesion_rows.extend({"patient_id": pid, **r} for r in rendered.lesions)
        images = pd.DataFrame(rows) if rows else None
        cohort = Cohort(
            self.cohort.blocks, images, self.cohort.schema, patient_ids=list(self.cohort.patient_ids),
            name=self.cohort.name,
        )
        cohort.to_directory(root)
        self.cohort = cohort
        if truth_rows:
            self.truth.truth_images = pd.DataFrame(truth_rows)
        if lesion_rows:
            self.truth.lesions = pd.DataFrame(lesion_rows)
        self.truth.write(root / "truth")
        return self.cohort


def _write_nifti(array: np.ndarray, kind: str, grid: Grid, stem: Path, frame_spacing_s) -> Path:
    """Write a (z, y, x) or (t, z, y, x) array on ``grid`` as NIfTI; returns the file path.

    Masks and CT (integers) are gzip-compressed (``.nii.gz``, 5-20x smaller, fast); float
    volumes (PET, dose, MR) are written raw (``.nii``): their noise barely compresses and
    gzip made writing them 5-8x slower, the bulk of the 60 s budget for 200 patients.
    """
    dtype = {"mask": np.uint8, "ct": np.int16, "float": np.float32}[kind]
    if array.ndim == 4:
        # JoinSeries: GetImageFromArray may read a 4D array as a 3D vector image.
        image = sitk.JoinSeries([sitk.GetImageFromArray(np.ascontiguousarray(f.astype(dtype))) for f in array])
        image.SetSpacing((*grid.spacing_xyz, float(frame_spacing_s or 1.0)))
        image.SetOrigin((*grid.origin_xyz, 0.0))
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array.astype(dtype)))
        image.SetSpacing(grid.spacing_xyz)
        image.SetOrigin(grid.origin_xyz)
    compress = kind != "float"
    path = stem.with_name(stem.name + (".nii.gz" if compress else ".nii"))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=compress, compressionLevel=1)
    return path.resolve()


# ---------------------------------------------------------------------- missingness
def parse_missing(missing, scenario: Scenario, clinical: pd.DataFrame) -> dict[str, dict]:
    """Normalise ``missing=`` into ``{modality: {"rate", "mechanism", "depends_on"}}``.

    Raises ``CohortError`` naming the bad key or value and what is allowed.
    """
    allowed = list(scenario.modalities) + ["outcome"]
    if missing is None:
        missing = scenario.default_missing
    if isinstance(missing, bool) or not isinstance(missing, (int, float, dict)):
        raise CohortError(
            f"missing={missing!r}: give None (scenario default), a rate in [0, 1) or a dict "
            f"modality -> rate or {{'rate': r, 'mechanism': 'MCAR'|'MAR', 'depends_on': column}}"
        )
    if not isinstance(missing, dict):
        missing = {m: float(missing) for m in scenario.modalities}
    spec = {}
    for modality, value in missing.items():
        if modality not in allowed:
            raise CohortError(
                f"missing: unknown modality {modality!r} for scenario {scenario.name!r}; "
                f"use one of {allowed}"
            )
        if not isinstance(value, dict):
            value = {"rate": value}
        unknown = set(value) - {"rate", "mechanism", "depends_on"}
        if unknown:
            raise CohortError(f"missing[{modality!r}]: unknown key(s) {sorted(unknown)}; use rate, mechanism, depends_on")
        rate = value.get("rate")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise CohortError(f"missing[{modality!r}]: rate must be a number in [0, 1), got {rate!r}")
        mechanism = str(value.get("mechanism", "MCAR")).upper()
        if mechanism not in ("MCAR", "MAR"):
            raise CohortError(f"missing[{modality!r}]: mechanism must be 'MCAR' or 'MAR', got {value.get('mechanism')!r}")
        depends_on = value.get("depends_on")
        if mechanism == "MAR":
            if depends_on not in clinical.columns:
                raise CohortError(
                    f"missing[{modality!r}]: MAR needs depends_on naming an observed clinical column "
                    f"(one of {list(clinical.columns)}), got {depends_on!r}"
                )
        elif depends_on is not None:
            raise CohortError(f"missing[{modality!r}]: depends_on={depends_on!r} only applies to mechanism 'MAR'")
        spec[modality] = {"rate": float(rate), "mechanism": mechanism, "depends_on": depends_on}
    return spec


def draw_missing(spec: dict, clinical: pd.DataFrame, rng: np.random.Generator) -> tuple[dict, dict]:
    """Which patients miss each modality, and the mechanism's parameters.

    MCAR: each patient misses with probability ``rate``. MAR: ``P(miss) = sigmoid(a + b * x)``
    with ``x`` the standardised ``depends_on`` column (category codes for text columns),
    ``b = MAR_SLOPE_PER_SD`` and ``a`` solved so that the mean probability equals ``rate``.
    Returns (modality -> boolean array over patients, modality -> parameters).
    """
    masks, params = {}, {}
    n = len(clinical)
    for modality, s in spec.items():
        if s["rate"] == 0.0:
            masks[modality] = np.zeros(n, bool)
            params[modality] = dict(s)
            continue
        if s["mechanism"] == "MCAR":
            prob = np.full(n, s["rate"])
            intercept, slope = math.log(s["rate"] / (1 - s["rate"])), 0.0
        else:
            column = clinical[s["depends_on"]]
            x = (column.cat.codes.astype(float) if isinstance(column.dtype, pd.CategoricalDtype)
                 else pd.to_numeric(column, errors="coerce")).to_numpy(float)
            x = np.nan_to_num((x - np.nanmean(x)) / (np.nanstd(x) or 1.0))
            slope = MAR_SLOPE_PER_SD
            lo, hi = -30.0, 30.0
            for _ in range(80):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if expit(mid + slope * x).mean() < s["rate"] else (lo, mid)
            intercept = 0.5 * (lo + hi)
            prob = expit(intercept + slope * x)
        masks[modality] = rng.random(n) < prob
        params[modality] = {**s, "intercept": float(intercept), "slope_per_sd": float(slope)}
    return masks, params


SCENARIO_REGISTRY: dict[str, Scenario] = {}
