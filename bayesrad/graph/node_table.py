"""The node table: one row per patient, one column per node (k columns per block summary).

Structure learners need a flat table of modest width. ``build_node_table`` turns a cohort's
blocks into one:

- clinical, dosimetry and other small blocks: one node per column, typed from the cohort
  schema: binary / categorical columns become pandas categoricals, ordinal ones *ordered*
  categoricals (proportional-odds children under the ``bic-glm`` score), integer counts
  ``int64`` (Poisson children), other numbers ``float64``;
- high-dimensional blocks (radiomics, deep features, genes / expression, or any numeric block
  wider than ``max_columns``): one node named after the block holding the block's first
  ``latent_dim`` principal-component (or factor-analysis) scores of the standardised columns,
  in the columns ``block[0]``, ..., ``block[k-1]`` (``NodeTable.vector_nodes``). In the graph
  the node is a ``latent`` node of that block with ``latent_dim = k``, which ``HybridBN`` fits
  as a k-dimensional factor model, and the search treats it as one k-dimensional node. One
  component is not enough: the simulator's radiomics latent has a size and an
  aggressiveness dimension with different children, and one score mixing them leaves their
  children dependent given it (spurious edges). Count blocks (expression) are normalised by
  median-of-ratios size factors before ``log1p``: otherwise the first component is the
  sequencing depth;
- survival outcomes (a time column with its event column): one continuous node, the
  **martingale residual of the null (no-covariate) model**, ``M_i = delta_i - H(t_i)`` with
  ``H`` the Nelson-Aalen cumulative hazard. It uses the censoring correctly, is larger for
  patients who fail earlier than expected, and is the quantity whose conditional mean a Cox
  model's linear predictor describes (Therneau, Grambsch & Fleming 1990), so an edge into it
  means "predicts hazard". ``survival_proxy="deviance"`` gives the symmetrised deviance
  residual instead. In the graph the node is the ``survival`` node (time + event).

Missing values (``missing="impute"``, the default): a patient missing a numeric node (a whole
imaging or expression block, typically) stays in the table with NaN, and the search draws the
value from its conditional distribution given the patient's other nodes (``impute_numeric``),
anew in every bootstrap resample, so edge confidence carries the imputation's uncertainty
(bootstrap-then-impute; Schomaker & Heumann 2018). Complete cases (``missing="drop"``) throw
away every patient missing any modality: on the simulated radiotherapy cohort (20% of
patients without expression, 5% without imaging, MCAR) that is ~23% of the patients, and the
mean SHD (500 patients, 3 seeds, block tiers) is 15.7 on complete cases, 12.0 with
imputation and 10.0 for the same cohort without missingness (``missing_rows`` in
benchmarks/results/structure.json).
Patients missing a discrete node are dropped. ``HybridBN`` itself fits on every patient,
marginalising what is missing.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayesrad.errors import CohortError, GraphError, plain
from bayesrad.graph.graph import Graph, NodeSpec

SUMMARY_BLOCKS = ("radiomics", "deep", "genes", "expression")
SURVIVAL_PROXIES = ("martingale", "deviance")


@dataclass
class NodeTable:
    """A patients x nodes table and the node specs that map it back to the cohort.

    Attributes
    ----------
    data : DataFrame indexed by patient_id, one column per node (float64 for continuous and
        count nodes, pandas Categorical for binary / categorical / ordinal nodes).
    specs : ``{node: NodeSpec}``; block-summary nodes are ``latent`` specs of their block,
        survival proxies are ``survival`` specs (time column + ``event``).
    survival_proxy : how survival outcomes were summarised (``"martingale"``/``"deviance"``).
    loadings : ``{block: DataFrame}`` of the summary components' loadings (block columns x k).
    dropped_patients : patients left out for missing values (all of them with
        ``missing="drop"``; those missing a discrete value with ``missing="impute"``).
    imputed_patients : patients whose missing numeric values stay NaN in ``data``, for the
        structure search to draw (``impute_numeric``, anew in every bootstrap resample).
    vector_nodes : ``{node: [columns]}`` for summary nodes with k > 1 components, held in
        the columns ``node[0]`` ... ``node[k-1]`` of ``data``; every other node is the one
        column of its name.
    """

    data: pd.DataFrame
    specs: dict[str, NodeSpec]
    survival_proxy: str = "martingale"
    loadings: dict[str, pd.DataFrame] = field(default_factory=dict)
    dropped_patients: list[str] = field(default_factory=list)
    vector_nodes: dict[str, list[str]] = field(default_factory=dict)
    imputed_patients: list[str] = field(default_factory=list)

    @property
    def nodes(self) -> list[str]:
        """Node names in table order (a vector node where its first column is)."""
        first = {cols[0]: node for node, cols in self.vector_nodes.items()}
        members = {c for cols in self.vector_nodes.values() for c in cols}
        return [first.get(c, c) for c in self.data.columns if c not in members or c in first]

    @property
    def blocks(self) -> dict[str, str | None]:
        """``{node: cohort block}``."""
        return {name: spec.block for name, spec in self.specs.items()}

    @property
    def kinds(self) -> dict[str, str]:
        """``{node: kind}``."""
        return {name: spec.kind for name, spec in self.specs.items()}

    def empty_graph(self) -> Graph:
        """A ``Graph`` with every node of the table and no edges."""
        return Graph([self.specs[name] for name in self.nodes])


def table_from_frame(frame: pd.DataFrame, blocks: Mapping[str, str] | None = None,
                     max_levels: int = 10) -> NodeTable:
    """Wrap a plain DataFrame as a ``NodeTable``, typing columns from their dtypes.

    Categorical / bool / text columns become ``binary`` (2 levels) or ``categorical`` nodes;
    numeric columns with at most 2 distinct values become ``binary``; other numeric columns are
    ``continuous``. ``blocks`` optionally gives each column's block.
    """
    if frame.columns.duplicated().any():
        dup = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise GraphError(f"column name(s) {dup} appear more than once in the table; rename or drop the copies")
    data = pd.DataFrame(index=frame.index)
    specs = {}
    for col in frame.columns:
        name = str(col)
        series = frame[col]
        block = (blocks or {}).get(name)
        numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        levels_seen = pd.unique(series.dropna())
        if numeric and len(levels_seen) > 2:
            data[name] = series.astype(float)
            specs[name] = NodeSpec(name, "continuous", block=block)
            continue
        if len(levels_seen) > max_levels:
            raise GraphError(
                f"column {name!r} is not numeric and has {len(levels_seen)} levels (more than "
                f"max_levels={max_levels}); encode it numerically or drop it"
            )
        levels = (list(series.cat.categories) if isinstance(series.dtype, pd.CategoricalDtype)
                  else sorted(levels_seen.tolist(), key=str))
        data[name] = pd.Categorical(series, categories=levels)
        specs[name] = NodeSpec(name, "binary" if len(levels) == 2 else "categorical",
                               block=block, levels=levels)
    warn_collinear(data, specs)
    return NodeTable(data=data, specs=specs)


def collinear_pairs(data: pd.DataFrame, min_rows: int = 3, tol: float = 1e-9
                    ) -> list[tuple[str, str, str]]:
    """Pairs of columns of ``data`` (patients x columns) that are the same information twice.

    Numeric columns: ``|r| >= 1 - tol`` over the patients with both values (at least
    ``min_rows`` of them, neither column constant there): one is an exact linear function of
    the other, an exact copy included. Categorical columns: each level of one is exactly one
    level of the other (a copy up to renamed levels). Returns ``[(a, b, how)]``, ``how`` a short
    description (``"b = 2 * a + 3"``, ``"each level of a is one level of b"``), in column order.
    """
    out: list[tuple[str, str, str]] = []
    numeric = [c for c in data.columns if pd.api.types.is_numeric_dtype(data[c])
               and not pd.api.types.is_bool_dtype(data[c])]
    if len(numeric) > 1:
        values = data[numeric].astype(float)
        corr = values.corr(min_periods=min_rows).to_numpy()
        # why by hand: pandas gives no "exactly collinear" test; |r| = 1 is that test
        rows, cols = np.nonzero(np.triu(np.abs(np.nan_to_num(corr)) >= 1.0 - tol, k=1))
        for i, j in zip(rows.tolist(), cols.tolist()):
            both = values[[numeric[i], numeric[j]]].dropna()
            x, y = both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy()
            slope = float(np.cov(x, y, bias=True)[0, 1] / np.var(x))
            intercept = float(y.mean() - slope * x.mean())
            how = (f"{numeric[j]} = {numeric[i]}" if abs(slope - 1) < 1e-9 and abs(intercept) < 1e-9 * (1 + abs(y).max())
                   else f"{numeric[j]} = {slope:.6g} * {numeric[i]} + {intercept:.6g}")
            out.append((str(numeric[i]), str(numeric[j]), how))
    discrete = [c for c in data.columns if c not in numeric]
    for k, a in enumerate(discrete):
        for b in discrete[k + 1:]:
            both = data[[a, b]].dropna()
            if len(both) < min_rows:
                continue
            na, nb = both[a].nunique(), both[b].nunique()
            if na > 1 and na == nb and len(both.drop_duplicates()) == na:
                out.append((str(a), str(b), f"each level of {a} is one level of {b}"))
    return out


def warn_collinear(data: pd.DataFrame, specs: Mapping[str, NodeSpec] | None = None) -> None:
    """Warn (UserWarning) about every pair of perfectly collinear node columns, naming both
    columns and their blocks: a structure search links such a pair and splits their effects
    arbitrarily (issue 17: an exact copy of a column got edges and no word was said)."""
    specs = specs or {}
    for a, b, how in collinear_pairs(data):
        where = [f"{c!r}" + (f" (block {specs[c].block!r})" if c in specs and specs[c].block else "")
                 for c in (a, b)]
        warnings.warn(f"columns {where[0]} and {where[1]} are perfectly collinear ({how} for every patient "
                      "with both): the same information twice, which a structure search links and a model "
                      f"cannot tell apart; drop one of them (e.g. exclude=[{b!r}])", UserWarning, stacklevel=3)


def survival_residual(time: np.ndarray, event: np.ndarray, kind: str = "martingale") -> np.ndarray:
    """Null-model martingale (or deviance) residual of right-censored survival data.

    Parameters
    ----------
    time : (n,) follow-up times (any unit, > 0).
    event : (n,) 1 = event observed, 0 = censored.
    kind : ``"martingale"`` (``delta - H(t)``, Nelson-Aalen ``H``) or ``"deviance"``.

    Returns
    -------
    (n,) residuals; larger = failed earlier than the cohort's average hazard predicts.
    """
    from lifelines import NelsonAalenFitter

    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=float)
    if kind not in SURVIVAL_PROXIES:
        raise GraphError(f"survival_proxy must be one of {SURVIVAL_PROXIES} (got {kind!r})")
    if np.any(~np.isin(event, (0.0, 1.0))):
        raise GraphError("survival event column must hold only 0 (censored) and 1 (event)")
    if np.any(time <= 0):
        raise GraphError("survival times must be > 0; fix non-positive follow-up times")
    naf = NelsonAalenFitter().fit(time, event_observed=event)
    cumulative_hazard = naf.cumulative_hazard_at_times(time).to_numpy()
    martingale = event - cumulative_hazard
    if kind == "martingale":
        return martingale
    # Deviance residual: sign(M) sqrt(-2 [M + delta log(delta - M)]), with 0 log 0 = 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = np.where(event > 0, event * np.log(np.clip(event - martingale, 1e-300, None)),
                            0.0)
    return np.sign(martingale) * np.sqrt(np.clip(-2.0 * (martingale + log_term), 0.0, None))


def _block_summary(frame: pd.DataFrame, method: str, seed: int, n_components: int
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Component scores (patients x k) and loadings (block columns x k) of a numeric block.

    Columns are standardised; a missing single value is set to the column mean (0 after
    standardising) for the projection only, so a patient missing one feature keeps a score.
    Each component's sign is fixed so that its largest absolute loading is positive (a
    deterministic orientation, comparable between bootstrap runs and cohorts).
    """
    from sklearn.decomposition import PCA, FactorAnalysis

    values = frame.to_numpy(dtype=float)
    mean = np.nanmean(values, axis=0)
    sd = np.nanstd(values, axis=0)
    keep = np.isfinite(sd) & (sd > 0)
    z = (values[:, keep] - mean[keep]) / sd[keep]
    z = np.where(np.isnan(z), 0.0, z)
    k = min(n_components, z.shape[1], z.shape[0] - 1)
    if method == "pca":
        model = PCA(n_components=k, random_state=seed).fit(z)
    elif method == "factor":
        model = FactorAnalysis(n_components=k, random_state=seed).fit(z)
    else:
        raise GraphError(f"block summary must be 'pca' or 'factor' (got {method!r})")
    components = model.components_
    rows = np.arange(len(components))
    signs = np.sign(components[rows, np.argmax(np.abs(components), axis=1)])
    signs[signs == 0] = 1.0
    scores = model.transform(z) * signs
    loadings = pd.DataFrame((components * signs[:, None]).T, index=frame.columns[keep])
    return pd.DataFrame(scores, index=frame.index), loadings


def _size_normalised_log(counts: pd.DataFrame) -> pd.DataFrame:
    """``log1p`` of counts divided by each patient's median-of-ratios size factor (DESeq2;
    Anders & Huber 2010), over positive counts only ("poscounts").

    Without it the first components of an expression block are library size, not biology:
    every gene of a patient scales with the sequencing depth.
    """
    values = counts.to_numpy(dtype=float).clip(min=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(values > 0, np.log(values), np.nan)
        reference = np.nanmean(logs, axis=0)
        ratios = logs - reference[None, :]
    usable = np.isfinite(ratios)
    if not usable.any(axis=1).all():
        patient = counts.index[~usable.any(axis=1)][0]
        raise GraphError(f"patient {plain(patient)!r} has no positive count in block; drop the "
                         "patient or the block")
    size = np.exp(np.nanmedian(np.where(usable, ratios, np.nan), axis=1))
    return pd.DataFrame(np.log1p(values / size[:, None]), index=counts.index,
                        columns=counts.columns)


def build_node_table(cohort_or_blocks, summary_blocks: Iterable[str] = SUMMARY_BLOCKS,
                     max_columns: int = 10, summary: str = "pca", latent_dim: int = 2,
                     survival_proxy: str = "martingale", exclude: Iterable[str] = (),
                     missing: str = "impute", seed: int = 0) -> NodeTable:
    """Build the mixed node table of a cohort (see the module docstring for the choices).

    Parameters
    ----------
    cohort_or_blocks : a ``Cohort`` or ``{block: DataFrame indexed by patient_id}``.
    summary_blocks : blocks summarised by component scores (plus any numeric block with
        more than ``max_columns`` columns).
    summary : ``"pca"`` (principal components) or ``"factor"`` (factor-analysis scores).
    latent_dim : components per summarised block (at most its columns), also the
        ``latent_dim`` of its latent node in ``HybridBN``; 1 gives one plain column per block
        (what ``PCLearner`` needs).
    survival_proxy : ``"martingale"`` (default) or ``"deviance"``.
    exclude : column names to leave out.
    missing : ``"impute"`` (default) keeps patients with missing numeric nodes (NaN in
        ``data``; ``learn_structure`` imputes them by stochastic regression, see
        ``impute_numeric``) and drops those missing a discrete node; ``"drop"`` keeps complete
        cases only; ``"error"`` raises naming the first patient and column with a missing
        value.
    seed : seed of the block summaries.

    Returns
    -------
    NodeTable with nodes in a fixed order (blocks in cohort order, columns in block order).
    """
    from bayesrad.data.schema import infer_schema

    if survival_proxy not in SURVIVAL_PROXIES:
        raise GraphError(f"survival_proxy must be one of {SURVIVAL_PROXIES} "
                         f"(got {survival_proxy!r})")
    if missing not in ("drop", "error", "impute"):
        raise GraphError(f"missing must be 'drop', 'impute' or 'error' (got {missing!r})")
    if isinstance(cohort_or_blocks, Mapping):
        blocks, schema = dict(cohort_or_blocks), {}
        patients = pd.Index([])
        for frame in blocks.values():
            patients = patients.append(frame.index.difference(patients))
    else:
        blocks = dict(cohort_or_blocks.blocks)
        schema = dict(getattr(cohort_or_blocks, "schema", {}) or {})
        patients = cohort_or_blocks.patient_ids
    exclude = set(exclude)
    summary_blocks = set(summary_blocks)
    columns: dict[str, pd.Series] = {}
    specs: dict[str, NodeSpec] = {}
    loadings: dict[str, pd.DataFrame] = {}
    vector_nodes: dict[str, list[str]] = {}

    def add(name: str, values: pd.Series | pd.DataFrame, spec: NodeSpec) -> None:
        if name in specs or name in columns:
            first = specs[name].block if name in specs else "a block summary"
            raise GraphError(f"node {name!r} appears twice (block {first!r} and block "
                             f"{spec.block!r}); rename one column or exclude it")
        if isinstance(values, pd.DataFrame):
            if values.shape[1] == 1:
                values = values.iloc[:, 0]
            else:
                vector_nodes[name] = [f"{name}[{j}]" for j in range(values.shape[1])]
                for j, col in enumerate(vector_nodes[name]):
                    columns[col] = values.iloc[:, j].reindex(patients)
        if isinstance(values, pd.Series):
            columns[name] = values.reindex(patients)
        specs[name] = spec

    for block, frame in blocks.items():
        types = schema.get(block) or infer_schema(frame)
        if frame.index.has_duplicates:
            dup = frame.index[frame.index.duplicated()][0]
            raise CohortError(f"block {block!r}: patient {dup!r} appears twice; "
                              "keep one row per patient")
        numeric = [c for c in frame.columns if c not in exclude
                   and types[c].kind in ("continuous", "count")]
        if block in summary_blocks or (len(numeric) > max_columns
                                       and len(numeric) >= 0.8 * frame.shape[1]):
            if not numeric:
                continue
            rows = frame[numeric].dropna(how="all")
            if len(rows) < 3:
                raise GraphError(f"block {block!r} has fewer than 3 patients with values; "
                                 "drop the block or add patients")
            if all(types[c].kind == "count" for c in numeric):
                # Counts (read counts, expression) are right-skewed and scale with library
                # size: summarise log1p of size-normalised counts.
                rows = _size_normalised_log(rows)
            if block not in summary_blocks:
                # Silent before: 11 protein columns became one latent node, and a table of
                # that block alone then had nothing to learn.
                warnings.warn(f"block {block!r}: its {len(numeric)} numeric columns (more than "
                              f"max_columns={max_columns}) are summarised as one latent node "
                              f"{block!r} of {min(latent_dim, len(numeric))} component(s); raise "
                              f"max_columns to keep them as separate nodes", UserWarning, stacklevel=2)
            scores, loading = _block_summary(rows, summary, seed, latent_dim)
            loadings[block] = loading
            add(block, scores, NodeSpec(block, "latent", block=block, columns=list(numeric),
                                        latent_dim=scores.shape[1]))
            continue
        for col in frame.columns:
            ctype = types[col]
            if col in exclude or ctype.kind in ("label", "event"):
                continue
            name = str(col)
            if ctype.kind == "survival":
                if not ctype.event or ctype.event not in frame.columns:
                    raise GraphError(f"survival column {name!r} in block {block!r} has no event "
                                     "column; declare event= in the schema")
                pair = frame[[col, ctype.event]].dropna()
                residual = pd.Series(survival_residual(pair[col], pair[ctype.event],
                                                       survival_proxy), index=pair.index)
                add(name, residual, NodeSpec(name, "survival", block=block, unit=ctype.unit,
                                             event=ctype.event))
            elif ctype.kind in ("continuous", "count"):
                add(name, frame[col].astype(float), NodeSpec(name, ctype.kind, block=block,
                                                             unit=ctype.unit))
            else:
                series = frame[col]
                if ctype.levels is not None:
                    levels = list(ctype.levels)
                elif isinstance(series.dtype, pd.CategoricalDtype):
                    levels = list(series.cat.categories)
                else:
                    levels = sorted(pd.unique(series.dropna()).tolist(), key=str)
                kind = "binary" if ctype.kind == "binary" and len(levels) == 2 else (
                    "ordinal" if ctype.kind == "ordinal" else "categorical")
                if len(levels) < 2:
                    continue  # a constant column carries no information about structure
                add(name, pd.Series(pd.Categorical(series, categories=levels,
                                                   ordered=kind == "ordinal"), index=frame.index),
                    NodeSpec(name, kind, block=block, levels=None if kind == "binary" else levels,
                             unit=ctype.unit))
    if not specs:
        raise GraphError("the cohort has no modellable columns for a node table")
    data = pd.DataFrame(columns, index=patients)
    imputed: list[str] = []
    if missing == "impute":
        numeric = [c for c in data.columns if c not in specs or spec_is_numeric(specs[c])]
        holes = data[numeric].isna().any(axis=1)
        imputed = [str(p) for p in data.index[holes]]
        incomplete = data.drop(columns=numeric).isna().any(axis=1)
    else:
        incomplete = data.isna().any(axis=1)
    dropped: list[str] = []
    if incomplete.any():
        if missing == "error":
            patient = data.index[incomplete][0]
            column = data.columns[data.loc[patient].isna()][0]
            raise GraphError(f"patient {plain(patient)!r} has no value for node {column!r}; use "
                             "missing='impute' or 'drop' (complete cases)")
        dropped = [str(p) for p in data.index[incomplete]]
        lacking = sorted(data.columns[data.loc[incomplete].isna().any(axis=0)].intersection(
            [c for c in data.columns if missing != "impute" or c not in numeric]))
        warnings.warn(f"node table: {len(dropped)} of {len(data)} patients left out for missing "
                      f"values of {lacking} (first: {dropped[:5]}); they are listed in "
                      "NodeTable.dropped_patients", UserWarning, stacklevel=2)
        data = data.loc[~incomplete]
    imputed = [p for p in imputed if p not in set(dropped)]
    warn_collinear(data[[c for c in data.columns if c in specs and c not in vector_nodes]], specs)
    if len(data) < 10:
        raise GraphError(f"only {len(data)} patients are left in the node table; structure "
                         "learning needs more (exclude sparse columns)")
    for name, spec in specs.items():
        if name in vector_nodes:
            continue
        if isinstance(data[name].dtype, pd.CategoricalDtype):
            data[name] = data[name].cat.remove_unused_categories()
        elif (spec.kind == "count" and not data[name].isna().any()
              and np.all(np.mod(data[name], 1) == 0)):
            data[name] = data[name].astype(np.int64)
    return NodeTable(data=data, specs=specs, survival_proxy=survival_proxy, loadings=loadings,
                     dropped_patients=dropped, vector_nodes=vector_nodes,
                     imputed_patients=imputed)


def spec_is_numeric(spec: NodeSpec) -> bool:
    """Whether a node's table column(s) are numbers (continuous, count, survival, latent)."""
    return spec.kind in ("continuous", "count", "survival", "latent")


def impute_numeric(data: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """``data`` with its missing numeric values drawn from their conditional distribution
    given every other column: stochastic regression imputation (sklearn's
    ``IterativeImputer``, Bayesian ridge, ``sample_posterior=True``; discrete columns enter
    as one-hot predictors and must be complete). Integer columns get rounded, non-negative
    draws. A draw, not a mean: imputed rows keep the conditional spread, so they do not
    create dependence that the observed rows lack (mean imputation would).
    """
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    numeric = [c for c in data.columns if not isinstance(data[c].dtype, pd.CategoricalDtype)]
    holes = data[numeric].isna().any(axis=1)
    if not holes.any():
        return data
    others = [c for c in data.columns if c not in numeric]
    # get_dummies of zero columns raises ("No objects to concatenate"): an all-numeric table
    # has no discrete predictors.
    discrete = (pd.get_dummies(data[others], drop_first=True, dummy_na=False, dtype=float).to_numpy()
                if others else np.empty((len(data), 0)))
    values = np.column_stack([data[numeric].to_numpy(dtype=float), discrete])
    filled = IterativeImputer(sample_posterior=True, max_iter=20, random_state=seed,
                              skip_complete=True).fit_transform(values)
    out = data.copy()
    for j, col in enumerate(numeric):
        if not data[col].isna().any():
            continue
        draws = filled[:, j]
        observed = data[col].dropna()
        if np.all(np.mod(observed, 1) == 0) and observed.min() >= 0:
            draws = np.clip(np.round(draws), 0, None)
        out[col] = np.where(data[col].isna(), draws, data[col])
    return out


__all__ = ["NodeTable", "build_node_table", "table_from_frame", "survival_residual",
           "impute_numeric", "spec_is_numeric",
           "SUMMARY_BLOCKS", "SURVIVAL_PROXIES"]
