"""State, validation, the what-if and counterfactual answers, the model card and the HTML
report of the clinician's app; the Dash layout and callbacks are in ``build_app`` at the end
(kept thin so the logic is testable and benchmarkable without a browser)."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from bayesrad.errors import BayesradError, ModelError
from bayesrad.model import HybridBN
from bayesrad.model.design import blocks_of

# one colour per block (cycled); the same palette in the page and the report
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
SEED = 0                      # every answer of the app is seeded: the same question, the same number
SURVIVAL_POINTS = 25          # times of a survival curve, 0 to 3x the median observed time


_QUERY_LOCK = threading.RLock()


@dataclass
class AppState:
    """What the app knows: the fitted model, the optional cohort blocks and the target.

    ``ranges[node]`` = (low, high) plausible values in original units (training mean +- 4 sd);
    ``bulk[node]`` = (low, high) where most training patients lie (mean +- 2 sd): a what-if
    value outside it is an extrapolation and is warned about. ``times``: the days at which a
    survival target's curve is drawn (``None`` for other targets). ``model_dir``: where the
    model was loaded from (its meta.json versions go on the model card).
    """
    model: HybridBN
    blocks: dict[str, pd.DataFrame] | None = None
    target: str | None = None
    n_samples: int | None = None
    model_dir: Any = None
    kinds: dict[str, str] = field(init=False)
    # Dash serves callbacks from several threads (and a process may serve several apps over
    # one model); a query forks and reseeds torch's global generator and sets the process's
    # thread pools, so two at once would change each other's answers: one lock for all
    lock: Any = field(init=False, repr=False, default_factory=lambda: _QUERY_LOCK)

    def __post_init__(self):
        m = self.model
        m._check_fitted()
        self.kinds = dict(m.layout_.kind)
        self.stats = m.preprocessor_.stats_
        observed = [n for n in m.graph_.nodes if self.kinds[n] not in ("latent", "group")]
        if self.target is None:
            binary = [n for n in observed if self.kinds[n] == "binary"]
            self.target = binary[-1] if binary else observed[-1]
        if self.target not in observed:
            raise ModelError(f"app target {self.target!r} is not an observed node of the model "
                             f"(observed nodes: {observed})")
        # the target's descendants happen after it: not evidence for its prediction
        later = m.graph_.descendants(self.target) | {self.target}
        # a survival node is a follow-up outcome (and its event status has no input here):
        # never evidence for another target's prediction
        self.inputs = [n for n in observed if n not in later and self.kinds[n] != "survival"]
        self.ranges, self.bulk = {}, {}
        for n in self.inputs:
            if self.kinds[n] == "count":
                # counts keep no mean/sd in the preprocessor: only their sign is checked
                self.ranges[n] = (0.0, math.inf)
            if self.kinds[n] == "continuous":
                mu, sd = float(self.stats[n]["mean"]), float(self.stats[n]["sd"])
                self.ranges[n] = (mu - 4 * sd, mu + 4 * sd)
                self.bulk[n] = (mu - 2 * sd, mu + 2 * sd)
        self.latents = [n for n in m.graph_.nodes if self.kinds[n] == "latent"]
        if self.blocks is not None:
            self.blocks = blocks_of(self.blocks)
        self.kind = self.kinds[self.target]
        self.times = None
        if self.kind == "survival":
            scale = float(self.stats[self.target]["time_scale"])
            # whole days, so the S@t columns have short names
            self.times = np.unique(np.round(np.linspace(0.0, 3.0 * scale, SURVIVAL_POINTS)))
        self.time_unit = m.graph_.spec(self.target).unit or "days"
        # counterfactual levers: numeric nodes with a path to the target
        ancestors = m.graph_.ancestors(self.target)
        self.cf_nodes = [n for n in self.inputs if n in ancestors and n in self.ranges]

    # ------------------------------------------------------------------ patients
    @property
    def patients(self) -> list[str]:
        if not self.blocks:
            return []
        ids = pd.Index([])
        for frame in self.blocks.values():
            ids = ids.union(frame.index)
        return [str(i) for i in ids]

    def levels(self, node) -> list[str]:
        return [str(lv) for lv in self.stats[node].get("levels", [])]

    def unit(self, node) -> str:
        spec = self.model.graph_.spec(node)
        return getattr(spec, "unit", None) or _unit_from_name(node)

    def patient_values(self, patient: str | None) -> dict[str, Any]:
        """The patient's observed input values (``None`` where missing)."""
        out = {n: None for n in self.inputs}
        if not patient or not self.blocks:
            return out
        for frame in self.blocks.values():
            if patient in frame.index:
                row = frame.loc[patient]
                for n in self.inputs:
                    if n in frame.columns and not pd.isna(row[n]):
                        value = row[n]
                        out[n] = str(value) if self.kinds[n] in ("categorical", "ordinal") \
                            else float(value)
        return out

    def outcome(self, patient: str | None) -> tuple[Any, Any] | None:
        """The patient's recorded target ``(value, event)`` (event only for a survival target,
        else ``None``), or ``None`` if not recorded."""
        if not patient or not self.blocks:
            return None
        event_col = self.stats[self.target].get("event")
        for frame in self.blocks.values():
            if self.target in frame.columns and patient in frame.index:
                value = frame.at[patient, self.target]
                if pd.isna(value):
                    return None
                event = None
                for other in self.blocks.values():
                    if event_col in other.columns and patient in other.index:
                        event = other.at[patient, event_col]
                return value, event
        return None

    def patient_blocks(self, patient: str) -> dict[str, pd.DataFrame]:
        """The patient's whole record: one-row blocks (outcome and later values included)."""
        return {name: frame.loc[[patient]] for name, frame in (self.blocks or {}).items()
                if patient in frame.index}

    def model_meta(self) -> dict:
        """meta.json of ``model_dir`` (versions, hashes), or ``{}`` when not loaded from one."""
        if self.model_dir is None:
            return {}
        import json
        from pathlib import Path

        try:
            return json.loads((Path(self.model_dir) / "meta.json").read_text())
        except (OSError, ValueError):
            return {}

    def missing_modalities(self, patient: str | None) -> list[str]:
        """Blocks of latent nodes (imaging, genes, ...) the patient has no data for."""
        if not patient or not self.blocks:
            return [self.stats[n]["block"] for n in self.latents]
        return [self.stats[n]["block"] for n in self.latents
                if self.stats[n]["block"] not in self.blocks
                or patient not in self.blocks[self.stats[n]["block"]].index]

    def latent_columns(self, patient: str | None) -> dict[str, float]:
        """The patient's block columns of latent nodes (evidence on e.g. radiomics)."""
        out = {}
        if not patient or not self.blocks:
            return out
        for n in self.latents:
            block = self.blocks.get(self.stats[n]["block"])
            if block is not None and patient in block.index:
                for c in self.stats[n]["columns"]:
                    if c in block.columns and not pd.isna(block.at[patient, c]):
                        out[c] = float(block.at[patient, c])
        return out

    # ------------------------------------------------------------------ validation
    def validate(self, raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Typed evidence from the page's raw inputs, and one message per bad value.

        Numbers must parse and lie in the plausible range; levels must be the model's.
        Empty inputs are unset (marginalised). Bad values are left out of the evidence.
        """
        evidence, errors = {}, []
        for n, value in raw.items():
            if n not in self.inputs or value is None or (isinstance(value, str) and not value.strip()):
                continue
            kind = self.kinds[n]
            if kind in ("categorical", "ordinal") and self.levels(n):
                if str(value) not in self.levels(n):
                    errors.append(f"{n}: {value!r} is not one of the levels {self.levels(n)}")
                    continue
                evidence[n] = str(value)
                continue
            try:
                x = float(value)
            except (TypeError, ValueError):
                errors.append(f"{n}: {value!r} is not a number; type a value in "
                              f"{self.unit(n) or 'the node units'}")
                continue
            if not math.isfinite(x):
                errors.append(f"{n}: {value!r} is not a finite number")
                continue
            if kind == "binary" and x not in (0.0, 1.0):
                errors.append(f"{n}: {value!r} must be 0 or 1")
                continue
            if kind == "count" and x != int(x):
                errors.append(f"{n}: {value!r} is a count; type a whole number")
                continue
            low, high = self.ranges.get(n, (-math.inf, math.inf))
            if not low <= x <= high:
                errors.append(f"{n}: {x:g} is outside the plausible range "
                              f"{low:.3g} to {high:.3g} {self.unit(n)} (training mean +- 4 sd)")
                continue
            evidence[n] = x
        return evidence, errors

    def extrapolation(self, node: str, value: float) -> str | None:
        low, high = self.bulk.get(node, (-math.inf, math.inf))
        if low <= value <= high:
            return None
        return (f"{node} = {value:g} lies outside where most training patients were "
                f"({low:.3g} to {high:.3g}): the answer is an extrapolation")


def _unit_from_name(node: str) -> str:
    for suffix, unit in (("_gy", "Gy"), ("_years", "years"), ("_days", "days"), ("_cm3", "cm3"),
                         ("_mm", "mm"), ("_pct", "%"), ("_kg", "kg")):
        if node.endswith(suffix):
            return unit
    return ""


# ---------------------------------------------------------------------- answers
def whatif_answer(state: AppState, evidence: Mapping[str, Any], node: str | None = None,
                  value: float | None = None, mode: str = "do", patient: str | None = None
                  ) -> pd.Series:
    """The answer to one what-if question: a row of ``HybridBN.query`` for ``state.target``.

    ``mode="do"``: ``do={node: value}`` (the node's incoming edges cut); ``"observe"``: the
    value is evidence. Binary target: ``mean`` = P(target = 1) with ``q05``/``q95`` (90%
    interval); categorical / ordinal: ``P[level]`` with ``P[level]_q05`` / ``_q95``;
    survival: ``median`` (days) with its band and ``S@t`` (+ bands) at ``state.times``.
    ``patient`` adds the patient's latent block columns (e.g. radiomics) as evidence.
    """
    ev = dict(state.latent_columns(patient))
    ev.update(evidence)
    do = None
    if node is not None and value is not None:
        if mode == "do":
            ev.pop(node, None)
            do = {node: float(value)}
        else:
            ev[node] = float(value)
    table = state.model.query(state.target, ev, do=do, n_samples=state.n_samples, seed=SEED,
                              times=state.times)
    return table.iloc[0]


def counterfactual_answer(state: AppState, patient: str, node: str, value: float) -> pd.Series:
    """What ``state.target`` would have been for cohort ``patient`` had ``node`` been
    ``value`` (original units): a row of ``HybridBN.counterfactual`` on the patient's whole
    record, the observed outcome included (abduction), so the answer is about this patient's
    own noise, not about a new patient like them. Columns as in :func:`whatif_answer`, plus
    ``factual`` (survival: ``median`` / ``median_q05`` / ``median_q95`` are quantiles of the
    counterfactual survival time, and ``S@t`` has no band)."""
    if state.outcome(patient) is None:
        raise ModelError(f"counterfactual: patient {patient!r} has no recorded {state.target!r}; "
                         "a counterfactual needs the observed outcome (use the what-if tab)")
    return state.model.counterfactual(state.patient_blocks(patient), state.target,
                                      {node: float(value)}, n_samples=state.n_samples,
                                      times=state.times, seed=SEED).iloc[0]


def class_bars(state: AppState, row: pd.Series, bands: bool = True
               ) -> list[tuple[str, float, float, float]]:
    """``(level, P, q05, q95)`` per level of a categorical / ordinal target, in level order.
    ``bands=False`` (a categorical counterfactual, whose draws are classes, not probabilities:
    their 5-95% quantiles are 0 or 1 and say nothing) leaves the band NaN."""
    out = []
    for level in state.levels(state.target):
        key = f"P[{level}]"
        lo, hi = (float(row.get(f"{key}_q05", np.nan)), float(row.get(f"{key}_q95", np.nan))) \
            if bands else (np.nan, np.nan)
        out.append((level, float(row[key]), lo, hi))
    return out


def _bands(state: AppState, counterfactual: bool) -> bool:
    return not (counterfactual and state.kind == "categorical")


def survival_points(state: AppState, row: pd.Series) -> pd.DataFrame:
    """The survival curve of a row: columns ``time`` (days), ``S``, ``q05``, ``q95`` (NaN
    where the answer has no band, as for a counterfactual)."""
    t = state.times
    cols = [f"S@{x:g}" for x in t]
    band = lambda suffix: [float(row.get(c + suffix, np.nan)) for c in cols]
    return pd.DataFrame({"time": t, "S": [float(row[c]) for c in cols],
                         "q05": band("_q05"), "q95": band("_q95")})


def format_answer(state: AppState, row: pd.Series, counterfactual: bool = False) -> str:
    """One line: the target's answer with its 90% interval, in the target's own terms."""
    t, kind = state.target, state.kind
    if kind == "binary":
        return (f"P({t} = 1) = {row['mean']:.2f} (90% interval {row['q05']:.2f} to "
                f"{row['q95']:.2f})")
    if kind == "survival":
        unit = state.time_unit
        what = "90% of counterfactual times" if counterfactual else "90% interval"
        return (f"median {t} = {row['median']:.0f} {unit} ({what} {row['median_q05']:.0f} to "
                f"{row['median_q95']:.0f} {unit})")
    if kind in ("categorical", "ordinal"):
        bars = class_bars(state, row, _bands(state, counterfactual))
        level, p, lo, hi = max(bars, key=lambda b: b[1])
        band = "" if math.isnan(lo) else f", 90% interval {lo:.2f} to {hi:.2f}"
        return f"most likely {t}: {level} (P = {p:.2f}{band})"
    unit = state.unit(t)
    return (f"{t} = {row['mean']:.3g}{' ' + unit if unit else ''} (90% interval "
            f"{row['q05']:.3g} to {row['q95']:.3g})")


def describe_outcome(state: AppState, patient: str | None) -> str | None:
    """The patient's recorded target in words (``None`` if not recorded)."""
    known = state.outcome(patient)
    if known is None:
        return None
    value, event = known
    if state.kind == "survival":
        status = "" if event is None else (", event" if float(event) > 0.5 else ", censored")
        return f"{state.target} = {float(value):.0f} {state.time_unit}{status}"
    if state.kind == "binary":
        return f"{state.target} = {float(value):g}"
    return f"{state.target} = {value}" if isinstance(value, str) else f"{state.target} = {value:g}"


# ---------------------------------------------------------------------- tables
def coefficient_table(state: AppState) -> pd.DataFrame:
    """``HybridBN.coefficients()``, computed once per app (a few hundred ms)."""
    if not hasattr(state, "_coefs"):
        state._coefs = state.model.coefficients(n_samples=200)
    return state._coefs


def parent_effects(state: AppState, node: str) -> pd.DataFrame:
    """Rows of the coefficient table whose child is ``node`` (or one of its levels)."""
    coefs = coefficient_table(state).reset_index()
    child = coefs["child"].str.replace(r"\[.*\]$", "", regex=True)
    return coefs.loc[child == node, ["parent", "child", "mean", "q05", "q95"]]


def evidence_blocks(state: AppState, evidence: Mapping[str, Any], patient_id: str = "query"
                    ) -> dict[str, pd.DataFrame]:
    """``{node or block column: value}`` as one-row blocks (as ``HybridBN.query`` builds
    them), so that functions taking a cohort (the explanation) see the same evidence."""
    frame = pd.DataFrame([dict(evidence)], index=pd.Index([patient_id], name="patient_id"))
    blocks: dict[str, pd.DataFrame] = {}
    for st in state.stats.values():
        for c in st["columns"]:
            if c in frame.columns:
                blocks.setdefault(st["block"], pd.DataFrame(index=frame.index))[c] = frame[c]
    return blocks


# Explanations recompute with every what-if move while they are exact and cheap (at most this
# many players: 2**10 coalitions, well under a second); beyond, 32 sampled orders cost a few
# seconds on 20 nodes and are asked for with the Explain button.
LIVE_PLAYERS = 10


def explanation(state: AppState, evidence: Mapping[str, Any], patient: str | None = None,
                causal: bool = False) -> pd.DataFrame | str:
    """Shapley contributions of the evidence to the target's answer
    (``bayesrad.explain.shapley``, exact up to ``LIVE_PLAYERS`` players, else 32 sampled
    orders), sorted by size; ``causal``: the causal variant (coalitions by intervention, the
    what-if's "do" mode). A categorical target is explained through its most probable class,
    a survival one through S(t) at the training median follow-up. Or a sentence saying why
    there is none."""
    ev = dict(state.latent_columns(patient))
    ev.update(evidence)
    if not ev:
        return "no evidence set: nothing to explain (the answer is the cohort's average)"
    try:
        from bayesrad.explain import shapley
    except ImportError:
        return "explanations not available (bayesrad.explain is not installed)"
    n_players = len(evidence) + len(state.latents)
    try:
        table = shapley(state.model, evidence_blocks(state, ev), state.target,
                        method="exact" if n_players <= LIVE_PLAYERS else "sampled",
                        causal=causal, n_samples=state.n_samples or 200, seed=SEED,
                        n_permutations=32)
    except BayesradError as exc:   # an explanation must never break the clinician's page
        return f"explanation failed: {exc}"
    if table.empty:
        return "no evidence set: nothing to explain"
    if "quantity" in table and table["quantity"].nunique() > 1:
        # one quantity per class: the most probable class's
        best = table.groupby("quantity")["prediction"].first().idxmax()
        table = table[table["quantity"] == best]
    return table.reindex(table["value"].abs().sort_values(ascending=False).index)


# ---------------------------------------------------------------------- figures
def whatif_curve(state, evidence, node, mode="do", patient=None, n_points: int = 7):
    """The answer over ``n_points`` values of ``node`` across its bulk range."""
    low, high = state.bulk[node]
    xs = np.linspace(low, high, n_points)
    rows = [whatif_answer(state, evidence, node, float(x), mode, patient) for x in xs]
    return xs, pd.DataFrame(rows)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _img(png: str, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{png}'>"


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def survival_png(state: AppState, row: pd.Series, title: str = "") -> str:
    """S(t) with its 90% band and the median marked, as a base64 PNG."""
    plt = _plt()
    pts = survival_points(state, row)
    fig, ax = plt.subplots(figsize=(5, 3))
    if pts["q05"].notna().all():
        ax.fill_between(pts["time"], pts["q05"], pts["q95"], alpha=0.3, label="90% band")
    ax.plot(pts["time"], pts["S"], marker=".", label="S(t)")
    ax.axvline(row["median"], ls=":", c="k", label=f"median {row['median']:.0f} {state.time_unit}")
    ax.set_xlabel(f"time ({state.time_unit})")
    ax.set_ylabel(f"P({state.target} > time)")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize="small")
    return _png(fig)


def whatif_png(state: AppState, evidence, node, mode, patient) -> str:
    """The what-if curve over the node's bulk range: P (binary), P per class, the median
    survival or the mean, each with its 90% band."""
    plt = _plt()
    xs, curve = whatif_curve(state, evidence, node, mode, patient)
    fig, ax = plt.subplots(figsize=(5, 3))
    if state.kind in ("categorical", "ordinal"):
        for level in state.levels(state.target):
            k = f"P[{level}]"
            line, = ax.plot(xs, curve[k], marker="o", label=f"P({level})")
            ax.fill_between(xs, curve[k + "_q05"], curve[k + "_q95"], alpha=0.15,
                            color=line.get_color())
        ax.set_ylabel(f"P({state.target})")
    else:
        mid, lo, hi = (("median", "median_q05", "median_q95") if state.kind == "survival"
                       else ("mean", "q05", "q95"))
        ax.fill_between(xs, curve[lo], curve[hi], alpha=0.3, label="90% interval")
        ax.plot(xs, curve[mid], marker="o", label=mid)
        ax.set_ylabel(f"P({state.target} = 1)" if state.kind == "binary"
                      else f"{mid} {state.target} ({state.time_unit})" if state.kind == "survival"
                      else state.target)
    ax.set_xlabel(f"{node} ({state.unit(node)})")
    ax.legend(fontsize="small")
    return _png(fig)


# ---------------------------------------------------------------------- model card
def calibration(state: AppState) -> dict | None:
    """Calibration of the target's answers on the app's cohort patients whose target is
    recorded (computed once per app): ``{"n", "metrics", "png", "where"}``, or ``None``
    without a cohort. Every observed value but the target's own and its descendants' is
    evidence, as in a real prediction. When the cohort is the training cohort these figures
    are in-sample (optimistic); the card says so."""
    if hasattr(state, "_calibration"):
        return state._calibration
    state._calibration = None
    known = [p for p in state.patients if state.outcome(p) is not None]
    if len(known) < 10:
        return None
    from bayesrad.evaluate import metrics

    plt = _plt()
    m, t, kind = state.model, state.target, state.kind
    later = tuple(sorted(m.graph_.descendants(t)))
    data = {name: frame.loc[frame.index.intersection(known)] for name, frame in state.blocks.items()}
    pred = m.predict(data, t, n_samples=state.n_samples, seed=SEED, ignore=later,
                     times=state.times).reindex(known)
    y = [state.outcome(p)[0] for p in known]
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    n_bins = max(2, min(10, len(known) // 15))
    if kind == "binary":
        yy, p = np.asarray(y, float), pred["mean"].to_numpy()
        out = {"Brier score": metrics.brier(yy, p),
               f"ECE ({n_bins} bins)": metrics.ece(yy, p, n_bins=n_bins),
               **{f"calibration {k}": v for k, v in metrics.calibration_line(yy, p).items()}}
        if len(np.unique(yy)) == 2:
            out["AUC"] = metrics.auc(yy, p)
        edges = np.quantile(p, np.linspace(0, 1, n_bins + 1))
        bins = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
        ax.plot([0, 1], [0, 1], ls=":", c="grey")
        ax.plot([p[bins == b].mean() for b in range(n_bins) if (bins == b).any()],
                [yy[bins == b].mean() for b in range(n_bins) if (bins == b).any()], "o-")
        ax.set_xlabel(f"predicted P({t} = 1)")
        ax.set_ylabel("observed share")
    elif kind in ("categorical", "ordinal"):
        levels = state.levels(t)
        codes = np.array([levels.index(str(v)) for v in y])
        probs = pred[[f"P[{lv}]" for lv in levels]].to_numpy()
        out = metrics.multiclass_metrics(codes, probs, n_bins=n_bins)
        ax.plot([0, 1], [0, 1], ls=":", c="grey")
        for k, level in enumerate(levels):
            edges = np.linspace(0, 1, n_bins + 1)
            bins = np.clip(np.searchsorted(edges, probs[:, k], side="right") - 1, 0, n_bins - 1)
            used = [b for b in range(n_bins) if (bins == b).any()]
            ax.plot([probs[bins == b, k].mean() for b in used],
                    [(codes[bins == b] == k).mean() for b in used], "o-", label=level)
        ax.legend(fontsize="small")
        ax.set_xlabel("predicted P(class)")
        ax.set_ylabel("observed share")
    elif kind == "survival":
        from lifelines import KaplanMeierFitter

        time = np.asarray(y, float)
        event = np.asarray([float(state.outcome(p)[1]) for p in known])
        scale = float(state.stats[t]["time_scale"])
        out = {}
        for x in (0.5 * scale, scale, 1.5 * scale):
            col = min(state.times, key=lambda s: abs(s - x))
            c = metrics.survival_calibration(time, event, pred[f"S@{col:g}"], col)
            out[f"S({col:g} {state.time_unit}) predicted"] = c["predicted"]
            out[f"S({col:g} {state.time_unit}) Kaplan-Meier"] = c["observed"]
        KaplanMeierFitter().fit(time, event, label="Kaplan-Meier").plot_survival_function(ax=ax)
        ax.plot(state.times, [pred[f"S@{s:g}"].mean() for s in state.times], label="mean predicted")
        ax.legend(fontsize="small")
        ax.set_xlabel(f"time ({state.time_unit})")
        ax.set_ylabel("survival")
    else:
        yy = np.asarray(y, float)
        out = {"mean absolute error": float(np.mean(np.abs(pred["mean"].to_numpy() - yy))),
               "90% interval coverage": metrics.coverage(yy, pred["q05"], pred["q95"])}
        ax.plot(pred["mean"], yy, ".")
        ax.set_xlabel(f"predicted {t}")
        ax.set_ylabel(f"observed {t}")
    ax.set_title(f"calibration on {len(known)} patients")
    state._calibration = {"n": len(known), "metrics": {k: float(v) for k, v in out.items()},
                          "png": _png(fig), "predictions": pred}
    return state._calibration


def model_card(state: AppState) -> str:
    """The model card (HTML): the data (training statistics per node and the app's cohort),
    the versions (package, model file, fit) and the calibration figures."""
    import bayesrad

    esc, m = html.escape, state.model
    rows = []
    for n in m.graph_.nodes:
        st, kind = state.stats.get(n, {}), state.kinds[n]
        if kind == "continuous":
            summary = f"mean {st['mean']:.3g}, sd {st['sd']:.3g} {state.unit(n)}"
        elif kind == "survival":
            summary = f"median observed time {st['time_scale']:.0f} {state.time_unit}"
        elif kind == "latent":
            summary = f"{len(st.get('columns', []))} columns, {m.graph_.spec(n).latent_dim} dimensions"
        elif st.get("levels"):
            summary = "levels " + ", ".join(map(str, st["levels"]))
        else:
            summary = ""
        rows.append(f"<tr><td>{esc(n)}</td><td>{esc(str(st.get('block', '')))}</td>"
                    f"<td>{esc(kind)}</td><td>{esc(summary)}</td></tr>")
    parts = ["<div id='model-card'><h2>Model card</h2><h3>Data</h3>",
             "<p>Training statistics (the preprocessor's, learnt on the training cohort):</p>",
             "<table border=1 id='training-data'><tr><th>node</th><th>block</th><th>kind</th>"
             "<th>training summary</th></tr>" + "".join(rows) + "</table>"]
    if state.blocks:
        sizes = ", ".join(f"{esc(b)} {len(f)}" for b, f in state.blocks.items())
        known = sum(state.outcome(p) is not None for p in state.patients)
        parts.append(f"<p id='cohort'>Cohort in the app: {len(state.patients)} patients "
                     f"(rows per block: {sizes}); {known} with a recorded {esc(state.target)}.</p>")
    else:
        parts.append("<p id='cohort'>No cohort was given to the app (--cohort).</p>")
    meta = state.model_meta()
    versions = meta.get("versions", {})
    elbo = getattr(m, "elbo_history_", [])
    parts.append("<h3>Version</h3><ul id='version'>"
                 f"<li>bayesrad {esc(bayesrad.__version__)} (running)</li>"
                 + (f"<li>model file: {esc(str(state.model_dir))}, saved with "
                    + esc(", ".join(f"{k} {v}" for k, v in versions.items()))
                    + f"; parameters SHA-256 {esc(meta.get('sha256', {}).get('params.safetensors', '?')[:16])}...</li>"
                    if meta else "<li>model fitted in this session (not loaded from a file)</li>")
                 + f"<li>graph: {len(m.graph_.nodes)} nodes, {len(m.graph_.edges)} edges</li>"
                 f"<li>inference: {esc(m.method)} ({esc(m.guide)} guide), {m.num_steps} steps, "
                 f"seed {m.seed}" + (f", final loss {float(elbo[-1]):.4g}" if len(elbo) else "")
                 + "</li>"
                 f"<li>posterior draws per answer: {state.n_samples or m.n_samples}; every "
                 f"answer seeded ({SEED})</li>"
                 f"<li>target: {esc(state.target)} ({esc(state.kind)})</li></ul>")
    cal = calibration(state)
    parts.append("<h3>Calibration</h3><div id='calibration'>")
    if cal is None:
        parts.append("<p>Calibration not shown: the app has no cohort with at least 10 recorded "
                     f"{esc(state.target)} values (start it with --cohort).</p>")
    else:
        parts.append(f"<p>On the app's {cal['n']} cohort patients with a recorded "
                     f"{esc(state.target)} (every other observed value as evidence). If this is "
                     "the training cohort, these figures are in-sample and optimistic; judge the "
                     "model on held-out patients (bayesrad evaluate).</p><table border=1 "
                     "id='calibration-metrics'>"
                     + "".join(f"<tr><td>{esc(k)}</td><td>{v:.3f}</td></tr>"
                               for k, v in cal["metrics"].items())
                     + "</table>" + _img(cal["png"], "calibration figure"))
    parts.append("</div><h3>Intended use</h3><p>Research decision support; not a validated "
                 "medical device.</p></div>")
    return "".join(parts)


# ---------------------------------------------------------------------- report
def _answer_html(state: AppState, row: pd.Series, title: str, counterfactual=False) -> str:
    esc = html.escape
    out = ""
    if state.kind in ("categorical", "ordinal"):
        out += ("<table border=1 class='classes'><tr><th>class</th><th>P</th><th>90% interval</th></tr>"
                + "".join(f"<tr><td>{esc(lv)}</td><td>{p:.2f}</td><td>"
                          + ("" if math.isnan(lo) else f"{lo:.2f} to {hi:.2f}") + "</td></tr>"
                          for lv, p, lo, hi in class_bars(state, row, _bands(state, counterfactual)))
                + "</table>")
    if state.kind == "survival":
        out += _img(survival_png(state, row, title), "survival curve")
    return out


def report_html(state: AppState, evidence: Mapping[str, Any], patient: str | None = None,
                node: str | None = None, value: float | None = None, mode: str = "do",
                cf_node: str | None = None, cf_value: float | None = None) -> str:
    """One self-contained HTML patient report: prediction with its interval (class table or
    survival curve), evidence table, explanation, what-if curve, counterfactual (a cohort
    patient with a recorded outcome and ``cf_node``/``cf_value`` set), network picture and
    the model card (data, version, calibration). Images are inline base64 PNGs, so the file
    opens anywhere without the app; sections carry ids (``prediction``, ``evidence``,
    ``explanation``, ``whatif``, ``counterfactual``, ``network``, ``model-card``)."""
    from bayesrad.viz.graph_plot import plot_graph

    esc = html.escape
    _plt()
    row = whatif_answer(state, evidence, node, value, mode, patient)
    under = f" under {mode}({node} = {value:g} {state.unit(node)})" if node and value is not None else ""
    parts = [f"<h1>bayesrad patient report: {esc(patient or 'hypothetical patient')}</h1>",
             f"<p>Generated {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC</p>",
             "<div id='prediction-section'><h2>Prediction</h2>",
             f"<p id='prediction'>{esc(format_answer(state, row))}{esc(under)}</p>",
             _answer_html(state, row, "prediction") + "</div>",
             "<h2>Evidence</h2><table border=1 id='evidence'><tr><th>node</th><th>value</th></tr>"]
    for n in state.inputs:
        v = evidence.get(n)
        unit = state.unit(n) if v is not None else ""
        shown = "not set" if v is None else f"{v:.6g} {unit}".strip() if isinstance(v, float) else str(v)
        parts.append(f"<tr><td>{esc(n)}</td><td>{esc(shown)}</td></tr>")
    parts.append("</table>")
    missing = state.missing_modalities(patient)
    if missing:
        parts.append(f"<p>Missing modalities (marginalised): {esc(', '.join(missing))}</p>")
    parts.append("<h2>Explanation</h2><div id='explanation'>")
    expl = explanation(state, evidence, patient)
    if isinstance(expl, str):
        parts.append(f"<p>{esc(expl)}</p>")
    else:
        first = expl.iloc[0]
        sampled = bool((expl["mc_se"] > 0).any())
        what = first["quantity"] if "quantity" in expl else "the answer"
        parts.append(f"<p>Shapley contributions to {esc(str(what))}: from {first['base']:.3g} with no "
                     f"evidence to {first['prediction']:.3g} with this evidence"
                     + (f" (32 sampled orders of the {len(expl)} nodes; Monte Carlo standard "
                        f"error up to {expl['mc_se'].max():.3f})" if sampled else "") + ".</p>"
                     "<table border=1><tr><th>node</th><th>contribution</th><th>90% interval</th></tr>"
                     + "".join(f"<tr><td>{esc(r.node)}</td><td>{r.value:+.3f}</td>"
                               f"<td>{r.q05:+.3f} to {r.q95:+.3f}</td></tr>"
                               for r in expl.itertuples()) + "</table>")
    parts.append("</div>")
    if node in state.bulk:
        parts.append(f"<div id='whatif'><h2>What-if: {esc(mode)}({esc(node)})</h2>"
                     + _img(whatif_png(state, evidence, node, mode, patient), "what-if curve")
                     + "</div>")
    if patient and cf_node and cf_value is not None and state.outcome(patient) is not None:
        cf = counterfactual_answer(state, patient, cf_node, cf_value)
        parts.append("<div id='counterfactual'><h2>Counterfactual</h2>"
                     f"<p>Observed: {esc(describe_outcome(state, patient))}. Had {esc(cf_node)} been "
                     f"{cf_value:g} {esc(state.unit(cf_node))}: "
                     f"{esc(format_answer(state, cf, counterfactual=True))}</p>"
                     + _answer_html(state, cf, "counterfactual", counterfactual=True) + "</div>")
    parts.append("<div id='network'><h2>Network</h2>"
                 + _img(_png(plot_graph(state.model.graph_)), "network") + "</div>")
    parts.append(model_card(state))
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>bayesrad report</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
            "table{border-collapse:collapse}td,th{padding:2px 6px}</style>"
            "</head><body>" + "\n".join(parts) + "</body></html>")


# ---------------------------------------------------------------------- Dash app
def cytoscape_elements(state: AppState) -> list[dict]:
    """Nodes coloured by block (shape by kind), edges as wide as |posterior mean coefficient|
    on the model scale, dashed where bootstrap confidence < 0.5."""
    g = state.model.graph_
    blocks = sorted({g.spec(n).block or "" for n in g.nodes})
    colour = {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(blocks)}
    coefs = coefficient_table(state).reset_index()
    strip = lambda s: s.str.replace(r"\[.*\]$", "", regex=True)
    coefs["p"], coefs["c"] = strip(coefs["parent"]), strip(coefs["child"])
    strength = coefs.assign(a=coefs["std_mean"].abs()).groupby(["p", "c"])["a"].max()
    conf = g.edge_confidence
    els = [{"data": {"id": n, "label": n, "kind": state.kinds[n],
                     "colour": colour[g.spec(n).block or ""]}} for n in g.nodes]
    for u, v in g.edges:
        width = 1.0 + 6.0 * min(float(strength.get((u, v), 0.0)), 1.5) / 1.5
        p = conf.get((u, v), {}).get("probability")
        els.append({"data": {"id": f"{u}->{v}", "source": u, "target": v, "width": width,
                             "style": "dashed" if p is not None and p < 0.5 else "solid"}})
    return els


STYLESHEET = [
    {"selector": "node", "style": {"label": "data(label)", "background-color": "data(colour)",
                                   "font-size": 10}},
    {"selector": "node[kind = 'latent']", "style": {"shape": "round-rectangle"}},
    {"selector": "edge", "style": {"width": "data(width)", "line-style": "data(style)",
                                   "curve-style": "bezier", "target-arrow-shape": "triangle"}},
]


def detail_view(state: AppState, row: pd.Series, prefix: str, counterfactual: bool = False):
    """The answer's picture in the page: class bars (categorical / ordinal: one row per class,
    the bar its probability, the lighter band its 90% interval) or the survival curve with its
    band and the median (a plotly figure); ``None`` for a single number. Ids start with
    ``prefix`` (``whatif`` / ``cf``)."""
    from dash import dcc, html as h

    if state.kind in ("categorical", "ordinal"):
        rows = []
        for i, (level, p, lo, hi) in enumerate(class_bars(state, row, _bands(state, counterfactual))):
            band = [] if math.isnan(lo) else [h.Div(style={
                "position": "absolute", "left": f"{100 * lo:.1f}%", "width": f"{100 * (hi - lo):.1f}%",
                "top": 0, "bottom": 0, "background": "rgba(31,119,180,0.25)"})]
            text = f"{p:.2f}" + ("" if math.isnan(lo) else f" (90% {lo:.2f} to {hi:.2f})")
            rows.append(h.Div([
                h.Span(level, className="class-level", style={"width": "8em", "display": "inline-block"}),
                h.Div(band + [h.Div(style={"width": f"{100 * p:.1f}%", "height": "60%",
                                           "marginTop": "0.2em", "background": PALETTE[0]})],
                      style={"position": "relative", "width": "12em", "height": "1.1em",
                             "background": "#eee", "display": "inline-block"}),
                h.Span(" " + text, className="class-value")],
                className="class-row", id=f"{prefix}-class-{i}"))
        return h.Div(rows, id=f"{prefix}-classes")
    if state.kind == "survival":
        pts = survival_points(state, row)
        times = pts["time"].tolist()
        data = []
        if pts["q05"].notna().all():
            data += [{"x": times, "y": pts["q95"].tolist(), "mode": "lines", "name": "95%",
                      "line": {"width": 0}, "showlegend": False, "hoverinfo": "skip"},
                     {"x": times, "y": pts["q05"].tolist(), "mode": "lines", "name": "90% band",
                      "fill": "tonexty", "fillcolor": "rgba(31,119,180,0.25)", "line": {"width": 0}}]
        data.append({"x": times, "y": pts["S"].tolist(), "mode": "lines+markers", "name": "S(t)",
                     "line": {"color": PALETTE[0]}})
        median = float(row["median"])
        figure = {"data": data, "layout": {
            "height": 260, "margin": {"l": 50, "r": 10, "t": 10, "b": 40},
            "xaxis": {"title": {"text": f"time ({state.time_unit})"}},
            "yaxis": {"title": {"text": f"P({state.target} > time)"}, "range": [0, 1.02]},
            "shapes": [{"type": "line", "x0": median, "x1": median, "y0": 0, "y1": 1,
                        "line": {"dash": "dot", "color": "black"}}],
            "legend": {"orientation": "h"}}}
        return dcc.Graph(id=f"{prefix}-survival", figure=figure, config={"displayModeBar": False})
    return None


def build_app(model: HybridBN, cohort=None, target: str | None = None,
              n_samples: int | None = None, model_dir=None):
    """The Dash app over ``model`` (and the patients of ``cohort``, a Cohort or blocks dict);
    ``model_dir``: the directory it was loaded from, for the model card's versions."""
    import dash
    import dash_cytoscape as cyto
    from dash import ALL, Input, Output, State, ctx, dcc, html as h

    state = AppState(model, cohort, target, n_samples, model_dir)
    app = dash.Dash(__name__, title="bayesrad")
    app.state = state
    continuous = list(state.bulk)

    def field_for(n):
        kind = state.kinds[n]
        if kind in ("categorical", "ordinal") and state.levels(n):
            widget = dcc.Dropdown(id={"type": "ev", "node": n}, options=state.levels(n),
                                  placeholder="not set", style={"width": "14em"})
            hint = "levels: " + ", ".join(state.levels(n))
        else:
            widget = dcc.Input(id={"type": "ev", "node": n}, type="text", debounce=True,
                               placeholder="not set", style={"width": "10em"})
            low, high = state.ranges.get(n, (0, 1))
            hint = ("0 or 1" if kind == "binary" else "a whole number >= 0" if kind == "count"
                    else f"{state.unit(n)} plausible {low:.3g} to {high:.3g}")
        return h.Div([h.Label(n, style={"width": "12em", "display": "inline-block"}), widget,
                      h.Span(" " + hint, style={"color": "#666", "fontSize": "small"})],
                     style={"display": "flex", "gap": "0.5em", "alignItems": "center"})

    default = "dose_mean_gy" if "dose_mean_gy" in continuous else (continuous[0] if continuous else None)
    cf_default = ("dose_mean_gy" if "dose_mean_gy" in state.cf_nodes
                  else state.cf_nodes[0] if state.cf_nodes else None)
    whatif_panel = h.Div([
        dcc.Dropdown(id="whatif-node", options=continuous, value=default, clearable=False),
        dcc.RadioItems(id="mode", options=[{"label": "do (intervene)", "value": "do"},
                                           {"label": "observe", "value": "observe"}],
                       value="do", inline=True),
        dcc.Slider(id="slider", min=0, max=1, step=None, value=None,
                   marks=None, tooltip={"always_visible": False}),
        h.Div(["value: ", h.Span(id="whatif-value")]),
        h.Div(id="warning", style={"color": "#b35900"}),
        h.Div(id="message", style={"color": "#c00"}),
        h.H3(h.Span(id="answer")),
        h.Div(id="answer-detail"),
        h.Button("Explain", id="explain"),
        dcc.Loading(h.Div(id="explanation")),
    ], id="whatif-panel")
    cf_panel = h.Div([
        h.P(id="cf-status"),
        h.Div([h.Label("had "), dcc.Dropdown(id="cf-node", options=state.cf_nodes,
                                              value=cf_default, clearable=False,
                                              style={"width": "14em"}),
               h.Label(" been "),
               dcc.Input(id="cf-value", type="text", debounce=True, placeholder="a value",
                         style={"width": "8em"}),
               h.Span(id="cf-unit")],
              style={"display": "flex", "gap": "0.5em", "alignItems": "center"}),
        h.Div(id="cf-message", style={"color": "#c00"}),
        h.H3(h.Span(id="cf-answer")),
        h.Div(id="cf-detail"),
    ], id="cf-panel", style={"display": "none"})
    app.layout = h.Div([
        h.H2(f"bayesrad: {state.target}"),
        h.Div([
            h.Div([
                cyto.Cytoscape(id="network", elements=cytoscape_elements(state),
                               stylesheet=STYLESHEET, layout={"name": "breadthfirst",
                                                              "directed": True},
                               style={"width": "100%", "height": "420px"}),
                h.Div(id="node-effects"),
            ], style={"flex": "1"}),
            h.Div([
                h.H3("Patient"),
                dcc.Dropdown(id="patient", options=[{"label": "blank patient", "value": ""}]
                             + [{"label": p, "value": p} for p in state.patients],
                             value="", clearable=False),
                h.Div(id="missing"),
                h.Div([field_for(n) for n in state.inputs]),
                dcc.Tabs(id="tabs", value="whatif", children=[
                    dcc.Tab(label="What-if", value="whatif", id="tab-whatif"),
                    dcc.Tab(label="Counterfactual", value="cf", id="tab-cf")]),
                whatif_panel,
                cf_panel,
                h.Button("Export report", id="export"),
                dcc.Download(id="download"),
            ], style={"flex": "1", "padding": "0 1em"}),
        ], style={"display": "flex"}),
    ])

    @app.callback(Output("node-effects", "children"), Input("network", "tapNodeData"))
    def show_effects(data):
        if not data:
            return "Click a node for its parents' effects."
        t = parent_effects(state, data["id"])
        if t.empty:
            return f"{data['id']} has no parents."
        return h.Table([h.Tr([h.Th(c) for c in ("parent", "child", "effect", "90% interval")])]
                       + [h.Tr([h.Td(r.parent), h.Td(r.child), h.Td(f"{r.mean:.3g}"),
                                h.Td(f"{r.q05:.3g} to {r.q95:.3g}")]) for r in t.itertuples()],
                       id="effects-table")

    @app.callback(Output({"type": "ev", "node": ALL}, "value"), Output("missing", "children"),
                  Input("patient", "value"))
    def load_patient(patient):
        values = state.patient_values(patient or None)
        missing = state.missing_modalities(patient or None)
        text = ("missing modalities: " + ", ".join(missing)) if missing else "all modalities present"
        return [values[n] for n in state.inputs], text

    @app.callback(Output("whatif-panel", "style"), Output("cf-panel", "style"),
                  Input("tabs", "value"))
    def switch(tab):
        hidden = {"display": "none"}
        return (hidden, {}) if tab == "cf" else ({}, hidden)

    @app.callback(Output("slider", "min"), Output("slider", "max"), Output("slider", "step"),
                  Output("slider", "value"), Input("whatif-node", "value"))
    def set_slider(node):
        if node is None:
            return 0, 1, 1, None
        low, high = state.ranges[node]   # continuous nodes only (the what-if list)
        mu = float(state.stats[node]["mean"])
        step = 10 ** math.floor(math.log10((high - low) / 100))
        return (round(low / step) * step, round(high / step) * step, step,
                round(mu / step) * step)

    @app.callback(Output("answer", "children"), Output("answer-detail", "children"),
                  Output("message", "children"), Output("warning", "children"),
                  Output("whatif-value", "children"),
                  Input({"type": "ev", "node": ALL}, "value"), Input("slider", "value"),
                  Input("mode", "value"), State("whatif-node", "value"),
                  State("patient", "value"))
    def answer(values, value, mode, node, patient):
        with state.lock:
            return answer_outputs(state, values, value, mode, node, patient)

    @app.callback(Output("cf-status", "children"), Output("cf-answer", "children"),
                  Output("cf-detail", "children"), Output("cf-message", "children"),
                  Output("cf-unit", "children"),
                  Input("patient", "value"), Input("cf-node", "value"), Input("cf-value", "value"))
    def counterfactual(patient, node, raw):
        with state.lock:
            return counterfactual_outputs(state, patient, node, raw)

    # the explanation follows the what-if (its own callback, so the answer's latency is not
    # its); with more than LIVE_PLAYERS players it waits for the Explain button
    @app.callback(Output("explanation", "children"), Input("explain", "n_clicks"),
                  Input({"type": "ev", "node": ALL}, "value"), Input("slider", "value"),
                  Input("mode", "value"), State("whatif-node", "value"),
                  State("patient", "value"), prevent_initial_call=True)
    def explain(_, values, value, mode, node, patient):
        with state.lock:
            return explanation_outputs(state, values, value, mode, node, patient,
                                       clicked=ctx.triggered_id == "explain")

    @app.callback(Output("download", "data"), Input("export", "n_clicks"),
                  State({"type": "ev", "node": ALL}, "value"), State("slider", "value"),
                  State("mode", "value"), State("whatif-node", "value"),
                  State("patient", "value"), State("cf-node", "value"),
                  State("cf-value", "value"), prevent_initial_call=True)
    def export(_, values, value, mode, node, patient, cf_node, cf_raw):
        evidence, _errors = state.validate(dict(zip(state.inputs, values)))
        cf_ok = bool(cf_node) and not state.validate({cf_node: cf_raw})[1] and cf_raw not in (None, "")
        with state.lock:
            text = report_html(state, evidence, patient or None, node, value, mode,
                               cf_node if cf_ok else None, float(cf_raw) if cf_ok else None)
        return {"content": text, "filename": f"bayesrad_report_{patient or 'blank'}.html"}

    return app


def answer_callback(state: AppState, values, value, mode, node, patient):
    """The callback that answers a slider move or an edited input (called directly by the
    benchmark): answer text, the answer's row, validation message, extrapolation warning,
    slider readout."""
    evidence, errors = state.validate(dict(zip(state.inputs, values)))
    warning = state.extrapolation(node, value) if node and value is not None else None
    row = whatif_answer(state, evidence, node, value, mode, patient or None)
    return (format_answer(state, row), row, "; ".join(errors), warning or "",
            "" if value is None else f"{value:g}")


def answer_outputs(state: AppState, values, value, mode, node, patient):
    """What the what-if callback returns to the page (the benchmark times this): answer
    text, its picture (class bars / survival curve), message, warning, slider readout."""
    text, row, message, warning, shown = answer_callback(state, values, value, mode, node, patient)
    return text, detail_view(state, row, "whatif"), message, warning, shown


def explanation_outputs(state: AppState, values, value, mode, node, patient, clicked=False):
    """The explanation panel for the current what-if: the evidence plus the slider's node at
    its value (``mode`` "do": the causal variant, coalitions by intervention). Recomputed on
    every change while exact (at most ``LIVE_PLAYERS`` players); beyond, only on ``clicked``."""
    from dash import html as h

    evidence, errors = state.validate(dict(zip(state.inputs, values)))
    if errors:
        return "fix the evidence to see the explanation: " + "; ".join(errors)
    if node and value is not None:
        evidence = {**evidence, node: float(value)}
    n_players = len(evidence) + len(state.latents)
    if not clicked and n_players > LIVE_PLAYERS:
        return (f"{n_players} pieces of evidence: the explanation samples orderings and takes "
                "a few seconds; press Explain")
    expl = explanation(state, evidence, patient or None, causal=mode == "do")
    if isinstance(expl, str):
        return expl
    what = expl["quantity"].iloc[0] if "quantity" in expl else state.target
    how = "as interventions (do)" if mode == "do" else "as observed"
    caption = (f"Contributions to {what}, evidence taken {how}"
               + (f", {node} = {float(value):g} {state.unit(node)}" if node and value is not None
                  else ""))
    return h.Div([h.P(caption, id="explanation-caption"), h.Table(
        [h.Tr([h.Th(c) for c in ("node", "contribution", "90% interval")])]
        + [h.Tr([h.Td(r.node), h.Td(f"{r.value:+.3f}"), h.Td(f"{r.q05:+.3f} to {r.q95:+.3f}")])
           for r in expl.head(8).itertuples()], id="explanation-table")])


def counterfactual_outputs(state: AppState, patient, node, raw):
    """What the counterfactual callback returns to the page: status, answer text, its
    picture, message, the node's unit."""
    status, row, message = counterfactual_callback(state, patient, node, raw)
    text = "" if row is None else (f"Had {node} been {float(raw):g} {state.unit(node)}: "
                                   + format_answer(state, row, counterfactual=True))
    detail = None if row is None else detail_view(state, row, "cf", counterfactual=True)
    return status, text, detail, message, state.unit(node) if node else ""


def counterfactual_callback(state: AppState, patient, node, raw):
    """The counterfactual tab: ``(status, row or None, message)``. The status says what was
    observed (or why there is no counterfactual); a bad value gives a message, never a
    traceback."""
    if not patient:
        return (f"Counterfactuals need a cohort patient whose {state.target} is recorded: "
                "choose one above.", None, "")
    observed = describe_outcome(state, patient)
    if observed is None:
        return (f"{patient}'s {state.target} is not recorded: no counterfactual (use the "
                "what-if tab).", None, "")
    if not node:
        return f"Observed for {patient}: {observed}. No node has a path to {state.target}.", None, ""
    own = state.patient_values(patient).get(node)
    status = (f"Observed for {patient}: {observed}"
              + (f", with {node} = {own:g} {state.unit(node)}" if own is not None else "")
              + f". What would {state.target} have been had {node} been:")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return status, None, ""
    evidence, errors = state.validate({node: raw})
    if errors:
        return status, None, "; ".join(errors)
    try:
        row = counterfactual_answer(state, patient, node, evidence[node])
    except BayesradError as exc:
        return status, None, str(exc)
    return status, row, ""
