"""Derived feature blocks on disk: what ``extract``, ``embed`` and ``harmonize`` write, and how a
cohort reads them back as its own blocks.

A *features directory* holds one CSV per block (patients x columns, indexed by ``patient_id``)
and ``features.yaml``, the register of those blocks with their provenance: the step that wrote
each one, its settings, a hash of those settings and the date (UTC). ``structure``, ``fit``,
``predict`` take ``--features DIR`` (repeatable) and read a cohort with :func:`load_cohort`:
the cohort directory's own blocks, then every registered block of every directory in order (a
block of the same name replaces the earlier one, e.g. extracted radiomics replace a pre-made
radiomics table).

Two register fields change that: ``replaces`` (blocks a derived block supersedes, e.g. the gene
module eigengenes replace the raw ``genes`` counts, which are then dropped) and ``rename_to`` (a
block that is *not* the same quantity as a same-named block of the cohort: the DVH that
``extract`` recomputes from the dose grids is added beside the planned ``dosimetry`` table as
``dvh`` rather than silently replacing the planned dose metrics). A derived column named like a
column of another block is refused: two nodes of one name cannot be told apart.
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
    date, the shape and any ``extra`` JSON-serialisable fields; ``replaces=[blocks]`` and
    ``rename_to=name`` are read by :func:`load_cohort`). Returns the CSV path."""
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

    Blocks are added in order; one named like an existing block replaces it, unless its
    register entry has ``rename_to`` and the existing block is one of the cohort directory's
    own (then it is added under that name; a clash there too is refused). Blocks named in an
    entry's ``replaces`` are dropped. A derived block's patients outside the cohort are left out
    (a features directory may cover a larger cohort, e.g. training and new patients). ``drop``:
    blocks removed afterwards. Returns ``(cohort, provenance)`` where ``provenance`` is
    ``{block: register entry + "directory"}`` for the derived blocks (``"note"`` says when one
    was renamed or replaced another).

    Raises ``CohortError`` when a derived block has a column named like a column of another
    block (the graph could not tell the two nodes apart).
    """
    from bayesrad.data.cohort import Cohort

    cohort = Cohort.from_directory(cohort_dir)
    own = set(cohort.blocks)
    blocks = dict(cohort.blocks)
    schema = {b: dict(s) for b, s in cohort.schema.items()}  # the cohort's own (declared or inferred) types
    provenance: dict[str, dict] = {}
    ids = pd.Index([str(p) for p in cohort.patient_ids])
    for directory in features:
        register = read_register(directory)
        for name, frame in read_blocks(directory).items():
            entry = {**register[name], "directory": str(directory)}
            frame = frame.loc[frame.index.isin(ids)]
            target = name
            rename_to = entry.get("rename_to")
            if rename_to and name in own and name not in provenance:
                if rename_to in blocks:
                    raise CohortError(
                        f"block {name!r} of {str(directory)!r} ({entry.get('step')}) is not the cohort's own "
                        f"{name!r} block and would be added as {rename_to!r}, but the cohort has a "
                        f"{rename_to!r} block too; rename one of the cohort's blocks")
                target = rename_to
                entry["note"] = (f"added as {rename_to!r}: the cohort's own {name!r} block "
                                 f"({', '.join(map(str, blocks[name].columns[:4]))}...) is kept")
            elif name in blocks:
                entry["note"] = f"replaces the {name!r} block read before"
            for replaced in entry.get("replaces") or ():
                if replaced in blocks and replaced != target:
                    del blocks[replaced]
                    schema.pop(replaced, None)
                    provenance.pop(replaced, None)
                    entry["note"] = (entry.get("note", "") + f"; replaces {replaced!r}").lstrip("; ")
            blocks[target] = frame
            schema.pop(target, None)  # a derived block's types are inferred from its own values
            provenance[target] = entry
    for name in drop:
        blocks.pop(name, None)
        schema.pop(name, None)
        provenance.pop(name, None)
    if provenance or set(blocks) != own:
        # one construction (every block validated once), not one per added block
        cohort = Cohort(blocks, cohort.images, schema, patient_ids=cohort.patient_ids, name=cohort.name,
                        check_images="none")
    _refuse_shared_columns(cohort, provenance)
    return cohort, provenance


def _refuse_shared_columns(cohort, provenance: Mapping[str, Mapping]) -> None:
    """A derived block's column that another block also has is refused, naming both blocks."""
    holder: dict[str, str] = {}
    for block, frame in cohort.blocks.items():
        for column in frame.columns:
            first = holder.setdefault(str(column), block)
            if first != block and (block in provenance or first in provenance):
                derived = block if block in provenance else first
                raise CohortError(
                    f"column {column!r} is in block {first!r} and in block {block!r} (derived block "
                    f"{derived!r} from {provenance[derived]['directory']!r}); one name cannot be two "
                    "nodes: rename the column in one of them, or leave that features directory out")


__all__ = ["FEATURES_FILE", "settings_hash", "read_register", "write_block", "read_blocks", "load_cohort"]
