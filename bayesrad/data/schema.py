"""Column types of cohort tables: declared by the user or inferred, then enforced.

A ``ColumnType`` says how a column enters a model: ``continuous``, ``binary``,
``categorical`` (unordered levels), ``ordinal`` (ordered levels), ``count``,
``survival`` (a time column whose ``event`` names its 0/1 event column), ``event``
(that event column) or ``label`` (free text or identifiers, never modelled).

Values are normalised on validation so that a cohort written and read back is equal:
numeric kinds become float64 (NaN marks a missing value), categorical and ordinal
columns with text levels become pandas Categoricals, labels stay text.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayesrad.errors import SchemaError, plain

KINDS = ("continuous", "binary", "categorical", "ordinal", "count", "survival", "event", "label")
NUMERIC_KINDS = ("continuous", "binary", "count", "survival", "event")

# A numeric column with at most this many distinct integer values is taken for ordinal
# (stage 1-4, ECOG 0-4); more distinct values read as a measurement.
_MAX_ORDINAL_LEVELS = 7
# A text column is categorical when its levels are few; otherwise it is an identifier/label.
_MAX_CATEGORICAL_LEVELS = 30

_EVENT_PATTERNS = (r"^(?P<base>.+)_event$", r"^event_(?P<base>.+)$", r"^(?P<base>.+)_status$")
_TIME_SUFFIXES = ("", "_time", "_days", "_in_days", "_months", "_in_months", "_years")


@dataclass(frozen=True)
class ColumnType:
    """How one column of a cohort block is typed.

    Parameters
    ----------
    kind : one of ``KINDS``.
    levels : ordered level labels for ``categorical`` / ``ordinal`` (the first level is the
        reference level of a categorical parent); ``None`` otherwise.
    unit : physical unit as text (``"Gy"``, ``"days"``, ``"years"``); informative only.
    event : for a ``survival`` time column, the name of its 0/1 event column.
    """

    kind: str
    levels: tuple | None = None
    unit: str | None = None
    event: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise SchemaError(
                f"unknown column type {self.kind!r}; use one of {', '.join(KINDS)}"
            )
        if self.levels is not None:
            object.__setattr__(self, "levels", tuple(self.levels))

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for YAML (drops empty fields)."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if "levels" in out:
            out["levels"] = [_plain(v) for v in out["levels"]]
        return out

    @classmethod
    def from_dict(cls, spec: dict[str, Any] | str, column: str = "?") -> "ColumnType":
        """Build from ``{"kind": ..., "levels": [...], ...}`` or a bare kind string."""
        if isinstance(spec, str):
            spec = {"kind": spec}
        if not isinstance(spec, dict) or "kind" not in spec:
            raise SchemaError(f"column {column!r}: a type needs a 'kind' (got {spec!r})")
        unknown = set(spec) - {"kind", "levels", "unit", "event"}
        if unknown:
            raise SchemaError(f"column {column!r}: unknown type fields {sorted(unknown)}")
        if spec["kind"] not in KINDS:
            raise SchemaError(
                f"column {column!r}: unknown column type {spec['kind']!r}; "
                f"use one of {', '.join(KINDS)}"
            )
        return cls(**spec)


def _plain(value):
    """numpy scalars -> Python scalars, so YAML stays readable."""
    return value.item() if isinstance(value, np.generic) else value


def _as_numeric(series: pd.Series) -> pd.Series | None:
    """The series as float64 when every non-missing value is a number, else None."""
    converted = pd.to_numeric(series, errors="coerce")
    bad = converted.isna() & series.notna()
    if bad.any():
        return None
    return converted.astype("float64")


def infer_column_type(series: pd.Series) -> ColumnType:
    """Guess the type of one column from its values (survival pairs are found by name).

    Numbers: only 0/1 -> binary; at most 7 distinct integers -> ordinal; otherwise
    continuous. Text: few levels -> categorical (sorted levels); many -> label.
    """
    values = series.dropna()
    if isinstance(series.dtype, pd.CategoricalDtype):
        kind = "ordinal" if series.cat.ordered else "categorical"
        return ColumnType(kind, levels=tuple(series.cat.categories))
    if series.dtype == bool:
        return ColumnType("binary")
    numeric = _as_numeric(series)
    if numeric is not None:
        uniques = np.unique(numeric.dropna().to_numpy())
        if len(uniques) and set(uniques.tolist()) <= {0.0, 1.0}:
            return ColumnType("binary")
        is_integer = len(uniques) and np.all(np.equal(np.mod(uniques, 1), 0))
        if is_integer and 2 <= len(uniques) <= _MAX_ORDINAL_LEVELS:
            return ColumnType("ordinal", levels=tuple(_plain(u) for u in uniques))
        return ColumnType("continuous")
    levels = sorted({str(v) for v in values})
    if len(levels) <= _MAX_CATEGORICAL_LEVELS and len(levels) < max(3, 0.5 * len(values)):
        return ColumnType("categorical", levels=tuple(levels))
    return ColumnType("label")


def find_survival_pairs(columns) -> dict[str, str]:
    """Pair survival time columns with their event columns by name.

    Recognises ``X_event``, ``event_X`` and ``X_status`` as the event of a time column
    named ``X``, ``X_time``, ``X_days``, ``X_in_days``, ``X_months`` or ``X_years`` (so
    ``os_days``/``os_status`` and ``pfs_time``/``pfs_event``), and ``e.X``/``s.X`` as the
    event of ``t.X``.
    Returns ``{time_column: event_column}``.
    """
    columns = list(columns)
    pairs: dict[str, str] = {}
    for col in columns:
        # R's survival convention: t.X with its event e.X (or status s.X)
        match = re.match(r"^[es]\.(?P<base>.+)$", col)
        if match and f"t.{match.group('base')}" in columns and f"t.{match.group('base')}" not in pairs:
            pairs[f"t.{match.group('base')}"] = col
            continue
        for pattern in _EVENT_PATTERNS:
            match = re.match(pattern, col)
            if not match:
                continue
            base = match.group("base")
            for suffix in _TIME_SUFFIXES:
                candidates = [base + suffix, suffix.lstrip("_") + "_" + base] if suffix else [base]
                for time_col in candidates:
                    if time_col in columns and time_col != col and time_col not in pairs:
                        pairs[time_col] = col
                        break
                else:
                    continue
                break
    return pairs


def infer_schema(frame: pd.DataFrame, declared: dict[str, ColumnType] | None = None) -> dict[str, ColumnType]:
    """Types for every column of ``frame``: declared ones kept, the rest inferred."""
    declared = dict(declared or {})
    schema: dict[str, ColumnType] = {}
    pairs = find_survival_pairs(frame.columns)
    for time_col, event_col in pairs.items():
        if time_col in declared or event_col in declared:
            continue
        if _as_numeric(frame[time_col]) is None:
            continue
        schema[time_col] = ColumnType("survival", event=event_col)
        schema[event_col] = ColumnType("event")
    for col in frame.columns:
        if col in declared:
            schema[col] = declared[col]
        elif col not in schema:
            schema[col] = infer_column_type(frame[col])
    return schema


def validate_block(frame: pd.DataFrame, schema: dict[str, ColumnType], block: str) -> pd.DataFrame:
    """Check every column against its type and return a normalised copy.

    Raises ``SchemaError`` naming the block, column, patient and value, and how to fix it.
    """
    frame = frame.copy()
    unknown = [c for c in schema if c not in frame.columns]
    if unknown:
        raise SchemaError(
            f"block {block!r}: the schema declares column(s) {unknown} that are not in the "
            f"table (its columns: {list(frame.columns)[:20]}); fix the name or drop the declaration"
        )
    for col in frame.columns:
        if col not in schema:
            raise SchemaError(f"block {block!r}: column {col!r} has no type; declare or infer it")
        frame[col] = _validate_column(frame[col], schema[col], block, col)
    for col, ctype in schema.items():
        if ctype.kind == "survival":
            if ctype.event is None or ctype.event not in frame.columns:
                raise SchemaError(
                    f"block {block!r}: survival column {col!r} needs its event column "
                    f"(got event={ctype.event!r}); add it to the table or declare `event:`"
                )
            if schema[ctype.event].kind not in ("event", "binary"):
                raise SchemaError(
                    f"block {block!r}: {ctype.event!r} is the event of {col!r} and must be "
                    f"typed 'event' (0/1), not {schema[ctype.event].kind!r}"
                )
    return frame


def _first_offender(mask: pd.Series, series: pd.Series) -> str:
    idx = mask[mask].index[:3]
    return ", ".join(f"patient {plain(pid)!r} ({plain(series.loc[pid])!r})" for pid in idx)


def _validate_column(series: pd.Series, ctype: ColumnType, block: str, col: str) -> pd.Series:
    where = f"block {block!r}, column {col!r}"
    kind = ctype.kind
    if kind == "label":
        return series.astype("object").where(series.notna(), None)
    if kind in ("categorical", "ordinal") and ctype.levels is not None and not all(
        isinstance(v, (int, float, np.integer, np.floating)) for v in ctype.levels
    ):
        levels = [str(v) for v in ctype.levels]
        text = series.map(lambda v: v if pd.isna(v) else str(_plain(v)))
        bad = text.notna() & ~text.isin(levels)
        if bad.any():
            raise SchemaError(
                f"{where}: value not among the declared levels {levels}: "
                f"{_first_offender(bad, series)}; fix the value or add the level"
            )
        return pd.Series(
            pd.Categorical(text, categories=levels, ordered=kind == "ordinal"),
            index=series.index,
            name=col,
        )
    if kind == "categorical" and ctype.levels is None:
        return series.astype("object").map(lambda v: v if pd.isna(v) else str(v))
    numeric = pd.to_numeric(series, errors="coerce")
    bad = numeric.isna() & series.notna()
    if bad.any():
        raise SchemaError(
            f"{where} is typed {kind!r} but holds non-numeric text: {_first_offender(bad, series)}; "
            f"correct the value, leave it empty for missing, or declare the column categorical"
        )
    numeric = numeric.astype("float64")
    present = numeric.notna()
    # inf would make the stored scaling mean inf and sd NaN (the column NaN for everyone):
    # refuse it here, where the message can name the patient.
    infinite = present & ~np.isfinite(numeric)
    if infinite.any():
        raise SchemaError(
            f"{where} holds a non-finite value: {_first_offender(infinite, series)}; "
            f"correct it, or leave the cell empty if the value is missing"
        )
    if kind in ("binary", "event"):
        bad = present & ~numeric.isin([0.0, 1.0])
        if bad.any():
            raise SchemaError(
                f"{where} is typed {kind!r} and must be 0 or 1: {_first_offender(bad, series)}; "
                f"recode it (1 = event/yes, 0 = censored/no)"
            )
    elif kind == "count":
        bad = present & ((numeric < 0) | (numeric % 1 != 0))
        if bad.any():
            raise SchemaError(f"{where} is a count and must be a non-negative integer: {_first_offender(bad, series)}")
    elif kind == "survival":
        bad = present & (numeric < 0)
        if bad.any():
            raise SchemaError(
                f"{where} is a survival time and cannot be negative: {_first_offender(bad, series)}; "
                f"check the dates it was computed from"
            )
    elif kind in ("ordinal", "categorical") and ctype.levels is not None:
        levels = [float(v) for v in ctype.levels]
        bad = present & ~numeric.isin(levels)
        if bad.any():
            raise SchemaError(
                f"{where}: value not among the declared levels {ctype.levels}: {_first_offender(bad, series)}"
            )
    return numeric


def schema_table(schema: dict[str, dict[str, ColumnType]]) -> pd.DataFrame:
    """One row per (block, column): kind, levels, unit, event; for printing."""
    rows = []
    for block, columns in schema.items():
        for col, ctype in columns.items():
            rows.append(
                {
                    "block": block,
                    "column": col,
                    "kind": ctype.kind,
                    "levels": None if ctype.levels is None else list(ctype.levels),
                    "unit": ctype.unit,
                    "event": ctype.event,
                }
            )
    return pd.DataFrame(rows, columns=["block", "column", "kind", "levels", "unit", "event"])


__all__ = [
    "KINDS",
    "ColumnType",
    "infer_column_type",
    "infer_schema",
    "find_survival_pairs",
    "validate_block",
    "schema_table",
]
