"""Cohort-scale feature extraction: every extractor over every patient, in parallel, cached.

A *step* is one extractor: a function ``(patient rows of cohort.images, settings) -> {column:
value}`` (or a one-row DataFrame) that becomes one block (``radiomics``, ``dosimetry``,
``kinetics``, or any name). Steps are split into work units: radiomics into one unit per
(image, ROI), other steps into one unit per patient. Each unit's result is cached as a JSON
file keyed by (patient, ROI, settings hash, input-file fingerprint) and written atomically
(temporary file then ``os.replace``), so an interrupted run resumes where it stopped and a
repeated run only reads the cache.

One bad patient (unreadable file, empty mask, geometry mismatch, NaN voxels, ...) does not stop
the cohort: its unit lands in the failures table (patient, step, ROI, error, reason) and the
other patients complete. Failures are not cached, so a fixed file is picked up by the next run.

Units run in this process (``n_jobs=1``), in a pool of processes (``n_jobs>1``), or on a Dask
cluster (``client=`` a ``distributed.Client`` or a scheduler address).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bayesrad.errors import BayesradError, FeatureError
from bayesrad.features import radiomics as _radiomics

CACHE_VERSION = 1

FAILURE_COLUMNS = ["patient_id", "step", "roi", "error", "reason"]


# ------------------------------------------------------------------------------------- steps

@dataclass(frozen=True)
class Step:
    """One extractor run over the cohort.

    ``name``: the block it fills. ``function(rows, settings) -> dict | DataFrame``: features of
    one patient from their rows of ``cohort.images`` (a top-level function, so that it can be
    sent to worker processes). ``settings``: passed to ``function`` and hashed into the cache
    key. ``modalities``: the patient is skipped (not a failure) when none of their images has
    one of these modalities (None: every patient with images).
    """

    name: str
    function: Callable[[pd.DataFrame, Mapping], Mapping | pd.DataFrame]
    settings: Mapping = field(default_factory=dict)
    modalities: tuple[str, ...] | None = None

    def applies_to(self, rows: pd.DataFrame) -> bool:
        if self.modalities is None:
            return len(rows) > 0
        present = {str(m).upper() for m in rows["modality"]} | {str(m).split("_")[0].upper() for m in rows["modality"]}
        return bool(present & {m.upper() for m in self.modalities})


def _dosimetry_function(rows: pd.DataFrame, settings: Mapping) -> dict:
    from bayesrad.features.dosimetry import patient_dose_features

    return patient_dose_features(rows, patient_id=str(rows["patient_id"].iloc[0]), **dict(settings))


def _kinetics_function(rows: pd.DataFrame, settings: Mapping) -> dict:
    from bayesrad.features.kinetics import patient_kinetics

    return patient_kinetics(rows, patient_id=str(rows["patient_id"].iloc[0]), **dict(settings))


def _radiomics_function(rows: pd.DataFrame, settings: Mapping) -> dict:
    return _radiomics.patient_radiomics_features(rows, str(rows["patient_id"].iloc[0]),
                                                 settings.get("settings"), settings.get("image_filters"))


def radiomics_step(settings=None, image_filters: Mapping | None = None,
                   modalities: Sequence[str] = ("CT", "PET", "MR")) -> Step:
    """The radiomics step: ``settings`` one parameter set (preset, YAML, dict) or ``{modality: settings}``
    (default: CT ``pyradiomics_default``, PET ``pet_suv``, MR ``mr_normalised``); one work unit per ROI."""
    return Step("radiomics", _radiomics_function, {"settings": settings, "image_filters": image_filters}, tuple(modalities))


def dosimetry_step(**settings) -> Step:
    """The dosimetry step (``bayesrad.features.dosimetry.patient_dose_features``) for patients with a DOSE grid."""
    return Step("dosimetry", _dosimetry_function, settings, ("DOSE",))


def kinetics_step(**settings) -> Step:
    """The PET kinetics step (``bayesrad.features.kinetics.patient_kinetics``) for patients with a dynamic PET."""
    return Step("kinetics", _kinetics_function, settings, (settings.get("modality", "DPET"),))


def default_steps() -> list[Step]:
    """Radiomics, dosimetry and (when the kinetics module is installed) PET kinetics."""
    steps = [radiomics_step(), dosimetry_step()]
    try:
        import bayesrad.features.kinetics  # noqa: F401  (optional extractor: used only when present)
    except ImportError:
        return steps
    return steps + [kinetics_step()]


_NAMED_STEPS = {"radiomics": radiomics_step, "dosimetry": dosimetry_step, "kinetics": kinetics_step}


def _resolve_steps(steps) -> list[Step]:
    if steps is None:
        return default_steps()
    if isinstance(steps, (str, Step)):
        steps = [steps]
    resolved = []
    for step in steps:
        if isinstance(step, Step):
            resolved.append(step)
        elif isinstance(step, str) and step in _NAMED_STEPS:
            resolved.append(_NAMED_STEPS[step]())
        else:
            raise FeatureError(f"unknown extraction step {step!r}; use a Step or one of {sorted(_NAMED_STEPS)}")
    names = [s.name for s in resolved]
    if len(set(names)) != len(names):
        raise FeatureError(f"two extraction steps fill the same block ({names}); give each Step its own name")
    return resolved


# ------------------------------------------------------------------------------- work units

@dataclass
class _Unit:
    step: str
    patient_id: str
    roi: str
    key: str
    kind: str          # "radiomics_task" or "patient"
    payload: object    # the radiomics task dict, or (function, rows, settings)


def _fingerprint(paths: Iterable[str]) -> list:
    """Size and modification time of each input file: a changed file invalidates its cache entries."""
    out = []
    for path in sorted({p for p in paths if isinstance(p, str) and p}):
        try:
            stat = os.stat(path)
            out.append([path, stat.st_size, stat.st_mtime_ns])
        except OSError:
            out.append([path, None, None])
    return out


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _units_for(step: Step, patient_id: str, rows: pd.DataFrame) -> list[_Unit]:
    if step.function is _radiomics_function:
        tasks = _radiomics.radiomics_tasks(rows, step.settings.get("settings"), step.settings.get("image_filters"),
                                           modalities=step.modalities)
        return [
            _Unit(step.name, patient_id, f"{t['modality']}/{t['roi']}",
                  _key(CACHE_VERSION, step.name, patient_id, t["modality"], t["roi"], t["label"], t["settings_hash"],
                       _fingerprint([t["path"], t["mask_path"]])),
                  "radiomics_task", t)
            for t in tasks
        ]
    paths = list(rows["path"].astype(str)) + list(rows["mask_path"].fillna("").astype(str))
    settings_digest = _radiomics.settings_hash(dict(step.settings))
    function_name = f"{step.function.__module__}.{step.function.__qualname__}"
    key = _key(CACHE_VERSION, step.name, function_name, patient_id, "all", settings_digest, _fingerprint(paths))
    return [_Unit(step.name, patient_id, "all", key, "patient", (step.function, rows, dict(step.settings)))]


def _run_unit(unit: _Unit) -> tuple[bool, object]:
    """Compute one unit; never raises, so one bad patient cannot stop a pool or a cluster."""
    try:
        if unit.kind == "radiomics_task":
            values = _radiomics.run_radiomics_task(unit.payload)
        else:
            function, rows, settings = unit.payload
            values = function(rows, settings)
        if isinstance(values, pd.DataFrame):
            if len(values) != 1:
                raise FeatureError(f"step {unit.step!r} returned {len(values)} rows for patient {unit.patient_id!r}; a step returns one row per patient")
            values = values.iloc[0].to_dict()
        clean = {}
        for column, value in dict(values).items():
            clean[str(column)] = float(value) if value is not None else float("nan")
        return True, clean
    except BayesradError as exc:
        return False, (type(exc).__name__, str(exc))
    except Exception as exc:  # an unexpected library error in one patient is still that patient's failure
        return False, (type(exc).__name__, f"{exc} (unexpected error; please report it with this patient's files)")


# ------------------------------------------------------------------------------------ cache

def _cache_path(cache_dir: Path, unit: _Unit) -> Path:
    safe_patient = re.sub(r"[^0-9A-Za-z._-]+", "_", unit.patient_id)
    return cache_dir / unit.step / safe_patient / f"{unit.key}.json"


def _atomic_write_text(path: Path, text: str) -> None:
    """Write then rename: a reader (or an interrupted run) never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_cache(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or corrupt: recompute
    values = record.get("values")
    if not isinstance(values, dict):
        return None
    return {k: (float("nan") if v is None else float(v)) for k, v in values.items()}


def _write_cache(path: Path, unit: _Unit, values: Mapping[str, float]) -> None:
    record = {"patient_id": unit.patient_id, "step": unit.step, "roi": unit.roi, "key": unit.key,
              "values": {k: (None if not np.isfinite(v) else v) for k, v in values.items()}}
    _atomic_write_text(path, json.dumps(record))


# ----------------------------------------------------------------------------------- result

@dataclass
class ExtractionResult:
    """What :func:`extract_cohort` returns.

    ``blocks``: ``{step name: DataFrame}`` (steps that produced something) indexed by ``patient_id`` (wide, columns
    ``<modality>_<roi>_<feature>``). ``failures``: one row per failed unit (``patient_id, step,
    roi, error, reason``). ``provenance``: per step the settings and their hashes.
    ``n_units``, ``n_cached`` (read from cache), ``n_computed``, ``seconds`` (wall time).
    """

    blocks: dict[str, pd.DataFrame]
    failures: pd.DataFrame
    provenance: dict
    n_units: int = 0
    n_cached: int = 0
    n_computed: int = 0
    seconds: float = 0.0

    def to_cohort(self, cohort):
        """``cohort`` with every non-empty block added (``cohort.with_block``)."""
        for name, block in self.blocks.items():
            if len(block):
                cohort = cohort.with_block(name, block)
        return cohort


# ------------------------------------------------------------------------------------ runner

def extract_cohort(cohort, out_dir: str | os.PathLike | None = None, steps=None, n_jobs: int = 1,
                   client=None, progress: bool = True, patient_ids: Sequence[str] | None = None) -> ExtractionResult:
    """Run every extraction step over every patient of a cohort.

    ``cohort``: a ``bayesrad.Cohort`` (its ``images`` table: ``patient_id, modality, path,
    mask_path, mask_labels, roi, frame_times, units``) or that table itself. ``out_dir``: where
    the cache (``cache/``), the blocks (``<step>.csv``), ``failures.csv`` and ``provenance.json``
    are written (None: no cache, nothing written). ``steps``: Steps or names (``"radiomics"``,
    ``"dosimetry"``, ``"kinetics"``); default :func:`default_steps`. ``n_jobs``: worker
    processes (1: in this process). ``client``: a ``distributed.Client`` or a scheduler
    address (``"tcp://host:8786"``): the units run on that cluster instead. ``progress``: a
    tqdm bar over units. ``patient_ids``: restrict to these patients.
    """
    started = time.perf_counter()
    images = getattr(cohort, "images", cohort)
    if not isinstance(images, pd.DataFrame) or images is None or len(images) == 0:
        raise FeatureError("the cohort has no images table; build it with images (a manifest) before extracting features")
    missing_columns = {"patient_id", "modality", "path"} - set(images.columns)
    if missing_columns:
        raise FeatureError(f"the images table lacks column(s) {sorted(missing_columns)}; see docs/api_contract.md (Cohort.images)")
    images = images.copy()
    for column in ("mask_path", "mask_labels", "roi", "frame_times", "units"):
        if column not in images.columns:
            images[column] = ""
    images["patient_id"] = images["patient_id"].astype(str)
    if n_jobs < 1:
        raise FeatureError(f"n_jobs must be >= 1, got {n_jobs}")
    step_list = _resolve_steps(steps)
    wanted = list(pd.unique(images["patient_id"])) if patient_ids is None else [str(p) for p in patient_ids]

    failures: list[dict] = []
    units: list[_Unit] = []
    for patient_id in wanted:
        rows = images[images["patient_id"] == patient_id].reset_index(drop=True)
        for step in step_list:
            if not step.applies_to(rows):
                continue
            try:
                units.extend(_units_for(step, patient_id, rows))
            except BayesradError as exc:  # e.g. an unreadable multi-label mask while listing its ROIs
                failures.append({"patient_id": patient_id, "step": step.name, "roi": "", "error": type(exc).__name__, "reason": str(exc)})

    cache_dir = Path(out_dir) / "cache" if out_dir is not None else None
    results: dict[int, dict] = {}
    pending: list[int] = []
    for i, unit in enumerate(units):
        cached = _read_cache(_cache_path(cache_dir, unit)) if cache_dir is not None else None
        if cached is None:
            pending.append(i)
        else:
            results[i] = cached
    n_cached = len(results)

    bar = _progress_bar(len(units), progress, initial=n_cached)

    def record(i: int, ok: bool, payload) -> None:
        unit = units[i]
        if ok:
            results[i] = payload
            if cache_dir is not None:
                _write_cache(_cache_path(cache_dir, unit), unit, payload)
        else:
            error, reason = payload
            failures.append({"patient_id": unit.patient_id, "step": unit.step, "roi": unit.roi, "error": error, "reason": reason})
        if bar is not None:
            bar.update(1)

    try:
        if client is not None:
            _run_on_dask(client, units, pending, record)
        elif n_jobs == 1 or len(pending) <= 1:
            for i in pending:
                record(i, *_run_unit(units[i]))
        else:
            # The platform's default start method (fork on Linux): scripts and notebooks need no
            # ``if __name__ == "__main__"`` guard, which spawn/forkserver would require.
            with ProcessPoolExecutor(max_workers=min(n_jobs, len(pending))) as pool:
                futures = {pool.submit(_run_unit, units[i]): i for i in pending}
                for future in as_completed(futures):
                    record(futures[future], *future.result())
    finally:
        if bar is not None:
            bar.close()

    blocks, provenance = _assemble(step_list, units, results)
    failure_table = pd.DataFrame(failures, columns=FAILURE_COLUMNS).sort_values(["patient_id", "step", "roi"], kind="stable").reset_index(drop=True)
    result = ExtractionResult(blocks, failure_table, provenance, len(units), n_cached, len(pending), time.perf_counter() - started)
    if out_dir is not None:
        _write_outputs(Path(out_dir), result)
    return result


def _progress_bar(total: int, progress: bool, initial: int = 0):
    if not progress:
        return None
    from bayesrad.progress import progress_bar

    return progress_bar(total, desc="extracting features", unit="ROI", initial=initial)


def _run_on_dask(client, units: list[_Unit], pending: list[int], record) -> None:
    from distributed import Client, as_completed as dask_as_completed

    own_client = isinstance(client, str)
    if own_client:
        try:
            client = Client(client, timeout="10s")
        except OSError as exc:
            raise FeatureError(f"cannot reach the Dask scheduler at {client!r}: {exc}; check the address and that the scheduler runs") from exc
    try:
        futures = client.map(_run_unit, [units[i] for i in pending], pure=False)
        index_of = {future.key: i for future, i in zip(futures, pending)}
        for future in dask_as_completed(futures):
            record(index_of[future.key], *future.result())
    finally:
        if own_client:
            client.close()


def _assemble(step_list: list[Step], units: list[_Unit], results: dict[int, dict]) -> tuple[dict, dict]:
    per_step: dict[str, dict[str, dict]] = {step.name: {} for step in step_list}
    hashes: dict[str, dict[str, str]] = {step.name: {} for step in step_list}
    for i, unit in enumerate(units):
        if unit.kind == "radiomics_task":
            hashes[unit.step][unit.payload["modality"]] = unit.payload["settings_hash"]
        else:
            hashes[unit.step]["all"] = _radiomics.settings_hash(dict(unit.payload[2]))
        if i in results:
            per_step[unit.step].setdefault(unit.patient_id, {}).update(results[i])
    blocks = {}
    for name, rows in per_step.items():
        if not rows:
            continue  # the step applied to no patient (e.g. no dynamic PET in this cohort)
        block = pd.DataFrame.from_dict(rows, orient="index")
        block = block.reindex(sorted(block.columns), axis=1)
        block.index = block.index.astype(str)
        block.index.name = "patient_id"
        blocks[name] = block
    provenance = {
        step.name: {"function": f"{step.function.__module__}.{step.function.__qualname__}",
                    "settings": json.loads(json.dumps(dict(step.settings), default=str)),
                    "settings_hash": hashes[step.name]}
        for step in step_list
    }
    return blocks, provenance


def _write_outputs(out: Path, result: ExtractionResult) -> None:
    import radiomics

    out.mkdir(parents=True, exist_ok=True)
    from bayesrad.data.derived import write_block

    for name, block in result.blocks.items():
        # registered in features.yaml, so that `--features DIR` reads it back as a cohort block
        # The DVH recomputed from the dose grids is not the planned dose table a cohort may
        # already hold under the same name: read back beside it, as `dvh` (derived.load_cohort).
        clash = {"rename_to": "dvh"} if name == "dosimetry" else {}
        write_block(out, name, block, step=f"extract/{name}", settings=result.provenance.get(name, {}),
                    n_failures=int((result.failures["step"] == name).sum()), **clash)
    _atomic_write_text(out / "failures.csv", result.failures.to_csv(index=False))
    meta = {"steps": result.provenance, "pyradiomics_version": radiomics.__version__,
            "n_units": result.n_units, "n_cached": result.n_cached, "n_computed": result.n_computed,
            "n_failures": int(len(result.failures))}
    _atomic_write_text(out / "provenance.json", json.dumps(meta, indent=2, default=str))


def extract_directory(cohort_dir: str | os.PathLike, out_dir: str | os.PathLike, steps=None, n_jobs: int = 1,
                      scheduler: str | None = None, progress: bool = True) -> ExtractionResult:
    """What ``bayesrad extract COHORT_DIR --out DIR`` runs: read the cohort directory
    (``Cohort.from_directory``) and :func:`extract_cohort` into ``out_dir``.

    ``steps``: step names (None: all available); ``scheduler``: a Dask scheduler address.
    """
    from bayesrad.data.cohort import Cohort

    cohort = Cohort.from_directory(cohort_dir)
    return extract_cohort(cohort, out_dir, steps=steps, n_jobs=n_jobs, client=scheduler, progress=progress)


__all__ = [
    "Step",
    "ExtractionResult",
    "radiomics_step",
    "dosimetry_step",
    "kinetics_step",
    "default_steps",
    "extract_cohort",
    "extract_directory",
]
