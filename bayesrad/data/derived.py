"""Derived feature blocks on disk: what ``extract``, ``embed`` and ``harmonize`` write, and how a
cohort reads them back as its own blocks.

A *features directory* holds one CSV per block (patients x columns, indexed by ``patient_id``)
and ``features.yaml``, the register of those blocks with their provenance: the step that wrote
each one, its settings, a hash of those settings and the date (UTC). ``structure``, ``fit``,
``predict`` take ``--features DIR`` (repeatable) and read a cohort with :func:`load_cohort`:
the cohort directory's own blocks, then every registered block of every directory in order (a
block of the same name replaces the earlier one, e.g. extracted radiomics replace a pre-made
radiomics table).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd
import yaml

from bayesrad.errors import CohortError

FEATURES_FILE = "features.yaml"
FEATURES_FORMAT = "bayesrad-features"


def settings_hash(settings: Mapping) -> str:
    """A short, stable hash (12 hex digits of SHA-256) of JSON-serialisable ``settings``."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _register_path(features_dir: Path) -> Path:
    return Path(features_dir) / FEATURES_FILE


def read_register(features_dir: str | os.PathLike) -> dict:
    """``features.yaml`` of a features directory as ``{block: provenance}`` (empty when absent)."""
    path = _register_path(Path(features_dir))
    if not path.is_file():
        return {}
    meta = yaml.safe_load(path.read_text()) or {}
    return dict(meta.get("blocks") or {})


def write_block(features_dir: str | os.PathLike, name: str, frame: pd.DataFrame, step: str,
                settings: Mapping | None = None, **extra) -> Path:
    """Write ``frame`` (patients x columns) as ``<name>.csv`` in ``features_dir`` and register
    it in ``features.yaml`` with its provenance (``step``, ``settings``, their hash, the UTC
    date, the shape and any ``extra`` JSON-serialisable fields). Returns the CSV path."""
    root = Path(features_dir)
    root.mkdir(parents=True, exist_ok=True)
    frame = frame.copy()
    frame.index = frame.index.astype(str)
    frame.index.name = "patient_id"
    csv = root / f"{name}.csv"
    tmp = csv.with_suffix(".csv.tmp")
    frame.to_csv(tmp)
    os.replace(tmp, csv)
    settings = json.loads(json.dumps(dict(settings or {}), default=str))
    blocks = read_register(root)
    blocks[name] = {"file": csv.name, "step": step, "settings": settings,
                    "settings_hash": settings_hash(settings),
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "n_patients": int(frame.shape[0]), "n_columns": int(frame.shape[1]),
                    **json.loads(json.dumps(extra, default=str))}
    meta = {"format": FEATURES_FORMAT, "blocks": blocks}
    register = _register_path(root)
    tmp = register.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(meta, sort_keys=False))
    os.replace(tmp, register)
    return csv


def read_blocks(features_dir: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Every block registered in ``features_dir/features.yaml``, as ``{name: DataFrame}``."""
    root = Path(features_dir)
    if not root.is_dir():
        raise CohortError(f"features directory {str(root)!r} does not exist; write it with "
                          "`bayesrad extract`, `bayesrad embed` or `bayesrad harmonize`")
    register = read_register(root)
    if not register:
        raise CohortError(f"{str(root)!r} has no {FEATURES_FILE} (or it lists no block); it is written "
                          "by `bayesrad extract`, `embed` and `harmonize` -- rerun one of them into it")
    blocks = {}
    for name, spec in register.items():
        path = root / spec.get("file", f"{name}.csv")
        if not path.is_file():
            raise CohortError(f"block {name!r} registered in {str(root / FEATURES_FILE)!r} has no file "
                              f"{str(path)!r}; rerun the step {spec.get('step', '?')!r}")
        frame = pd.read_csv(path, index_col=0)
        frame.index = frame.index.astype(str)
        frame.index.name = "patient_id"
        blocks[name] = frame
    return blocks


def load_cohort(cohort_dir: str | os.PathLike, features: Iterable[str | os.PathLike] = (),
                drop: Iterable[str] = ()):
    """The cohort of ``cohort_dir`` with the derived blocks of each ``features`` directory added.

    Blocks are added in order; one named like an existing block replaces it. A derived block's
    patients outside the cohort are left out (a features directory may cover a larger cohort,
    e.g. training and new patients). ``drop``: blocks removed afterwards (e.g. raw ``genes``
    once their module eigengenes are a block). Returns ``(cohort, provenance)`` where
    ``provenance`` is ``{block: register entry + "directory"}`` for the derived blocks.
    """
    from bayesrad.data.cohort import Cohort

    cohort = Cohort.from_directory(cohort_dir)
    provenance: dict[str, dict] = {}
    ids = pd.Index([str(p) for p in cohort.patient_ids])
    for directory in features:
        register = read_register(directory)
        for name, frame in read_blocks(directory).items():
            frame = frame.loc[frame.index.isin(ids)]
            cohort = cohort.with_block(name, frame)
            provenance[name] = {**register[name], "directory": str(directory)}
    for name in drop:
        if name in cohort.blocks:
            cohort = cohort.drop_block(name)
    return cohort, provenance


__all__ = ["FEATURES_FILE", "settings_hash", "read_register", "write_block", "read_blocks", "load_cohort"]
