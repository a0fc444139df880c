"""Multimodal oncology cohorts with known ground truth.

``simulate(scenario, n_patients=200, seed=0, missing=None, out=None, image_size=48)`` samples a
cohort from a stated Bayesian network (clinical, dosimetric, radiomic, gene and outcome
nodes, latent tumour phenotypes) and, with ``out=``, renders the images that the latent
phenotype shapes (NIfTI CT/PET/MR/dose/dynamic PET and masks) and writes everything as a
cohort directory plus a ``truth/`` folder. See ``bayesrad.data.simulate._engine`` for the
parameter convention shared with ``bayesrad.model``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bayesrad.data.cohort import Cohort
from bayesrad.data.simulate import glioma_pet, incomplete_multimodal, liver_multiphase, radiotherapy, wholebody_petct
from bayesrad.data.simulate._core import (
    SCENARIO_REGISTRY, Modality, Scenario, Simulation, Truth, draw_missing, parse_missing,
)
from bayesrad.errors import CohortError

for _module in (radiotherapy, glioma_pet, liver_multiphase, wholebody_petct, incomplete_multimodal):
    SCENARIO_REGISTRY[_module.SCENARIO.name] = _module.SCENARIO

SCENARIOS: tuple[str, ...] = tuple(SCENARIO_REGISTRY)


def simulate(scenario: str, n_patients: int = 200, seed: int = 0, missing=None,
             out: str | Path | None = None, image_size: int = 48) -> Simulation:
    """Simulate a cohort of one clinical scenario with its ground truth.

    Parameters
    ----------
    scenario : one of ``SCENARIOS`` (radiotherapy, glioma_pet, liver_multiphase,
        wholebody_petct, incomplete_multimodal).
    n_patients : number of patients (>= 2).
    seed : random seed; the same seed gives identical data, with or without images.
    missing : None (the scenario's default), a rate in [0, 1) applied MCAR to every
        non-clinical modality, or a dict ``modality -> rate`` or ``modality -> {"rate": r,
        "mechanism": "MCAR" | "MAR", "depends_on": clinical column}`` (a dict replaces the
        default: modalities it does not name are complete). MAR: ``P(missing)`` is logistic in
        the standardised column (level codes in level order for a categorical column). A
        missing modality removes the patient from its blocks and images. ``"outcome"`` may be
        named too; outcomes are otherwise never missing. Modalities per scenario:
        ``SCENARIO_REGISTRY[scenario].modalities``.
    out : directory to write images, cohort and ``truth/`` to (``Simulation.write``); None
        keeps the tabular blocks only (fast).
    image_size : voxels per side of the cubic volumes (>= 16); the field of view is fixed in
        mm, so the voxel spacing is ``field_of_view / image_size``.

    Returns
    -------
    Simulation with ``cohort`` (a ``Cohort``) and ``truth`` (a ``Truth``).
    """
    if scenario not in SCENARIO_REGISTRY:
        raise CohortError(f"scenario: unknown scenario {scenario!r}; use one of {list(SCENARIO_REGISTRY)}")
    if isinstance(n_patients, bool) or not isinstance(n_patients, (int, np.integer)) or n_patients < 2:
        raise CohortError(f"n_patients must be an integer >= 2, got {n_patients!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CohortError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise CohortError(f"image_size must be an integer >= 16 voxels per side, got {image_size!r}")
    spec = SCENARIO_REGISTRY[scenario]
    generated = spec.generate(int(n_patients), np.random.default_rng([seed, 0]))
    g = generated["generator"]
    ids = pd.Index([f"{spec.id_prefix}{i + 1:04d}" for i in range(n_patients)], name="patient_id")

    blocks = {name: pd.DataFrame(columns, index=ids) for name, columns in g.blocks.items()}
    clinical = pd.DataFrame({
        column: pd.Categorical(values, categories=g.schema["clinical"][column].levels)
        if g.schema["clinical"][column].kind == "categorical" else values
        for column, values in g.blocks["clinical"].items()
    }, index=ids)
    missing_spec = parse_missing(missing, spec, clinical)
    masks, missing_params = draw_missing(missing_spec, clinical, np.random.default_rng([seed, 2]))
    image_missing: dict[str, set] = {}
    for modality, is_missing in masks.items():
        absent = set(ids[is_missing])
        targets = ("outcome",) if modality == "outcome" else spec.modalities[modality].blocks
        for block in targets:
            if block in blocks:
                blocks[block] = blocks[block].loc[~is_missing]
        if modality != "outcome":
            for image_modality in spec.modalities[modality].images:
                image_missing[image_modality] = image_missing.get(image_modality, set()) | absent
            for block, frame in blocks.items():
                columns = [c for c in spec.modalities[modality].columns if c in frame.columns]
                if columns:
                    frame.loc[frame.index.isin(absent), columns] = np.nan

    latents = pd.DataFrame({**g.latents, **generated.get("latents", {})}, index=ids)
    outcome_probability = pd.DataFrame(g.outcome_probability, index=ids)
    parameters = dict(g.params)
    parameters["missingness"] = missing_params
    parameters["latent_dims"] = generated.get("latent_dims", {})
    parameters.update(generated.get("parameters", {}))
    centre_effects = {child: effects for (group, child), effects in g.params["group_effects"].items()
                      if group == "centre"} or None
    truth = Truth(
        graph=g.graph, parameters=parameters, latents=latents, outcome_probability=outcome_probability,
        gene_modules=generated.get("gene_modules"), centre_effects=centre_effects,
    )
    cohort = Cohort(blocks, None, g.schema, patient_ids=list(ids), name=f"simulated_{scenario}")
    render_inputs = pd.DataFrame({**g.values, **latents.to_dict("series")}, index=ids)
    sim = Simulation(cohort, truth, scenario, int(seed), int(image_size), render_inputs, image_missing)
    if out is not None:
        sim.write(out)
    return sim


__all__ = ["simulate", "Simulation", "Truth", "SCENARIOS", "Scenario", "Modality"]
