"""The Cohort: patients x modalities, tabular blocks plus images by reference.

A cohort holds one pandas DataFrame per tabular modality (``clinical``, ``dosimetry``,
``radiomics``, ``deep``, ``genes``, ``outcome``, or any name), each indexed by
``patient_id`` and holding only the patients that have that modality, and an ``images``
table with one row per image file. Which patient misses which modality is derived from
what is there (``Cohort.missing``), never stored a second time.

Every constructor validates: duplicated ids, patients unknown to the cohort, columns whose
values do not fit their type, missing image files, image/mask grids that disagree. Errors
name the patient, column or file.
"""

from __future__ import annotations

import csv
import hashlib
import os
import warnings
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bayesrad.data.readers import check_geometry, read_geometry
from bayesrad.data.schema import ColumnType, infer_schema, schema_table, validate_block
from bayesrad.errors import CohortError, MissingFileError, SchemaError

ID = "patient_id"
IMAGE_COLUMNS = ("patient_id", "modality", "path", "mask_path", "mask_labels", "roi", "frame_times", "units")
COHORT_FORMAT = "bayesrad-cohort"
COHORT_FORMAT_VERSION = 1
# Blocks written as AnnData rather than CSV: expression matrices are wide and scanpy reads h5ad.
H5AD_BLOCKS = ("genes",)


def _normalise_index(frame: pd.DataFrame, block: str, source: str | None = None,
                     id_column: str = ID) -> pd.DataFrame:
    """Index by ``patient_id`` (taken from ``id_column``) as text; refuse duplicated or empty ids."""
    where = f"block {block!r}" + (f" (file {source!r})" if source else "")
    frame = frame.copy()
    if frame.index.name not in (ID, id_column):
        if id_column in frame.columns:
            frame = frame.set_index(id_column)
        else:
            hint = (f"name the patient identifier column {ID!r} or pass id_column= "
                    f"(columns: {list(frame.columns)[:10]})")
            raise CohortError(f"{where} has no {id_column!r} column or index; {hint}")
    ids = pd.Index([None if pd.isna(v) else str(v) for v in frame.index], name=ID)
    if ids.isna().any() or (ids == "").any():
        rows = np.flatnonzero(ids.isna() | (ids == ""))[:5].tolist()
        raise CohortError(f"{where}: empty {ID} in row(s) {rows}; every row needs a patient id")
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        raise CohortError(
            f"{where}: duplicated {ID} {dup[:5]}; each patient must appear once per block "
            f"(merge or rename the duplicated rows)"
        )
    frame.index = ids
    return frame


class Cohort:
    """Patients x modalities, validated on construction.

    Parameters
    ----------
    blocks : mapping block name -> DataFrame indexed by (or with a column) ``patient_id``.
    images : DataFrame with columns ``patient_id, modality, path`` and optionally
        ``mask_path, mask_labels, roi, frame_times, units`` (one row per image).
    schema : ``{block: {column: ColumnType | dict | kind}}``; undeclared columns are inferred.
    patient_ids : the cohort's patients. When given, a block or image naming any other
        patient is an error; when omitted, the union of all ids (clinical first).
    name : a label for printing.
    check_images : ``"header"`` (default) checks that every file exists and that each mask's
        grid matches its image by reading headers only; ``"none"`` skips it.
    id_column : the column (or index name) holding the patient identifier in every block
        (default ``"patient_id"``; e.g. ``"ID"`` for a table as published).
    """

    def __init__(
        self,
        blocks: Mapping[str, pd.DataFrame] | None = None,
        images: pd.DataFrame | None = None,
        schema: Mapping[str, Mapping[str, ColumnType | dict | str]] | None = None,
        patient_ids: Sequence[str] | None = None,
        name: str = "cohort",
        check_images: str = "header",
        id_column: str = ID,
    ):
        self.name = name
        self.id_column = id_column
        blocks = dict(blocks or {})
        schema = {b: dict(cols) for b, cols in (schema or {}).items()}
        unknown_blocks = set(schema) - set(blocks)
        if unknown_blocks:
            raise CohortError(f"schema given for unknown block(s) {sorted(unknown_blocks)}; blocks are {sorted(blocks)}")
        self.blocks: dict[str, pd.DataFrame] = {}
        self.schema: dict[str, dict[str, ColumnType]] = {}
        for block, frame in blocks.items():
            if not isinstance(frame, pd.DataFrame):
                raise CohortError(f"block {block!r} must be a pandas DataFrame, got {type(frame).__name__}")
            if frame.columns.duplicated().any():
                dup = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
                raise CohortError(f"block {block!r}: column name(s) {dup} appear more than once; rename them")
            frame = _normalise_index(frame, block, id_column=id_column)
            declared = {
                col: spec if isinstance(spec, ColumnType) else ColumnType.from_dict(spec, col)
                for col, spec in schema.get(block, {}).items()
            }
            absent = [col for col in declared if col not in frame.columns]
            if absent:
                raise SchemaError(
                    f"block {block!r}: the schema declares column(s) {absent} that are not in the "
                    f"table (its columns: {list(frame.columns)[:20]}); fix the name or drop the declaration"
                )
            types = infer_schema(frame, declared)
            self.blocks[block] = validate_block(frame, types, block)
            self.schema[block] = {col: types[col] for col in frame.columns}
        self.images = self._validate_images(images)
        self.patient_ids = self._patient_universe(patient_ids)
        if check_images == "header":
            self._check_image_files()
        elif check_images != "none":
            raise CohortError(f"check_images must be 'header' or 'none', got {check_images!r}")

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _validate_images(images: pd.DataFrame | None) -> pd.DataFrame:
        if images is None or len(images) == 0:
            return pd.DataFrame({c: pd.Series(dtype="object") for c in IMAGE_COLUMNS})
        images = images.copy()
        if images.index.name == ID:
            images = images.reset_index()
        missing = [c for c in ("patient_id", "modality", "path") if c not in images.columns]
        if missing:
            raise CohortError(f"images table lacks column(s) {missing}; a manifest needs patient_id, modality, path")
        extra = [c for c in images.columns if c not in IMAGE_COLUMNS]
        if extra:
            raise CohortError(f"images table has unknown column(s) {extra}; allowed: {list(IMAGE_COLUMNS)}")
        for col in IMAGE_COLUMNS:
            if col not in images.columns:
                images[col] = ""
        images = images[list(IMAGE_COLUMNS)]
        images = images.astype(object).where(images.notna(), "")
        for col in IMAGE_COLUMNS:
            images[col] = images[col].map(lambda v: "" if v is None else (str(int(v)) if isinstance(v, float) and v.is_integer() and col == "mask_labels" else str(v)))
        empty_ids = images.index[images["patient_id"] == ""].tolist()
        if empty_ids:
            raise CohortError(f"images table: empty patient_id in row(s) {empty_ids[:5]}")
        empty_paths = images[images["path"] == ""]
        if len(empty_paths):
            pid = empty_paths["patient_id"].iloc[0]
            raise CohortError(f"images table: patient {pid!r} has an image row without a path")
        dup = images.duplicated(subset=["patient_id", "modality", "roi"], keep=False)
        if dup.any():
            row = images[dup].iloc[0]
            raise CohortError(
                f"images table: patient {row.patient_id!r} has more than one {row.modality!r} image "
                f"for roi {row.roi!r}; give each a distinct modality name (e.g. MR_T1, MR_T2) or roi"
            )
        return images.reset_index(drop=True)

    def _patient_universe(self, patient_ids) -> pd.Index:
        seen: dict[str, None] = {}
        order = sorted(self.blocks, key=lambda b: (b != "clinical", list(self.blocks).index(b)))
        for block in order:
            seen.update(dict.fromkeys(self.blocks[block].index))
        seen.update(dict.fromkeys(self.images["patient_id"]))
        if patient_ids is None:
            return pd.Index(list(seen), name=ID, dtype="object")
        universe = pd.Index([str(p) for p in patient_ids], name=ID, dtype="object")
        dup = universe[universe.duplicated()].unique().tolist()
        if dup:
            raise CohortError(f"patient_ids: duplicated {ID} {dup[:5]}")
        known = set(universe)
        for block in order:
            extra = [p for p in self.blocks[block].index if p not in known]
            if extra:
                raise CohortError(
                    f"block {block!r} has patient(s) {extra[:5]} that are not in the cohort's patient list "
                    f"({len(extra)} in all); add them to the patient list or remove them from the block"
                )
        extra = sorted(set(self.images["patient_id"]) - known)
        if extra:
            raise CohortError(f"images table names patient(s) {extra[:5]} that are not in the cohort's patient list")
        return universe

    def _check_image_files(self) -> None:
        for row in self.images.itertuples(index=False):
            image_geometry = read_geometry(row.path, row.patient_id)
            if row.mask_path:
                mask_geometry = read_geometry(row.mask_path, row.patient_id)
                check_geometry(
                    image_geometry,
                    mask_geometry,
                    patient_id=row.patient_id,
                    names=(f"{row.modality} image {row.path!r}", f"mask {row.mask_path!r}"),
                )

    # ------------------------------------------------------------------ views
    @property
    def n_patients(self) -> int:
        return len(self.patient_ids)

    @property
    def image_modalities(self) -> list[str]:
        return list(dict.fromkeys(self.images["modality"]))

    @property
    def modalities(self) -> list[str]:
        """Tabular block names followed by image modalities."""
        return list(self.blocks) + [m for m in self.image_modalities if m not in self.blocks]

    @property
    def missing(self) -> pd.DataFrame:
        """Boolean DataFrame (patients x modalities), True where the modality is missing.

        A tabular modality is missing when the patient has no row in the block or a row
        that is entirely empty; an image modality when the patient has no such image.
        """
        out = {}
        for block, frame in self.blocks.items():
            present = frame.index[frame.notna().any(axis=1)] if frame.shape[1] else frame.index
            out[block] = ~self.patient_ids.isin(present)
        for modality in self.image_modalities:
            if modality in out:
                continue
            have = self.images.loc[self.images["modality"] == modality, "patient_id"]
            out[modality] = ~self.patient_ids.isin(have)
        return pd.DataFrame(out, index=self.patient_ids)

    def block(self, name: str, all_patients: bool = True) -> pd.DataFrame:
        """Block ``name``, reindexed to every cohort patient (absent patients as NaN rows)."""
        if name not in self.blocks:
            raise CohortError(f"no block {name!r} in this cohort; blocks are {list(self.blocks)}")
        frame = self.blocks[name]
        return frame.reindex(self.patient_ids) if all_patients else frame

    def subset(self, patient_ids: Sequence[str]) -> "Cohort":
        """A cohort of these patients only (in this order); unknown ids are an error."""
        ids = [str(p) for p in patient_ids]
        unknown = [p for p in ids if p not in set(self.patient_ids)]
        if unknown:
            raise CohortError(f"subset: patient(s) {unknown[:5]} are not in cohort {self.name!r}")
        keep = set(ids)
        blocks = {b: f.loc[[p for p in ids if p in f.index]] for b, f in self.blocks.items()}
        images = self.images[self.images["patient_id"].isin(keep)]
        return Cohort(blocks, images, self.schema, patient_ids=ids, name=self.name, check_images="none")

    def with_block(self, name: str, frame: pd.DataFrame, schema: Mapping | None = None) -> "Cohort":
        """A new cohort with block ``name`` added or replaced."""
        blocks = dict(self.blocks)
        blocks[name] = frame
        full_schema = {b: dict(s) for b, s in self.schema.items() if b != name}
        if schema:
            full_schema[name] = dict(schema)
        return Cohort(blocks, self.images, full_schema, patient_ids=self.patient_ids, name=self.name, check_images="none")

    def drop_block(self, name: str) -> "Cohort":
        """A new cohort without block ``name`` (e.g. raw counts once summarised as gene modules)."""
        if name not in self.blocks:
            raise CohortError(f"no block {name!r} in this cohort; blocks are {list(self.blocks)}")
        blocks = {b: f for b, f in self.blocks.items() if b != name}
        schema = {b: s for b, s in self.schema.items() if b != name}
        return Cohort(blocks, self.images, schema, patient_ids=self.patient_ids, name=self.name, check_images="none")

    def summary(self) -> pd.DataFrame:
        """Per modality: kind, number of columns, patients present and missing, fraction missing."""
        missing = self.missing
        rows = []
        for modality in missing.columns:
            is_block = modality in self.blocks
            n_missing = int(missing[modality].sum())
            rows.append(
                {
                    "modality": modality,
                    "kind": "table" if is_block else "image",
                    "n_columns": self.blocks[modality].shape[1] if is_block else np.nan,
                    "n_present": self.n_patients - n_missing,
                    "n_missing": n_missing,
                    "fraction_missing": n_missing / max(self.n_patients, 1),
                }
            )
        return pd.DataFrame(rows).set_index("modality")

    def schema_table(self) -> pd.DataFrame:
        """The types of every column, one row per (block, column)."""
        return schema_table(self.schema)

    def __repr__(self) -> str:
        return (
            f"Cohort({self.name!r}, {self.n_patients} patients, blocks={list(self.blocks)}, "
            f"images={self.image_modalities})"
        )

    def __eq__(self, other) -> bool:
        if not isinstance(other, Cohort):
            return NotImplemented
        if list(self.patient_ids) != list(other.patient_ids) or set(self.blocks) != set(other.blocks):
            return False
        if self.schema != other.schema:
            return False
        for block in self.blocks:
            try:
                pd.testing.assert_frame_equal(self.blocks[block], other.blocks[block], check_exact=False, rtol=1e-12)
            except AssertionError:
                return False
        a = self.images.sort_values(["patient_id", "modality", "roi"]).reset_index(drop=True)
        b = other.images.sort_values(["patient_id", "modality", "roi"]).reset_index(drop=True)
        a = a.assign(path=a["path"].map(_canonical), mask_path=a["mask_path"].map(_canonical))
        b = b.assign(path=b["path"].map(_canonical), mask_path=b["mask_path"].map(_canonical))
        if len(a) != len(b):
            return False
        return bool((a.drop(columns=["path", "mask_path"]) == b.drop(columns=["path", "mask_path"])).all().all()) and all(
            _same_file(x, y) for x, y in zip(list(a["path"]) + list(a["mask_path"]), list(b["path"]) + list(b["mask_path"]))
        )

    __hash__ = None

    # ------------------------------------------------------------------ files
    @classmethod
    def from_files(
        cls,
        clinical: str | os.PathLike | None = None,
        manifest: str | os.PathLike | None = None,
        expression: str | os.PathLike | None = None,
        outcome: str | os.PathLike | None = None,
        blocks: Mapping[str, str | os.PathLike] | None = None,
        schema: Mapping | None = None,
        id_column: str = ID,
        name: str = "cohort",
        patient_ids: Sequence[str] | None = None,
        verbose: bool = False,
    ) -> "Cohort":
        """Build a cohort from files.

        ``clinical``/``outcome``/``blocks`` are CSV files with one row per patient and an
        ``id_column``; ``expression`` is an AnnData ``.h5ad`` (obs = patients) or a CSV with
        patients as rows; ``manifest`` is a CSV with one row per image
        (``patient_id, modality, path[, mask_path, mask_labels, roi, frame_times, units]``),
        relative paths taken from the manifest's folder. With ``verbose`` the inferred
        schema is printed.
        """
        tables: dict[str, pd.DataFrame] = {}
        sources = {"clinical": clinical, "outcome": outcome, **dict(blocks or {})}
        for block, path in sources.items():
            if path is None:
                continue
            tables[block] = _read_table(path, block, id_column)
        if expression is not None:
            tables["genes"] = _read_expression(expression, id_column)
        images = _read_manifest(manifest, id_column) if manifest is not None else None
        cohort = cls(tables, images, schema, patient_ids=patient_ids, name=name)
        if verbose:
            _print_schema(cohort)
        return cohort

    @classmethod
    def from_directory(cls, path: str | os.PathLike, verbose: bool = False) -> "Cohort":
        """Read a cohort directory written by ``to_directory`` (or laid out the same way).

        With ``cohort.yaml`` the declared blocks, schema and patient list are used. Without
        it: ``manifest.csv`` (images), ``clinical.csv``, ``outcome.csv``, any other ``*.csv``
        as a block of that name and ``*.h5ad`` as expression; types are inferred.
        """
        root = Path(path)
        if not root.is_dir():
            raise MissingFileError(f"cohort directory {str(root)!r} does not exist")
        meta_path = root / "cohort.yaml"
        if not meta_path.exists():
            blocks = {p.stem: p for p in sorted(root.glob("*.csv")) if p.name not in ("manifest.csv", "patients.csv")}
            h5 = sorted(root.glob("*.h5ad"))
            tables = {b: _read_table(p, b, ID) for b, p in blocks.items()}
            for p in h5:
                tables[p.stem] = _read_expression(p, ID)
            manifest = root / "manifest.csv"
            images = _read_manifest(manifest, ID) if manifest.exists() else None
            cohort = cls(tables, images, name=root.name)
            if verbose:
                _print_schema(cohort)
            return cohort
        meta = _load_cohort_yaml(meta_path)
        if not isinstance(meta, dict) or meta.get("format") != COHORT_FORMAT:
            raise CohortError(f"{str(meta_path)!r} is not a bayesrad cohort description (format key missing)")
        if meta.get("version") != COHORT_FORMAT_VERSION:
            raise CohortError(
                f"{str(meta_path)!r} has cohort format version {meta.get('version')!r}; this bayesrad "
                f"reads version {COHORT_FORMAT_VERSION}"
            )
        tables, schema = {}, {}
        blocks_spec = meta.get("blocks") or {}
        if not isinstance(blocks_spec, dict):
            raise CohortError(f"{str(meta_path)!r}: 'blocks' must be a mapping block -> {{file:, schema:}}, "
                              f"got {type(blocks_spec).__name__}")
        for block, spec in blocks_spec.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("file"), str) or not spec["file"]:
                raise CohortError(f"{str(meta_path)!r}: block {block!r} needs a 'file:' naming its table "
                                  f"(e.g. file: {block}.csv)")
            block_schema = spec.get("schema") or {}
            if not isinstance(block_schema, dict):
                raise CohortError(f"{str(meta_path)!r}: block {block!r}: 'schema' must be a mapping column -> type")
            file = root / spec["file"]
            tables[str(block)] = _read_expression(file, ID) if file.suffix == ".h5ad" else _read_table(file, str(block), ID)
            schema[str(block)] = {str(c): ColumnType.from_dict(t, str(c)) for c, t in block_schema.items()}
        patients_file = root / "patients.csv"
        patient_ids = None
        if patients_file.exists():
            listed = _read_csv(patients_file, "the patient list", dtype=str)
            if ID not in listed.columns:
                raise CohortError(f"{str(patients_file)!r} has no {ID!r} column (columns: "
                                  f"{list(listed.columns)[:10]}); write one patient id per row under {ID}")
            patient_ids = listed[ID].tolist()
        manifest = root / "manifest.csv"
        images = _read_manifest(manifest, ID) if manifest.exists() else None
        cohort = cls(tables, images, schema, patient_ids=patient_ids, name=str(meta.get("name", root.name)))
        if verbose:
            _print_schema(cohort)
        return cohort

    def to_directory(self, path: str | os.PathLike, copy_images: bool = True) -> Path:
        """Write the cohort as ``cohort.yaml``, ``patients.csv``, one CSV per block (``.h5ad``
        for gene expression) and ``manifest.csv``.

        Each file is written to a temporary name and moved into place, so an interrupted
        write never leaves a half file and files already there survive a failure. Images
        already inside ``path`` are referenced relatively; others are copied under
        ``images/<patient_id>/`` (or referenced absolutely with ``copy_images=False``).
        """
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        meta = {"format": COHORT_FORMAT, "version": COHORT_FORMAT_VERSION, "name": self.name, "blocks": {}}
        for block, frame in self.blocks.items():
            if block in H5AD_BLOCKS:
                file = f"{block}.h5ad"
                _atomic_write(root / file, lambda tmp, f=frame: _write_h5ad(f, tmp))
            else:
                file = f"{block}.csv"
                _atomic_write(root / file, lambda tmp, f=frame: _to_csv(f, tmp))
            meta["blocks"][block] = {
                "file": file,
                "schema": {col: t.to_dict() for col, t in self.schema[block].items()},
            }
        _atomic_write(root / "patients.csv", lambda tmp: pd.DataFrame({ID: list(self.patient_ids)}).to_csv(tmp, index=False))
        if len(self.images):
            manifest = self.images.copy()
            for col in ("path", "mask_path"):
                manifest[col] = [
                    _relocate(p, root, pid, copy_images) if p else "" for p, pid in zip(manifest[col], manifest["patient_id"])
                ]
            _atomic_write(root / "manifest.csv", lambda tmp: manifest.to_csv(tmp, index=False))
        _atomic_write(root / "cohort.yaml", lambda tmp: Path(tmp).write_text(yaml.safe_dump(meta, sort_keys=False)))
        return root


# ---------------------------------------------------------------------- file helpers
def _canonical(p: str) -> str:
    return os.path.realpath(p) if p else ""


def _same_file(a: str, b: str) -> bool:
    """Same path, or files with identical content (a cohort copied elsewhere is still equal)."""
    if a == b:
        return True
    if not a or not b:
        return False
    return _digest(a) == _digest(b)


def _digest(path: str) -> str:
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(p.rglob("*")) if p.is_dir() else [p]
    for f in files:
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def _atomic_write(target: Path, write) -> None:
    """Call ``write(tmp_path)`` then move the temporary file onto ``target``."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=target.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _to_csv(frame: pd.DataFrame, path) -> None:
    out = frame.copy()
    out.index.name = ID
    out.to_csv(path)


def _write_h5ad(frame: pd.DataFrame, path) -> None:
    import anndata

    values = frame.to_numpy(dtype="float64")
    obs = pd.DataFrame(index=pd.Index(frame.index.astype(str), name=ID))
    var = pd.DataFrame(index=pd.Index([str(c) for c in frame.columns], name="gene"))
    anndata.AnnData(X=values, obs=obs, var=var).write_h5ad(path)


def _relocate(path: str, root: Path, patient_id: str, copy_images: bool) -> str:
    src = Path(path).resolve()
    try:
        return str(src.relative_to(root.resolve()))
    except ValueError:
        pass
    if not copy_images:
        return str(src)
    dest = root / "images" / patient_id / src.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists() or _digest(str(dest)) != _digest(str(src)):
        tmp = dest.with_name(f".{dest.name}.tmp")
        if src.is_dir():
            if tmp.exists():
                shutil.rmtree(tmp)
            shutil.copytree(src, tmp)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        else:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
    return str(dest.relative_to(root))


def _read_table(path, block: str, id_column: str) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"block {block!r}: file {str(path)!r} does not exist")
    frame = _read_csv(path, f"block {block!r}", dtype={id_column: str}, keep_default_na=True)
    if len(frame) == 0:
        warnings.warn(f"block {block!r}: file {str(path)!r} has a header but no rows; every patient's "
                      f"{block} values will be missing", UserWarning, stacklevel=3)
    # pandas renames a repeated header name (age, age.1): read the header line as written
    header = pd.Series(_read_csv(path, f"block {block!r}", header=None, nrows=1, dtype=str).iloc[0].tolist())
    if header.duplicated().any():
        raise CohortError(f"block {block!r}: file {str(path)!r} has the column name(s) "
                          f"{sorted(set(header[header.duplicated()].astype(str)))} more than once; rename them")
    if id_column not in frame.columns:
        raise CohortError(
            f"block {block!r}: file {str(path)!r} has no {id_column!r} column "
            f"(columns: {list(frame.columns)[:10]}); pass id_column= to name the patient identifier"
        )
    frame = frame.rename(columns={id_column: ID})
    return _normalise_index(frame, block, str(path))


def _read_expression(path, id_column: str) -> pd.DataFrame:
    """Expression matrix, patients x genes: AnnData ``.h5ad`` (obs = patients) or CSV."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"expression file {str(path)!r} does not exist")
    if path.suffix == ".h5ad":
        import anndata

        try:
            adata = anndata.read_h5ad(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # h5py: truncated / not HDF5
            raise CohortError(f"expression file {str(path)!r} is not a readable AnnData .h5ad "
                              f"({type(exc).__name__}: {exc}); re-export it with anndata") from exc
        matrix = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
        frame = pd.DataFrame(matrix, index=pd.Index(adata.obs_names.astype(str), name=ID), columns=list(adata.var_names))
        return _normalise_index(frame, "genes", str(path))
    return _read_table(path, "genes", id_column)


def _read_manifest(path, id_column: str) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"manifest {str(path)!r} does not exist")
    manifest = _read_csv(path, "manifest", dtype=str, keep_default_na=False)
    if manifest.columns.duplicated().any():
        raise CohortError(f"manifest {str(path)!r} has a column name more than once; rename it")
    manifest = manifest.rename(columns={id_column: ID})
    if "modality" in manifest.columns:
        unknown = sorted({m for m in manifest["modality"] if m and m.split("_")[0].upper() not in KNOWN_MODALITIES})
        if unknown:
            warnings.warn(f"manifest {str(path)!r}: modality(ies) {unknown} are not among the usual ones "
                          f"({', '.join(sorted(KNOWN_MODALITIES))}); each becomes its own modality - check "
                          f"for a typo", UserWarning, stacklevel=3)
    if "mask_labels" in manifest.columns:
        from bayesrad.data.readers import parse_labels

        for row, labels in zip(manifest.get(ID, [""] * len(manifest)), manifest["mask_labels"]):
            try:
                parse_labels(labels or None)
            except (ValueError, TypeError) as exc:
                raise CohortError(f"manifest {str(path)!r}: patient {str(row)!r} has mask_labels {labels!r}; "
                                  f"write integer labels separated by ';' (e.g. 1;2)") from exc
    base = path.parent
    for col in ("path", "mask_path"):
        if col in manifest.columns:
            manifest[col] = [str((base / p).resolve()) if p and not os.path.isabs(p) else p for p in manifest[col]]
    return manifest


# Modalities bayesrad knows how to use (a suffix such as MR_T1 is allowed); others only warn.
KNOWN_MODALITIES = frozenset({"CT", "PET", "DPET", "MR", "MRI", "DOSE", "RTDOSE", "SPECT", "US", "CBCT", "PT",
                              "SEG", "CTA", "CECT", "NM"})


def _read_csv(path: Path, what: str, **kwargs) -> pd.DataFrame:
    """``pd.read_csv`` whose every failure (empty, binary, malformed) is a ``CohortError``
    naming the file, rather than one of pandas' or Python's many exception classes."""
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError as exc:
        raise CohortError(f"{what}: file {str(path)!r} is empty (no header line); write the column "
                          f"names on the first line or remove the file") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, csv.Error, OverflowError) as exc:
        raise CohortError(f"{what}: file {str(path)!r} is not a readable UTF-8 CSV "
                          f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); fix or re-export it") from exc


def _load_cohort_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CohortError(f"{str(path)!r} is not UTF-8 text; re-save it as UTF-8") from exc
    except yaml.YAMLError as exc:  # syntax errors and unsafe tags such as !!python/object
        raise CohortError(f"{str(path)!r} is not valid YAML for a cohort description: "
                          f"{' '.join(str(exc).split())[:300]}; fix the line it names") from exc


def _print_schema(cohort: Cohort) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"schema of {cohort.name}")
    for col in ("block", "column", "kind", "levels", "event"):
        table.add_column(col)
    for row in cohort.schema_table().itertuples(index=False):
        levels = "" if row.levels is None else ", ".join(map(str, row.levels))[:40]
        table.add_row(row.block, row.column, row.kind, levels, row.event or "")
    Console().print(table)


__all__ = ["Cohort", "ID", "IMAGE_COLUMNS"]
