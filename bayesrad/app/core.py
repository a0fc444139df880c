"""State, validation, the what-if answer and the HTML report of the clinician's app; the Dash
layout and callbacks are in ``build_app`` at the end (kept thin so the logic is testable and
benchmarkable without a browser)."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from bayesrad.model import HybridBN
from bayesrad.model.design import blocks_of

# one colour per block (cycled); the same palette in the page and the report
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
SEED = 0                      # every answer of the app is seeded: the same question, the same number


@dataclass
class AppState:
    """What the app knows: the fitted model, the optional cohort blocks and the target.

    ``ranges[node]`` = (low, high) plausible values in original units (training mean +- 4 sd);
    ``bulk[node]`` = (low, high) where most training patients lie (mean +- 2 sd): a what-if
    value outside it is an extrapolation and is warned about.
    """
    model: HybridBN
    blocks: dict[str, pd.DataFrame] | None = None
    target: str | None = None
    n_samples: int | None = None
    kinds: dict[str, str] = field(init=False)

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
            from bayesrad.errors import ModelError
            raise ModelError(f"app target {self.target!r} is not an observed node of the model "
                             f"(observed nodes: {observed})")
        # the target's descendants happen after it: not evidence for its prediction
        later = m.graph_.descendants(self.target) | {self.target}
        self.inputs = [n for n in observed if n not in later]
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


def whatif_answer(state: AppState, evidence: Mapping[str, Any], node: str | None = None,
                  value: float | None = None, mode: str = "do", patient: str | None = None
                  ) -> pd.Series:
    """The answer to one what-if question: a row of ``HybridBN.query`` for ``state.target``.

    ``mode="do"``: ``do={node: value}`` (the node's incoming edges cut); ``"observe"``: the
    value is evidence. Binary target: ``mean`` = P(target = 1) with ``q05``/``q95`` (90%
    interval). ``patient`` adds the patient's latent block columns (e.g. radiomics) as evidence.
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
    table = state.model.query(state.target, ev, do=do, n_samples=state.n_samples, seed=SEED)
    return table.iloc[0]


def format_answer(state: AppState, row: pd.Series) -> str:
    if "mean" in row and "q05" in row and state.kinds[state.target] == "binary":
        return f"P({state.target} = 1) = {row['mean']:.2f} (90% interval {row['q05']:.2f} to {row['q95']:.2f})"
    if "median" in row:
        return f"median {state.target} = {row['median']:.0f} days (90%: {row['median_q05']:.0f} to {row['median_q95']:.0f})"
    if "mean" in row and "q05" in row:
        return f"{state.target} = {row['mean']:.3g} (90% interval {row['q05']:.3g} to {row['q95']:.3g})"
    probs = {k: v for k, v in row.items() if k.startswith("P[") and not k.endswith(("_q05", "_q95"))}
    return ", ".join(f"{k} = {v:.2f}" for k, v in probs.items())


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


def explanation(state: AppState, evidence: Mapping[str, Any]) -> pd.DataFrame | None:
    """Shapley values from ``bayesrad.explain.shapley`` when that module exists, else None."""
    try:
        from bayesrad.explain import shapley  # written in parallel; optional here
    except ImportError:
        return None
    try:
        frame = pd.DataFrame([dict(evidence)], index=pd.Index(["query"], name="patient_id"))
        return pd.DataFrame(shapley(state.model, frame, state.target))
    except Exception:  # an explanation must never break the clinician's page
        return None


def whatif_curve(state: AppState, evidence, node, mode="do", patient=None, n_points: int = 7):
    """The answer over ``n_points`` values of ``node`` across its bulk range."""
    low, high = state.bulk[node]
    xs = np.linspace(low, high, n_points)
    rows = [whatif_answer(state, evidence, node, float(x), mode, patient) for x in xs]
    return xs, pd.DataFrame(rows)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def report_html(state: AppState, evidence: Mapping[str, Any], patient: str | None = None,
                node: str | None = None, value: float | None = None, mode: str = "do") -> str:
    """One self-contained HTML patient report: network picture, evidence table, prediction
    with interval, explanation (if available), what-if curve and a model card. Images are
    inline base64 PNGs, so the file opens anywhere without the app."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bayesrad.viz.graph_plot import plot_graph

    esc = html.escape
    net = _png(plot_graph(state.model.graph_))
    row = whatif_answer(state, evidence, node, value, mode, patient)
    parts = [f"<h1>bayesrad patient report: {esc(patient or 'hypothetical patient')}</h1>",
             f"<p>Generated {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC</p>",
             "<h2>Prediction</h2>",
             f"<p id='prediction'>{esc(format_answer(state, row))}"
             + (f" under {esc(mode)}({esc(node)} = {value:g})" if node and value is not None else "")
             + "</p>", "<h2>Evidence</h2><table border=1 id='evidence'><tr><th>node</th><th>value</th></tr>"]
    for n in state.inputs:
        v = evidence.get(n)
        parts.append(f"<tr><td>{esc(n)}</td><td>{esc('not set' if v is None else str(v))}</td></tr>")
    parts.append("</table>")
    missing = state.missing_modalities(patient)
    if missing:
        parts.append(f"<p>Missing modalities (marginalised): {esc(', '.join(missing))}</p>")
    parts.append("<h2>Explanation</h2>")
    expl = explanation(state, evidence)
    parts.append(expl.to_html() if expl is not None else "<p>explanations not available</p>")
    if node in state.bulk:
        xs, curve = whatif_curve(state, evidence, node, mode, patient)
        fig, ax = plt.subplots(figsize=(5, 3))
        if "q05" in curve:
            ax.fill_between(xs, curve["q05"], curve["q95"], alpha=0.3, label="90% interval")
        ax.plot(xs, curve["mean"], marker="o", label="mean")
        ax.set_xlabel(f"{node} ({state.unit(node)})")
        ax.set_ylabel(state.target)
        ax.legend()
        parts.append(f"<h2>What-if: {esc(mode)}({esc(node)})</h2>"
                     f"<img alt='what-if curve' src='data:image/png;base64,{_png(fig)}'>")
    parts.append(f"<h2>Network</h2><img alt='network' src='data:image/png;base64,{net}'>")
    m = state.model
    parts.append("<h2>Model card</h2><ul>"
                 f"<li>nodes: {len(m.graph_.nodes)}, edges: {len(m.graph_.edges)}</li>"
                 f"<li>inference: {esc(m.method)} ({esc(m.guide)} guide), seed {m.seed}</li>"
                 f"<li>posterior draws per answer: {state.n_samples or m.n_samples}</li>"
                 f"<li>target: {esc(state.target)}</li>"
                 "<li>intended use: research decision support; not a validated medical device</li>"
                 "</ul>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>bayesrad report</title>"
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


def build_app(model: HybridBN, cohort=None, target: str | None = None,
              n_samples: int | None = None):
    """The Dash app over ``model`` (and the patients of ``cohort``, a Cohort or blocks dict)."""
    import dash
    import dash_cytoscape as cyto
    from dash import ALL, Input, Output, State, dcc, html as h

    state = AppState(model, cohort, target, n_samples)
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
                h.H3("What-if"),
                dcc.Dropdown(id="whatif-node", options=continuous, value=default,
                             clearable=False),
                dcc.RadioItems(id="mode", options=[{"label": "do (intervene)", "value": "do"},
                                                   {"label": "observe", "value": "observe"}],
                               value="do", inline=True),
                dcc.Slider(id="slider", min=0, max=1, step=None, value=None,
                           marks=None, tooltip={"always_visible": False}),
                h.Div(["value: ", h.Span(id="whatif-value")]),
                h.Div(id="warning", style={"color": "#b35900"}),
                h.Div(id="message", style={"color": "#c00"}),
                h.H3(h.Span(id="answer")),
                h.Button("Explain", id="explain"),
                h.Div(id="explanation"),
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

    @app.callback(Output("answer", "children"), Output("message", "children"),
                  Output("warning", "children"), Output("whatif-value", "children"),
                  Input({"type": "ev", "node": ALL}, "value"), Input("slider", "value"),
                  Input("mode", "value"), State("whatif-node", "value"),
                  State("patient", "value"))
    def answer(values, value, mode, node, patient):
        return answer_callback(state, values, value, mode, node, patient)

    # explanations are asked for with a button, not recomputed on every slider move (a Shapley
    # computation costs many predictions)
    @app.callback(Output("explanation", "children"), Input("explain", "n_clicks"),
                  State({"type": "ev", "node": ALL}, "value"), prevent_initial_call=True)
    def explain(_, values):
        evidence, _errors = state.validate(dict(zip(state.inputs, values)))
        expl = explanation(state, evidence)
        return "explanations not available" if expl is None else h.Pre(expl.to_string())

    @app.callback(Output("download", "data"), Input("export", "n_clicks"),
                  State({"type": "ev", "node": ALL}, "value"), State("slider", "value"),
                  State("mode", "value"), State("whatif-node", "value"),
                  State("patient", "value"), prevent_initial_call=True)
    def export(_, values, value, mode, node, patient):
        evidence, _errors = state.validate(dict(zip(state.inputs, values)))
        text = report_html(state, evidence, patient or None, node, value, mode)
        return {"content": text, "filename": f"bayesrad_report_{patient or 'blank'}.html"}

    return app


def answer_callback(state: AppState, values, value, mode, node, patient):
    """The callback that answers a slider move or an edited input (called directly by the
    benchmark): answer text, validation message, extrapolation warning, slider readout."""
    evidence, errors = state.validate(dict(zip(state.inputs, values)))
    warning = state.extrapolation(node, value) if node and value is not None else None
    row = whatif_answer(state, evidence, node, value, mode, patient or None)
    return (format_answer(state, row), "; ".join(errors), warning or "",
            "" if value is None else f"{value:g}")
