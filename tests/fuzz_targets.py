"""Readers under fuzzing: seed files, byte mutations, and one function per reader that
writes an input and reads it. Shared by tests/test_fuzz_readers.py (a short hypothesis run)
and benchmarks/fuzz.py (10,000 examples per reader). Every input must load or raise a
``BayesradError``; anything else is a bug."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

CLINICAL = b"patient_id,age_years,histology,dose_mean_gy\nP1,60,adeno,70.5\nP2,71,squamous,66\nP3,55,adeno,\n"
MANIFEST = b"patient_id,modality,path,mask_path,mask_labels,roi\nP1,CT,ct.nii.gz,m.nii.gz,1;2,gtv\n"
COHORT_YAML = (b"format: bayesrad-cohort\nversion: {v}\nname: fuzz\nblocks:\n  clinical:\n    file: clinical.csv\n"
               b"    schema:\n      age_years: {kind: continuous, unit: years}\n"
               b"      histology: {kind: categorical, levels: [adeno, squamous]}\n")
GRAPH_YAML = (b"format: bayesrad-graph-1\nnodes:\n- {name: age_years, kind: continuous, block: clinical}\n"
              b"- {name: radiomics, kind: latent, block: radiomics, latent_dim: 2}\n"
              b"- {name: lc, kind: binary, block: outcome, levels: [0, 1]}\n"
              b"edges:\n- [age_years, lc]\n- {from: radiomics, to: lc, prior: {sign: positive}}\n")
RADIOMICS_YAML = (b"imageType:\n  Original: {}\n  LoG: {sigma: [1.0, 3.0]}\nsetting:\n  binWidth: 25\n"
                  b"  resampledPixelSpacing: [1, 1, 1]\nfeatureClass:\n  firstorder: []\n  glcm:\n")


def mutate(seed: bytes, edits) -> bytes:
    """Apply ``edits`` ((position, byte, op) with op 0 replace, 1 insert, 2 delete,
    3 truncate) to ``seed``; positions wrap around its length."""
    data = bytearray(seed)
    for position, byte, op in edits:
        if not data:
            data.append(byte)
            continue
        i = position % len(data)
        if op == 0:
            data[i] = byte
        elif op == 1:
            data.insert(i, byte)
        elif op == 2:
            del data[i]
        else:
            del data[i:]
    return bytes(data)


def _fresh(root: Path) -> Path:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    return root


def read_clinical(data: bytes, root: Path):
    from bayesrad.data import Cohort

    root = _fresh(root)
    (root / "clinical.csv").write_bytes(data)
    return Cohort.from_directory(root)


def read_manifest(data: bytes, root: Path):
    from bayesrad.data import Cohort

    root = _fresh(root)
    (root / "clinical.csv").write_bytes(CLINICAL)
    (root / "manifest.csv").write_bytes(data)
    return Cohort.from_directory(root)


def read_cohort_yaml(data: bytes, root: Path):
    from bayesrad.data import Cohort

    root = _fresh(root)
    (root / "clinical.csv").write_bytes(CLINICAL)
    (root / "cohort.yaml").write_bytes(data)
    return Cohort.from_directory(root)


def read_graph_yaml(data: bytes, root: Path):
    from bayesrad.graph.graph import Graph

    root = _fresh(root)
    (root / "graph.yaml").write_bytes(data)
    return Graph.from_yaml(root / "graph.yaml")


def read_radiomics_yaml(data: bytes, root: Path):
    from bayesrad.features.radiomics import load_settings

    root = _fresh(root)
    (root / "settings.yaml").write_bytes(data)
    return load_settings(root / "settings.yaml")


def cohort_yaml_seed() -> bytes:
    from bayesrad.data import cohort

    return COHORT_YAML.replace(b"{v}", str(cohort.COHORT_FORMAT_VERSION).encode())


def saved_model(root: Path) -> Path:
    """A small fitted model saved under ``root/model`` (seed of the model-directory fuzz)."""
    import numpy as np
    import pandas as pd
    import torch

    from bayesrad.graph.graph import Graph, NodeSpec
    from bayesrad.model import HybridBN

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    ids = pd.Index([f"P{i}" for i in range(40)], name="patient_id")
    age = rng.normal(65, 9, 40)
    blocks = {"clinical": pd.DataFrame({"age": age}, index=ids),
              "outcome": pd.DataFrame({"lc": (age > 65).astype(float)}, index=ids)}
    graph = Graph([NodeSpec("age", "continuous", block="clinical"),
                   NodeSpec("lc", "binary", block="outcome")])
    graph.add_edge("age", "lc")
    model = HybridBN(graph, num_steps=10, min_steps=0, num_threads=1, n_samples=20).fit(blocks)
    model.save(root / "model")
    return root / "model"


MODEL_FILES = ("meta.json", "graph.yaml", "params.safetensors", "checksums.json")


def read_model_dir(seed_dir: Path, which: int, data_edits, root: Path):
    """Copy the saved model, mutate one of its files (``which`` picks it), load it."""
    from bayesrad.model import HybridBN

    root = _fresh(root)
    target = root / "model"
    shutil.copytree(seed_dir, target)
    name = MODEL_FILES[which % len(MODEL_FILES)]
    (target / name).write_bytes(mutate((target / name).read_bytes(), data_edits))
    return HybridBN.load(target)


def outcome(call) -> str:
    """'loaded', 'BayesradError:<class>' or 'UNHANDLED:<class>: message'."""
    from bayesrad.errors import BayesradError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call()
        except BayesradError as exc:
            return f"refused:{type(exc).__name__}"
        except Exception as exc:  # noqa: BLE001 - the point: find anything not a BayesradError
            return f"UNHANDLED:{type(exc).__name__}: {str(exc)[:200]}"
    return "loaded"
