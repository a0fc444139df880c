"""From cohort blocks to the arrays a compiled model reads, and back to original units.

``Preprocessor.fit`` learns, from the training blocks, what each node needs: the mean and sd
of continuous columns (models work on the standardised scale so that one set of weakly
informative priors fits every node), the levels of discrete nodes, the time scale of survival
nodes. ``Preprocessor.transform`` turns any blocks (training or new patients, with any
subset of blocks and columns) into a ``Design``: numpy arrays per node plus boolean masks of
what was observed. Missing values stay missing (mask False); nothing is imputed here.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayesrad.errors import ModelError, plain
from bayesrad.graph.graph import Graph
from bayesrad.model.factors import normal_scores, normal_scores_fit

# sd below which a column is constant for the purpose of standardisation (keeps 1/sd finite).
_MIN_SD = 1e-8


@dataclass
class Design:
    """Arrays of one set of patients, keyed by node name.

    ``values[node]``: float64, shape (n,) (standardised continuous, 0/1 binary, level codes
    for categorical/ordinal/group, counts, survival time / time scale), or (n, p) for a latent
    node's block columns (standardised). ``observed[node]``: bool of the same shape.
    ``event[node]``: float64 (n,) 0/1 for survival nodes.
    """

    patient_ids: pd.Index
    values: dict[str, np.ndarray]
    observed: dict[str, np.ndarray]
    event: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.patient_ids)

    def take(self, rows) -> "Design":
        """The patients at positions ``rows`` (an integer array)."""
        rows = np.asarray(rows, dtype=int)
        return Design(self.patient_ids[rows], {k: v[rows] for k, v in self.values.items()},
                      {k: v[rows] for k, v in self.observed.items()},
                      {k: v[rows] for k, v in self.event.items()})


class Preprocessor:
    """Per-node statistics learnt on training blocks (see module docstring).

    ``stats_[node]`` holds: ``columns``; for continuous ``mean``/``sd``; for latent
    ``mean``/``sd`` per column (of log1p library-normalised values for a count block, with
    ``transform`` and ``median_library``); for discrete ``levels``; for count ``log_mean`` (log of the
    mean count, the rate offset) and ``enc_mean``/``enc_sd`` of the counts; for ordinal
    ``enc_mean``/``enc_sd`` of the numeric level values; for binary and categorical
    ``enc_mean``, the share of each level but the first; for survival ``time_scale`` (days per
    model time unit: the median observed time).
    """

    def __init__(self, graph: Graph):
        self.graph = graph

    def fit(self, blocks: Mapping[str, pd.DataFrame]) -> "Preprocessor":
        where = self.graph.check_data(blocks)
        self.where_ = where
        self.stats_: dict[str, dict[str, Any]] = {}
        for name in self.graph.nodes:
            spec = self.graph.spec(name)
            block, columns = where[name]
            frame = blocks[block]
            stats: dict[str, Any] = {"block": block, "columns": list(columns)}
            if spec.kind == "latent":
                matrix = _numeric(frame[columns], name)
                if _looks_like_counts(matrix):
                    library = np.nansum(matrix, axis=1)
                    stats["transform"] = "log_normalised_counts"
                    stats["median_library"] = float(np.median(library[library > 0]))
                    matrix = _transform_block(matrix, stats)
                elif (spec.prior or {}).get("transform") == "normal_scores":
                    stats["transform"] = "normal_scores"
                    stats["quantiles"] = normal_scores_fit(matrix)
                    matrix = _transform_block(matrix, stats)
                if np.any(np.all(np.isnan(matrix), axis=0)):
                    bad = [c for c, allnan in zip(columns, np.all(np.isnan(matrix), axis=0)) if allnan]
                    raise ModelError(f"latent node {name!r}: columns {bad[:5]} of block {block!r} "
                                     "are empty in the training data; drop them")
                mean, sd = _moments(matrix, axis=0)
                stats["mean"] = np.atleast_1d(mean).tolist()
                stats["sd"] = np.maximum(np.atleast_1d(sd), _MIN_SD).tolist()
            elif spec.kind == "continuous":
                x = _numeric(frame[[name]], name)[:, 0]
                _need_values(x, name, block)
                mean, sd = _moments(x)
                stats["mean"] = float(mean)
                stats["sd"] = float(max(sd, _MIN_SD))
                # the training range, for the intervention guardrails (model/guardrails.py)
                stats["min"], stats["max"] = float(np.nanmin(x)), float(np.nanmax(x))
            elif spec.kind in ("binary", "categorical", "ordinal", "group"):
                # a node empty for every patient would be fitted on its prior alone
                # (predictions about 0.5, silently)
                _need_values(np.where(frame[name].notna(), 0.0, np.nan), name, block)
                stats["levels"] = _levels(spec, frame[name], name, block)
                if spec.kind in ("binary", "categorical"):
                    # a parent's indicators enter centred (see compile.encode)
                    codes = _codes(frame[name], stats["levels"], name, block)
                    seen = codes[codes >= 0]
                    share = np.bincount(seen, minlength=len(stats["levels"])) / max(len(seen), 1)
                    stats["enc_mean"] = share[1:].tolist()
                if spec.kind == "ordinal":
                    numeric = _level_numbers(stats["levels"])
                    codes = _codes(frame[name], stats["levels"], name, block)
                    x = np.where(codes >= 0, numeric[np.maximum(codes, 0)], np.nan)
                    stats["enc_mean"] = float(np.nanmean(x))
                    stats["enc_sd"] = float(max(np.nanstd(x), _MIN_SD))
            elif spec.kind == "count":
                x = _numeric(frame[[name]], name)[:, 0]
                _need_values(x, name, block)
                if np.nanmin(x) < 0 or np.any(np.mod(x[~np.isnan(x)], 1) != 0):
                    raise ModelError(f"count node {name!r} (block {block!r}) has negative or "
                                     "non-integer values; declare it continuous")
                stats["log_mean"] = float(np.log(np.nanmean(x) + 0.5))
                stats["enc_mean"] = float(np.nanmean(x))
                stats["enc_sd"] = float(max(np.nanstd(x), _MIN_SD))
                stats["min"], stats["max"] = float(np.nanmin(x)), float(np.nanmax(x))
            elif spec.kind == "survival":
                t = _numeric(frame[[name]], name)[:, 0]
                _need_values(t, name, block)
                if np.nanmin(t) <= 0:
                    raise ModelError(f"survival node {name!r} (block {block!r}) has times <= 0; "
                                     "times must be positive durations")
                stats["time_scale"] = float(np.nanmedian(t))
                stats["event"] = spec.event
            _check_finite_stats(name, stats)
            self.stats_[name] = stats
        return self

    def transform(self, blocks: Mapping[str, pd.DataFrame], patient_ids=None,
                  require: bool = False) -> Design:
        """Arrays for the patients in ``patient_ids`` (default: union of block indices).

        A block or column absent from ``blocks`` is simply unobserved, unless ``require``.
        """
        if patient_ids is None:
            seen: dict[str, None] = {}
            for frame in blocks.values():
                for pid in frame.index:
                    seen.setdefault(str(pid), None)
            patient_ids = list(seen)
        patient_ids = pd.Index([str(p) for p in patient_ids], name="patient_id")
        if patient_ids.has_duplicates:
            dup = patient_ids[patient_ids.duplicated()][:3].tolist()
            raise ModelError(f"patients {dup} appear twice; patient ids must be unique")
        values, observed, event = {}, {}, {}
        n = len(patient_ids)
        for name in self.graph.nodes:
            spec = self.graph.spec(name)
            st = self.stats_[name]
            frame = blocks.get(st["block"])
            if frame is not None:
                if frame.index.has_duplicates:
                    dup = frame.index[frame.index.duplicated()][:3].tolist()
                    raise ModelError(f"block {st['block']!r}: patients {dup} appear twice")
                frame = frame.copy()
                frame.index = frame.index.map(str)
                frame = frame.reindex(patient_ids)
            if spec.kind == "latent":
                p = len(st["columns"])
                if frame is None:
                    raw = np.full((n, p), np.nan)
                else:
                    if frame.columns.has_duplicates:
                        dup = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
                        raise ModelError(f"block {st['block']!r}: columns {dup[:5]} appear twice; "
                                         "keep one of each (rename or drop the copies)")
                    # one conversion for the block (a column absent here is all NaN): per
                    # column, it was half a second for 1,000 columns
                    raw = _numeric(frame.reindex(columns=st["columns"]), name)
                x = (_transform_block(raw, st) - np.asarray(st["mean"])) / np.asarray(st["sd"])
                mask = ~np.isnan(x)
                values[name], observed[name] = np.where(mask, x, 0.0), mask
                continue
            if frame is None or name not in frame.columns:
                if require:
                    raise ModelError(f"node {name!r}: column missing from block {st['block']!r}")
                values[name], observed[name] = np.zeros(n), np.zeros(n, bool)
                if spec.kind == "survival":
                    event[name] = np.zeros(n)
                continue
            col = frame[name]
            if spec.kind == "continuous":
                x = (_numeric(frame[[name]], name)[:, 0] - st["mean"]) / st["sd"]
            elif spec.kind in ("binary", "categorical", "ordinal", "group"):
                # a level the training patients never had carries no learned effect: the
                # value is marginalised as missing, and the caller is told
                codes = _codes(col, st["levels"], name, st["block"], allow_unknown=True)
                unknown = col.notna().to_numpy() & (codes < 0)
                if unknown.any() and spec.kind != "group":
                    who = [str(p) for p in patient_ids[unknown][:5]]
                    seen = sorted({str(v) for v in col[unknown]})[:5]
                    warnings.warn(
                        f"node {name!r} (block {st['block']!r}): level(s) {seen} of patient(s) "
                        f"{who}{' ...' if unknown.sum() > 5 else ''} were not seen in training "
                        f"(levels {list(st['levels'])}); these values are treated as missing",
                        UserWarning, stacklevel=3)
                x = np.where(codes >= 0, codes, np.nan).astype(float)
            elif spec.kind == "count":
                x = _numeric(frame[[name]], name)[:, 0]
            elif spec.kind == "survival":
                x = _numeric(frame[[name]], name)[:, 0] / st["time_scale"]
                ev_col = st["event"]
                ev = (_numeric(frame[[ev_col]], ev_col)[:, 0] if ev_col in frame.columns
                      else np.full(n, np.nan))
                bad = ~np.isnan(ev) & ~np.isin(ev, (0.0, 1.0))
                if bad.any():
                    pid = patient_ids[np.flatnonzero(bad)[0]]
                    raise ModelError(f"event column {ev_col!r}: patient {plain(pid)!r} has "
                                     f"{plain(ev[bad][0])!r}; events must be 0 or 1")
                x = np.where(np.isnan(ev), np.nan, x)
                event[name] = np.nan_to_num(ev)
            mask = ~np.isnan(x)
            values[name], observed[name] = np.where(mask, x, 0.0), mask
        return Design(patient_ids, values, observed, event)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able statistics (for ``HybridBN.save``)."""
        return {"stats": _jsonable(self.stats_),
                "where": {k: [b, list(c)] for k, (b, c) in self.where_.items()}}

    @classmethod
    def from_dict(cls, graph: Graph, data: Mapping[str, Any]) -> "Preprocessor":
        """Inverse of ``to_dict``; a statistic missing, of the wrong type or not finite
        (a damaged or edited model file) raises ``ModelError`` naming the node."""
        pre = cls(graph)
        try:
            pre.stats_ = {str(k): dict(v) for k, v in data["stats"].items()}
            pre.where_ = {str(k): (str(v[0]), [str(c) for c in v[1]]) for k, v in data["where"].items()}
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise ModelError(f"preprocessing statistics are malformed ({type(exc).__name__}: {exc}); "
                             "save the model again") from exc
        absent = [n for n in graph.nodes if n not in pre.stats_]
        if absent:
            raise ModelError(f"preprocessing statistics lack node(s) {absent[:5]} of the graph; "
                             "save the model again")
        for name, stats in pre.stats_.items():
            _check_finite_stats(name, stats)
        return pre


def blocks_of(cohort_or_blocks) -> dict[str, pd.DataFrame]:
    """``{block: DataFrame}`` from a Cohort, a dict of DataFrames or one DataFrame."""
    if isinstance(cohort_or_blocks, pd.DataFrame):
        return {"data": cohort_or_blocks}
    if isinstance(cohort_or_blocks, Mapping):
        out = {}
        for name, frame in cohort_or_blocks.items():
            if not isinstance(frame, pd.DataFrame):
                raise ModelError(f"block {name!r} must be a DataFrame indexed by patient_id "
                                 f"(got {type(frame).__name__})")
            out[str(name)] = frame
        return out
    blocks = getattr(cohort_or_blocks, "blocks", None)
    if blocks is None:
        raise ModelError("data must be a Cohort, a dict of DataFrames or a DataFrame "
                         f"(got {type(cohort_or_blocks).__name__})")
    return dict(blocks)


def _numeric(frame: pd.DataFrame, node: str) -> np.ndarray:
    try:
        if all(pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_complex_dtype(t)
               for t in frame.dtypes):
            # already numeric (bool, int, float, nullable): no per-column parsing
            out = frame.to_numpy(dtype=float, na_value=np.nan)
        else:
            out = frame.apply(pd.to_numeric, errors="raise").to_numpy(dtype=float)
    except (ValueError, TypeError) as exc:
        for col in frame.columns:
            converted = pd.to_numeric(frame[col], errors="coerce")
            bad = converted.isna() & frame[col].notna()
            if bad.any():
                pid = bad[bad].index[0]
                raise ModelError(
                    f"node {node!r}: column {col!r} has a non-numeric value "
                    f"{plain(frame[col].loc[pid])!r} for patient {plain(pid)!r}; fix the value or the "
                    "node's kind") from exc
        raise ModelError(f"node {node!r}: columns {list(frame.columns)} are not numeric") from exc
    infinite = np.isinf(out)
    if infinite.any():
        # inf would turn the stored scaling into inf/NaN (the node NaN for everyone) or, in
        # evidence, a finite but meaningless answer: refuse it, naming the patient.
        row, j = (int(v) for v in np.argwhere(infinite)[0])
        raise ModelError(f"node {node!r}: column {str(frame.columns[j])!r} is {out[row, j]} for patient "
                         f"{str(frame.index[row])!r}; correct the value or leave it empty (missing)")
    return out


def _moments(x: np.ndarray, axis=None) -> tuple[np.ndarray, np.ndarray]:
    """NaN-ignoring mean and sd computed on values divided by their largest magnitude, so
    that values near 1e308 give a finite sd instead of overflowing to inf."""
    scale = np.nanmax(np.abs(x), axis=axis, keepdims=axis is not None)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    mean = np.nanmean(x / scale, axis=axis) * np.squeeze(scale)
    sd = np.nanstd(x / scale, axis=axis) * np.squeeze(scale)
    return mean, sd


def _looks_like_counts(matrix: np.ndarray) -> bool:
    """A block of non-negative integers beyond 0/1 (sequencing counts)."""
    values = matrix[~np.isnan(matrix)]
    return (values.size > 0 and values.min() >= 0 and values.max() > 1
            and bool(np.all(np.mod(values, 1) == 0)))


def _transform_block(matrix: np.ndarray, stats: Mapping[str, Any]) -> np.ndarray:
    """Counts -> log1p of library-size-normalised counts (per patient, so a new patient is
    transformed the same way); a block declared ``transform: normal_scores`` -> normal scores
    through each column's training quantiles (radiomics columns are skewed and heavy-tailed,
    which a Gaussian factor model fits badly); other blocks unchanged. A Gaussian factor
    model on the log scale approximates the log-mean factor model of negative-binomial counts."""
    if stats.get("transform") == "normal_scores":
        return normal_scores(matrix, stats["quantiles"])
    if stats.get("transform") != "log_normalised_counts":
        return matrix
    library = np.nansum(matrix, axis=1, keepdims=True)
    size_factor = np.where(library > 0, library / stats["median_library"], np.nan)
    return np.log1p(matrix / size_factor)


_NUMERIC_STATS = ("mean", "sd", "enc_mean", "enc_sd", "log_mean", "time_scale", "median_library")


def _check_finite_stats(name: str, stats: Mapping[str, Any]) -> None:
    """Every scaling statistic of a node is a finite number (sds and time scales positive)."""
    for key in _NUMERIC_STATS:
        if key not in stats:
            continue
        try:
            values = np.asarray(stats[key], dtype=float)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"node {name!r}: scaling statistic {key!r} is not numeric "
                             f"({stats[key]!r})") from exc
        if not np.all(np.isfinite(values)) or (key in ("sd", "enc_sd", "time_scale") and np.any(values <= 0)):
            raise ModelError(f"node {name!r}: scaling statistic {key!r} is {values.tolist()!r}, not a "
                             "finite (positive) number; check the node's values for extreme entries")


def _need_values(x, name, block):
    if np.all(np.isnan(x)):
        raise ModelError(f"node {name!r} (block {block!r}) has no observed value in the "
                         "training data; it cannot be fitted")


def _levels(spec, column: pd.Series, name: str, block: str) -> list:
    if spec.levels is not None:
        return list(spec.levels)
    if isinstance(column.dtype, pd.CategoricalDtype):
        return list(column.cat.categories)
    values = column.dropna().unique().tolist()
    if spec.kind == "binary":
        numeric = pd.to_numeric(pd.Series(values), errors="coerce")
        if numeric.notna().all() and set(numeric) <= {0.0, 1.0}:
            return [0.0, 1.0]
    if not values:
        raise ModelError(f"node {name!r} (block {block!r}) has no observed value")
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def _level_numbers(levels) -> np.ndarray:
    """Numeric value of each ordinal level (its own value if numeric, else its index)."""
    try:
        return np.asarray([float(v) for v in levels])
    except (TypeError, ValueError):
        return np.arange(len(levels), dtype=float)


def _codes(column: pd.Series, levels, name, block, allow_unknown=False) -> np.ndarray:
    """Level index per patient, -1 for missing (and for unknown group levels)."""
    lookup = {_key(v): i for i, v in enumerate(levels)}
    codes = np.full(len(column), -1, dtype=int)
    for i, v in enumerate(column.to_numpy(dtype=object)):
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            continue
        code = lookup.get(_key(v))
        if code is None:
            if allow_unknown:
                continue
            raise ModelError(
                f"node {name!r} (block {block!r}): patient {plain(column.index[i])!r} has level "
                f"{plain(v)!r}, which is not one of {plain(list(levels))}; add it to the node's levels")
        codes[i] = code
    return codes


def _key(v):
    try:
        return ("n", float(v))
    except (TypeError, ValueError):
        return ("s", str(v))


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
