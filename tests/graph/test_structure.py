"""Structure learning: knowledge never violated, recovery of known graphs, determinism,
bootstrap confidence and Scutari's threshold, the node table, the picture."""

from __future__ import annotations

import os
import subprocess
import sys

import networkx as nx
import numpy as np
import pandas as pd
import pytest

import bayesrad
from bayesrad.errors import GraphError, KnowledgeError
from bayesrad.graph.bootstrap import bootstrap_structure, scutari_threshold
from bayesrad.graph.graph import Graph
from bayesrad.graph.knowledge import ExpertKnowledge
from bayesrad.graph.node_table import (build_node_table, impute_numeric, survival_residual,
                                       table_from_frame)
from bayesrad.graph.structure import (HillClimbLearner, PCLearner, compare_graphs, cpdag,
                                      edge_table, enforce_knowledge, learn_structure)


def linear_gaussian(edges, n, seed, weight=0.9, discrete=()):
    """Data from a linear-Gaussian DAG; nodes in ``discrete`` are thresholded at 0 into
    categoricals after their children are drawn from the continuous value."""
    g = nx.DiGraph(edges)
    rng = np.random.default_rng(seed)
    values = {}
    for node in nx.topological_sort(g):
        values[node] = weight * sum(values[p] for p in g.predecessors(node)) \
            + rng.normal(size=n)
    frame = pd.DataFrame(values)
    for node in discrete:
        frame[node] = pd.Categorical(np.where(frame[node] > 0, "high", "low"))
    return frame


def shd(edges, true_edges):
    return compare_graphs(edges, true_edges)["shd"]


def random_knowledge(nodes, rng):
    """A random, self-consistent knowledge set: random tiers over a random subset of nodes,
    forbidden edges, required edges drawn among the allowed forward ones."""
    nodes = list(nodes)
    order = list(rng.permutation(nodes))
    tiered = order[: rng.integers(0, len(nodes) + 1)]
    cuts = sorted(rng.choice(np.arange(1, max(len(tiered), 2)), size=min(2, max(len(tiered) - 1, 0)),
                             replace=False)) if len(tiered) > 1 else []
    tiers = {f"t{i}": list(part) for i, part in enumerate(np.split(np.array(tiered), cuts))
             if len(part)}
    forbidden = [tuple(rng.choice(nodes, 2, replace=False)) for _ in range(rng.integers(0, 4))]
    base = ExpertKnowledge(tiers=tiers, forbidden=forbidden,
                           within_tier=bool(rng.integers(0, 2)))
    rank = {n: i for i, n in enumerate(order)}
    candidates = [(u, v) for u in nodes for v in nodes
                  if u != v and rank[u] < rank[v] and base.allows(u, v)]
    picks = rng.permutation(len(candidates))[: rng.integers(0, 3)]
    return base.merged(required=[candidates[i] for i in picks])


MIXED_EDGES = [("a", "b"), ("b", "c"), ("a", "d"), ("c", "e"), ("d", "e")]


@pytest.fixture(scope="module")
def mixed_data():
    return linear_gaussian(MIXED_EDGES, n=300, seed=1, discrete=("b",))


def test_knowledge_is_never_violated_over_random_knowledge_sets(mixed_data):
    rng = np.random.default_rng(0)
    continuous = linear_gaussian(MIXED_EDGES, n=300, seed=1)
    checked = 0
    for trial in range(16):
        knowledge = random_knowledge(mixed_data.columns, rng)
        # PC trials use the fast partial-correlation test; the knowledge logic is the same.
        if trial % 2:
            learner, data = PCLearner(knowledge=knowledge, ci_test="pearsonr"), continuous
        else:
            learner, data = HillClimbLearner(knowledge=knowledge), mixed_data
        dag = learner.fit(data).causal_graph_
        assert nx.is_directed_acyclic_graph(dag)
        assert knowledge.violations(dag.edges, nodes=mixed_data.columns) == [], (
            trial, knowledge.to_dict(), sorted(dag.edges))
        checked += len(knowledge.forbidden_edges(mixed_data.columns)) + len(knowledge.required)
    assert checked > 50                                # the loop did constrain something


def test_enforce_knowledge_flips_or_drops_and_adds_required():
    k = ExpertKnowledge(tiers={"first": ["a"], "second": ["b", "c"]}, forbidden=[("b", "c"),
                        ("c", "b")], required=[("a", "c")])
    dag = enforce_knowledge([("b", "a"), ("b", "c"), ("c", "a")], k, ["a", "b", "c"])
    assert sorted(dag.edges) == [("a", "b"), ("a", "c")]


def test_hill_climb_recovers_a_linear_gaussian_dag_with_tiers():
    edges = [("x1", "x3"), ("x2", "x3"), ("x3", "x4"), ("x4", "x5")]
    data = linear_gaussian(edges, n=1000, seed=3)
    tiers = ExpertKnowledge(tiers=[["x1", "x2"], ["x3"], ["x4"], ["x5"]])
    learned = HillClimbLearner(knowledge=tiers).fit(data).causal_graph_
    assert shd(learned.edges, edges) == 0
    plain = HillClimbLearner().fit(data).causal_graph_
    skeleton = {frozenset(e) for e in plain.edges}
    assert skeleton == {frozenset(e) for e in edges}   # the data give the skeleton alone
    assert HillClimbLearner().fit(data).score_ == "bic-g"


def test_mixed_data_uses_the_glm_score_and_bic_cg_stays_available(mixed_data):
    learner = HillClimbLearner().fit(mixed_data)
    assert learner.score_ == "bic-glm"
    found = {frozenset(e) for e in learner.causal_graph_.edges}
    assert len(found & {frozenset(e) for e in MIXED_EDGES}) >= 4
    assert list(learner.feature_names_in_) == sorted(mixed_data.columns)
    cg = HillClimbLearner(score="bic-cg").fit(mixed_data)
    assert cg.score_ == "bic-cg" and nx.is_directed_acyclic_graph(cg.causal_graph_)
    with pytest.raises(GraphError, match="unknown structure score"):
        HillClimbLearner(score="no-such-score").fit(mixed_data)


def test_pc_with_mixed_test_finds_the_skeleton(mixed_data):
    learner = PCLearner().fit(mixed_data)
    assert learner.ci_test_ == "pillai"
    found = {frozenset(e) for e in learner.causal_graph_.edges}
    assert found == {frozenset(e) for e in MIXED_EDGES}


def test_result_does_not_depend_on_column_order_or_hash_seed(mixed_data):
    edges = sorted(HillClimbLearner().fit(mixed_data).causal_graph_.edges)
    shuffled = mixed_data[list(reversed(mixed_data.columns))]
    assert sorted(HillClimbLearner().fit(shuffled).causal_graph_.edges) == edges
    # A score-equivalent tie (a-b alone) is broken the same way under other hash seeds.
    code = ("import numpy as np, pandas as pd;"
            "from bayesrad.graph.structure import HillClimbLearner;"
            "rng=np.random.default_rng(5); a=rng.normal(size=400);"
            "df=pd.DataFrame({'zeta': a, 'alpha': a + rng.normal(size=400),"
            "'mid': rng.normal(size=400)});"
            "print(sorted(HillClimbLearner().fit(df).causal_graph_.edges))")
    env = dict(os.environ, PYTHONHASHSEED="4321")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120, check=True)
    rng = np.random.default_rng(5)
    a = rng.normal(size=400)
    here = pd.DataFrame({"zeta": a, "alpha": a + rng.normal(size=400),
                         "mid": rng.normal(size=400)})
    expected = str(sorted(HillClimbLearner().fit(here).causal_graph_.edges))
    assert result.stdout.strip().splitlines()[-1] == expected


def test_bad_input_names_the_column():
    frame = pd.DataFrame({"a": [1.0, np.nan, 2.0, 3.0, 4.0, 5.0], "b": np.arange(6.0)})
    with pytest.raises(GraphError, match="'a'"):
        HillClimbLearner().fit(frame)
    with pytest.raises(GraphError, match="constant"):
        HillClimbLearner().fit(pd.DataFrame({"a": np.ones(6), "b": np.arange(6.0)}))
    with pytest.raises(KnowledgeError, match="typo"):
        HillClimbLearner(knowledge=ExpertKnowledge(forbidden=[("typo", "b")])).fit(
            pd.DataFrame({"a": np.arange(6.0) ** 2, "b": np.arange(6.0)}))
    with pytest.raises(GraphError, match="unknown structure-learning method"):
        learn_structure(pd.DataFrame({"a": np.arange(6.0) ** 2, "b": np.arange(6.0)}),
                        method="magic")


def test_compare_graphs_matches_pgmpy_shd():
    from pgmpy.base import DAG
    from pgmpy.metrics import SHD

    nodes = list("abcdef")
    truth = [("a", "b"), ("b", "c"), ("c", "d"), ("a", "e")]
    learned = [("b", "a"), ("b", "c"), ("d", "f"), ("a", "e")]   # 1 reversed, 1 extra, 1 missing
    metrics = compare_graphs(learned, truth)

    def dag(edges):
        g = DAG()
        g.add_nodes_from(nodes)
        g.add_edges_from(edges)
        return g

    assert metrics["shd"] == 3 == SHD()(true_causal_graph=dag(truth), est_causal_graph=dag(learned))
    assert metrics["skeleton_precision"] == 0.75 and metrics["skeleton_recall"] == 0.75
    assert metrics["orientation_accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("strengths, expected", [
    ([0, 0, 0, 1, 1], 0.0),                         # a perfectly confident bootstrap
    ([0.1, 0.2, 0.9, 0.95, 1.0], 0.2),              # worked by hand: p0 = 0.4, 2nd value
    # Weak strengths only: the L1 optimum is flat on p in [0.9, 1], whose middle gives the
    # largest strength, so no edge is significant.
    ([0.0] * 8 + [0.3, 0.5], 0.5),
])
def test_scutari_threshold_reference_values(strengths, expected):
    assert scutari_threshold(np.array(strengths)) == pytest.approx(expected)


def test_bootstrap_confidence_separates_true_from_absent_edges(capsys):
    edges = [("a", "b"), ("b", "c"), ("c", "d")]
    data = linear_gaussian(edges, n=400, seed=4, weight=0.8)
    data["noise"] = np.random.default_rng(9).normal(size=len(data))
    knowledge = ExpertKnowledge(tiers=[["a"], ["b"], ["c"], ["d"]])
    learner = HillClimbLearner(knowledge=knowledge)
    serial = bootstrap_structure(data, learner, n_bootstrap=16, seed=2, n_jobs=1)
    parallel = bootstrap_structure(data, learner, n_bootstrap=16, seed=2, n_jobs=2, progress=True)
    np.testing.assert_array_equal(serial.counts, parallel.counts)
    # progress off a terminal (pytest's captured stderr): whole lines, the last one at 16/16
    report = capsys.readouterr().err
    assert "\r" not in report and report.splitlines()[-1].startswith("structure bootstrap: 16/16 resamples (100%)")
    strength = serial.strength().set_index(["from", "to"])
    for u, v in edges:
        assert strength.loc[(u, v), "strength"] == 1.0
        assert strength.loc[(u, v), "direction"] == 1.0   # tiers fix the direction
    assert strength.xs("noise", level="from")["strength"].max() <= 0.25
    averaged = serial.averaged_dag()
    assert sorted(averaged.edges) == sorted(edges)
    assert averaged.graph["threshold"] < 1.0


def test_bootstrap_on_dask_matches_processes():
    distributed = pytest.importorskip("distributed")
    data = linear_gaussian([("a", "b"), ("b", "c")], n=200, seed=6)
    learner = HillClimbLearner()
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                            dashboard_address=None) as client:
        on_dask = bootstrap_structure(data, learner, n_bootstrap=6, seed=1, client=client)
    local = bootstrap_structure(data, learner, n_bootstrap=6, seed=1)
    np.testing.assert_array_equal(on_dask.counts, local.counts)


def test_learn_structure_returns_a_graph_with_confidence_that_survives_yaml(tmp_path):
    data = linear_gaussian([("a", "b"), ("b", "c")], n=300, seed=7, discrete=("c",))
    graph = learn_structure(data, knowledge=ExpertKnowledge(tiers=[["a"], ["b"], ["c"]]),
                            bootstrap=8, seed=0)
    assert isinstance(graph, Graph)
    assert sorted(graph.edges) == [("a", "b"), ("b", "c")]
    assert graph.spec("c").kind == "binary" and graph.spec("a").kind == "continuous"
    confidence = graph.edge_confidence
    assert set(confidence) == {("a", "b"), ("b", "c")}
    assert all(c["probability"] == 1.0 and c["direction"] == 1.0 for c in confidence.values())
    table = edge_table(graph)
    assert list(table.columns) == ["from", "to", "probability", "direction"]
    assert table[["from", "to"]].apply(tuple, axis=1).tolist() == [("a", "b"), ("b", "c")]
    graph.to_yaml(tmp_path / "g.yaml")
    assert Graph.from_yaml(tmp_path / "g.yaml").edge_confidence == confidence


def test_martingale_residuals_sum_to_zero_and_rank_early_failures():
    rng = np.random.default_rng(0)
    time = rng.exponential(10.0, size=200) + 0.1
    event = (rng.random(200) < 0.7).astype(float)
    residual = survival_residual(time, event)
    # The null-model martingale residuals of the Nelson-Aalen estimator sum to zero.
    assert abs(residual.sum()) < 1e-8
    events = event == 1
    assert np.corrcoef(time[events], residual[events])[0, 1] < -0.8
    deviance = survival_residual(time, event, "deviance")
    assert np.all(np.sign(deviance) == np.sign(residual))
    with pytest.raises(GraphError, match="event"):
        survival_residual(time, np.full(200, 2.0))


def test_node_table_summarises_blocks_and_types_columns():
    rng = np.random.default_rng(1)
    n = 120
    ids = pd.Index([f"p{i:03d}" for i in range(n)], name="patient_id")
    factor = rng.normal(size=n)
    radiomics = pd.DataFrame({f"ct_gtv_f{j:02d}": 1.5 * factor * (1 if j % 2 else -1)
                              + rng.normal(size=n) for j in range(14)}, index=ids)
    clinical = pd.DataFrame({"age_years": rng.normal(60, 8, n),
                             "sex_male": rng.integers(0, 2, n).astype(float),
                             "histology": rng.choice(["adeno", "squamous", "large"], n)},
                            index=ids)
    clinical.iloc[3, 0] = np.nan
    outcome = pd.DataFrame({"os": rng.exponential(500, n) + 1,
                            "os_event": rng.integers(0, 2, n).astype(float)}, index=ids)
    table = build_node_table({"clinical": clinical, "radiomics": radiomics, "outcome": outcome})
    assert list(table.data.columns) == ["age_years", "sex_male", "histology", "radiomics[0]",
                                        "radiomics[1]", "os"]
    assert table.nodes == ["age_years", "sex_male", "histology", "radiomics", "os"]
    assert table.vector_nodes == {"radiomics": ["radiomics[0]", "radiomics[1]"]}
    # p003's missing age stays NaN for the search to impute; complete cases would drop it
    assert table.dropped_patients == [] and table.imputed_patients == ["p003"]
    assert np.isnan(table.data.loc["p003", "age_years"])
    with pytest.warns(UserWarning, match=r"1 of 120 patients left out .*'age_years'.*p003"):
        complete = build_node_table({"clinical": clinical, "radiomics": radiomics,
                                     "outcome": outcome}, missing="drop")
    assert complete.dropped_patients == ["p003"] and complete.imputed_patients == []
    assert table.kinds == {"age_years": "continuous", "sex_male": "binary",
                           "histology": "categorical", "radiomics": "latent", "os": "survival"}
    assert table.specs["os"].event == "os_event"
    assert table.specs["radiomics"].columns == list(radiomics.columns)
    assert table.specs["radiomics"].latent_dim == 2
    assert table.loadings["radiomics"].shape == (14, 2)
    score = table.data["radiomics[0]"]
    assert abs(np.corrcoef(score, factor)[0, 1]) > 0.95
    assert list(build_node_table({"radiomics": radiomics}, latent_dim=1).data.columns) == [
        "radiomics"]
    assert isinstance(table.data["histology"].dtype, pd.CategoricalDtype)
    # Survival nodes are sinks in a bayesrad Graph: learning must not give them children.
    graph = learn_structure(table)
    assert graph.children("os") == []
    # A Cohort goes straight in, with tiers from its blocks.
    cohort = bayesrad.Cohort({"clinical": clinical, "radiomics": radiomics, "outcome": outcome})
    from_cohort = learn_structure(cohort, knowledge="default")
    default = ExpertKnowledge.from_blocks(table.blocks)
    assert from_cohort.edges == learn_structure(table, knowledge=default).edges
    assert default.violations(from_cohort.edges) == []
    with pytest.raises(GraphError, match="p003"):
        build_node_table({"clinical": clinical}, missing="error")


def test_table_from_frame_types_by_dtype():
    frame = pd.DataFrame({"x": np.linspace(0, 1, 10), "flag": [True, False] * 5,
                          "grade": list("abcab") * 2})
    table = table_from_frame(frame)
    assert table.kinds == {"x": "continuous", "flag": "binary", "grade": "categorical"}


def test_simulated_radiotherapy_cohort_under_tiers():
    sim = bayesrad.simulate("radiotherapy", n_patients=400, seed=0)
    table = build_node_table(sim.cohort)
    truth = sim.truth.graph
    assert set(table.nodes) == set(truth.nodes)
    knowledge = ExpertKnowledge.from_blocks(
        table.blocks, node_tiers={n: "demographics" for n in ("age_years", "sex_male", "centre")})
    # The default block tiers describe the simulator's causal order: the truth respects them.
    assert knowledge.violations(truth.edges) == []
    learned = learn_structure(table, knowledge=knowledge)
    assert knowledge.violations(learned.edges, nodes=table.nodes) == []
    assert learned.children("overall_survival") == []
    true_edges = set(truth.edges)
    found = [(u, v) for u, v in learned.edges if (u, v) in true_edges or (v, u) in true_edges]
    assert len(found) >= 8
    # Every true adjacency found across two tiers is oriented as in the truth.
    across = [(u, v) for u, v in found if knowledge.tier_of(u) != knowledge.tier_of(v)]
    assert across and all(e in true_edges for e in across)


def test_plot_graph_widths_follow_confidence():
    import matplotlib

    matplotlib.use("Agg")
    from bayesrad.graph.graph import NodeSpec
    from bayesrad.viz.graph_plot import plot_graph

    graph = Graph([NodeSpec("dose", "continuous", block="dosimetry"),
                   NodeSpec("stage", "ordinal", block="clinical"),
                   NodeSpec("control", "binary", block="outcome")])
    graph.add_edge("stage", "dose", confidence={"probability": 0.3, "direction": 0.8})
    graph.add_edge("dose", "control", confidence={"probability": 0.9, "direction": 1.0})
    fig = plot_graph(graph, knowledge=ExpertKnowledge(tiers=[["stage"], ["dose"], ["control"]]))
    assert fig.edge_widths[("dose", "control")] > fig.edge_widths[("stage", "dose")]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["clinical", "dosimetry", "outcome"]


def test_cpdag_metrics_ignore_directions_a_score_cannot_see():
    chain = [("a", "b"), ("b", "c")]
    reversed_chain = [("c", "b"), ("b", "a")]
    metrics = compare_graphs(reversed_chain, chain)
    assert metrics["shd"] == 2 and metrics["cpdag_shd"] == 0       # same equivalence class
    assert metrics["orientation_accuracy"] == 0.0
    assert metrics["cpdag_orientation_accuracy"] == 1.0
    collider = [("a", "b"), ("c", "b")]
    metrics = compare_graphs(chain, collider)
    assert metrics["shd"] == 1 and metrics["cpdag_shd"] == 2       # the v-structure is lost
    assert cpdag(collider) == {frozenset("ab"): ("a", "b"), frozenset("bc"): ("c", "b")}


def test_vector_nodes_are_one_node_in_search_bootstrap_and_graph():
    rng = np.random.default_rng(11)
    n = 300
    a = rng.normal(size=n)
    z = np.column_stack([a + rng.normal(size=n), rng.normal(size=n)])
    frame = pd.DataFrame({"a": a, "z[0]": z[:, 0], "z[1]": z[:, 1],
                          "b": z[:, 1] + 0.5 * rng.normal(size=n),
                          "noise": rng.normal(size=n)})
    vector = {"z": ["z[0]", "z[1]"]}
    learner = HillClimbLearner(vector_nodes=vector,
                               knowledge=ExpertKnowledge(tiers=[["a"], ["z"], ["b", "noise"]]))
    dag = learner.fit(frame).causal_graph_
    assert learner.nodes_ == ["a", "b", "noise", "z"] and learner.score_ == "bic-glm"
    assert {("a", "z"), ("z", "b")} <= set(dag.edges)
    assert not dag.has_edge("a", "b")                   # z screens a off from b
    boot = bootstrap_structure(frame, learner, n_bootstrap=4, seed=0)
    assert boot.nodes == ["a", "b", "noise", "z"]
    assert boot.edge_probability().loc["z", "b"] == 1.0
    with pytest.raises(GraphError, match="vector nodes"):
        HillClimbLearner(score="bic-cg", vector_nodes=vector).fit(frame)
    with pytest.raises(GraphError, match="not in the data"):
        HillClimbLearner(vector_nodes={"z": ["z[0]", "z[9]"]}).fit(frame)


def test_learned_graph_carries_its_knowledge_through_yaml(tmp_path):
    data = linear_gaussian([("a", "b"), ("b", "c")], n=200, seed=12)
    knowledge = ExpertKnowledge(tiers={"early": ["a"], "late": ["b", "c"]},
                                forbidden=[("c", "b")])
    graph = learn_structure(data, knowledge=knowledge)
    assert graph.knowledge == knowledge
    graph.to_yaml(tmp_path / "g.yaml")
    back = Graph.from_yaml(tmp_path / "g.yaml")
    assert back.knowledge == knowledge and back == graph


def test_pc_refuses_a_table_with_vector_nodes():
    rng = np.random.default_rng(13)
    ids = pd.Index([f"p{i}" for i in range(80)], name="patient_id")
    radiomics = pd.DataFrame(rng.normal(size=(80, 12)), index=ids,
                             columns=[f"f{j}" for j in range(12)])
    clinical = pd.DataFrame({"age": rng.normal(size=80)}, index=ids)
    table = build_node_table({"clinical": clinical, "radiomics": radiomics})
    with pytest.raises(GraphError, match="latent_dim=1"):
        learn_structure(table, method="pc")
    one = build_node_table({"clinical": clinical, "radiomics": radiomics}, latent_dim=1)
    assert learn_structure(one, method="pc", ci_test="pearsonr").nodes == ["age", "radiomics"]


def test_expression_summary_follows_biology_not_library_size():
    """Counts of two gene modules under patient library sizes varying 4-fold: after
    median-of-ratios normalisation the two components span the module factors."""
    rng = np.random.default_rng(14)
    n, genes = 200, 60
    factors = rng.normal(size=(n, 2))
    module = np.repeat([0, 1, -1], genes // 3)
    loading = np.where(module[None, :] >= 0, 0.7, 0.0)
    log_mean = np.log(200.0) + loading * factors[:, np.clip(module, 0, 1)]
    size = np.exp(rng.normal(0.0, 0.7, n))
    counts = rng.poisson(size[:, None] * np.exp(log_mean))
    ids = pd.Index([f"p{i}" for i in range(n)], name="patient_id")
    expression = pd.DataFrame(counts, index=ids, columns=[f"g{j}" for j in range(genes)])
    cohort = bayesrad.Cohort({"genes": expression},
                             schema={"genes": {g: "count" for g in expression.columns}})
    table = build_node_table(cohort)
    components = table.data[table.vector_nodes["genes"]].to_numpy()
    design = np.column_stack([np.ones(n), components])
    for j in range(2):
        fit = np.linalg.lstsq(design, factors[:, j], rcond=None)[0]
        r2 = 1 - np.var(factors[:, j] - design @ fit) / np.var(factors[:, j])
        assert r2 > 0.9
    assert abs(np.corrcoef(components[:, 0], np.log(size))[0, 1]) < 0.3


def test_missing_numeric_values_are_drawn_not_averaged_and_redrawn_per_resample():
    rng = np.random.default_rng(15)
    n = 600
    x = rng.normal(size=n)
    y = 0.8 * x + 0.6 * rng.normal(size=n)            # residual sd 0.6
    group = pd.Categorical(rng.choice(["a", "b"], n))
    frame = pd.DataFrame({"x": x, "y": y, "group": group})
    hidden = rng.random(n) < 0.3
    frame.loc[hidden, "y"] = np.nan
    filled = impute_numeric(frame, seed=0)
    assert not filled["y"].isna().any()
    assert (filled.loc[~hidden, "y"] == frame.loc[~hidden, "y"]).all()
    residual = filled.loc[hidden, "y"] - 0.8 * x[hidden]
    assert abs(residual.mean()) < 0.1
    assert 0.5 < residual.std() < 0.7                     # the conditional spread is kept
    with pytest.raises(GraphError, match="'y'"):
        HillClimbLearner().fit(frame)
    learned = HillClimbLearner(impute=True).fit(frame).causal_graph_
    assert {frozenset(e) for e in learned.edges} == {frozenset(("x", "y"))}
    boot = bootstrap_structure(frame, HillClimbLearner(impute=True), n_bootstrap=4, seed=1)
    assert boot.strength().set_index(["from", "to"]).loc[("x", "y"), "strength"] == 1.0


def test_bootstrap_learner_wraps_any_learner_with_edge_probabilities():
    """The wrapper estimator gives the same counts as bootstrap_structure, as edge_prob_, and
    its averaged DAG; learn_structure(bootstrap=B) is the same call."""
    from bayesrad.graph.bootstrap import BootstrapLearner

    edges = [("a", "b"), ("b", "c")]
    data = linear_gaussian(edges, n=200, seed=5, weight=0.8)
    knowledge = ExpertKnowledge(tiers=[["a"], ["b"], ["c"]])
    for learner in (HillClimbLearner(knowledge=knowledge, restarts=1),
                    PCLearner(knowledge=knowledge, max_cond_vars=1)):
        boot = BootstrapLearner(learner, n_bootstrap=5, seed=3).fit(data)
        plain = bootstrap_structure(data, learner, n_bootstrap=5, seed=3)
        np.testing.assert_allclose(boot.edge_prob_.to_numpy(), plain.counts / 5)
        assert list(boot.edge_prob_.index) == ["a", "b", "c"] == boot.nodes_
        assert boot.edge_prob_.loc["a", "b"] == 1.0 and boot.edge_prob_.loc["b", "a"] == 0.0
        assert sorted(boot.causal_graph_.edges) == sorted(plain.averaged_dag().edges) == edges
