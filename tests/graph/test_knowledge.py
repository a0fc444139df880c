"""ExpertKnowledge: tier rules, contradictions refused with the culprit named, YAML round trip."""

from __future__ import annotations

import itertools

import pytest

from bayesrad.errors import KnowledgeError, MissingFileError
from bayesrad.graph.knowledge import ExpertKnowledge

TIERS = {"demographics": ["age", "sex"], "clinical": ["stage"], "dose": ["dose_gy"],
         "outcome": ["control", "survival"]}


def test_tiers_allow_only_forward_and_within_edges():
    k = ExpertKnowledge(tiers=TIERS)
    assert k.allows("age", "stage") and k.allows("age", "control")
    assert k.allows("age", "sex")                      # within a tier: allowed by default
    assert not k.allows("dose_gy", "stage")            # backwards
    assert "points backwards" in k.reason_forbidden("control", "age")
    assert k.allows("free_node", "age") and k.allows("age", "free_node")  # untiered


def test_within_tier_can_be_forbidden_per_tier():
    k = ExpertKnowledge(tiers=TIERS, within_tier=["outcome"])
    assert not k.allows("age", "sex")
    assert k.allows("control", "survival")
    assert "stays within tier 'demographics'" in k.reason_forbidden("sex", "age")


def test_outcome_parents_only_from_allowed_tiers():
    k = ExpertKnowledge(tiers=TIERS, outcomes=["control"], outcome_parent_tiers=["dose"])
    assert k.allows("dose_gy", "control")
    assert not k.allows("stage", "control")
    assert not k.allows("free_node", "control")
    assert k.allows("stage", "survival")               # not declared an outcome


def test_forbidden_edges_expand_tiers_exactly():
    k = ExpertKnowledge(tiers=TIERS, forbidden=[("age", "control")])
    nodes = [n for tier in TIERS.values() for n in tier]
    forbidden = k.forbidden_edges(nodes)
    tier_of = {n: i for i, tier in enumerate(TIERS.values()) for n in tier}
    expected = {(u, v) for u, v in itertools.permutations(nodes, 2) if tier_of[u] > tier_of[v]}
    assert forbidden == expected | {("age", "control")}
    pgmpy_knowledge = k.to_pgmpy(nodes)
    assert pgmpy_knowledge.forbidden_edges == forbidden


@pytest.mark.parametrize("kwargs, named", [
    (dict(tiers=TIERS, required=[("dose_gy", "stage")]), "'dose_gy' -> 'stage'"),
    (dict(tiers=TIERS, within_tier=False, required=[("age", "sex")]), "'age' -> 'sex'"),
    (dict(forbidden=[("a", "b")], required=[("a", "b")]), "'a' -> 'b'"),
    (dict(tiers=TIERS, outcomes=["control"], outcome_parent_tiers=["dose"],
          required=[("stage", "control")]), "'stage' -> 'control'"),
    (dict(required=[("a", "b"), ("b", "c"), ("c", "a")]), "a -> b -> c -> a"),
    (dict(tiers={"one": ["a", "b"], "two": ["b"]}), "node 'b'"),
    (dict(required=[("a", "a")]), "'a' -> 'a'"),
    (dict(tiers=TIERS, outcome_parent_tiers=["nope"]), "'nope'"),
])
def test_contradictions_are_refused_naming_the_culprit(kwargs, named):
    with pytest.raises(KnowledgeError) as info:
        ExpertKnowledge(**kwargs)
    assert named in str(info.value)


def test_consistent_required_edges_are_accepted():
    k = ExpertKnowledge(tiers=TIERS, required=[("stage", "dose_gy"), ("dose_gy", "control")])
    assert k.violations([("stage", "dose_gy"), ("dose_gy", "control")]) == []
    missing = k.violations([("stage", "dose_gy")], nodes=["stage", "dose_gy", "control"])
    assert missing == ["required edge 'dose_gy' -> 'control' is missing"]
    assert k.violations([("control", "stage")])[0].startswith("edge 'control' -> 'stage'")


def test_unknown_node_names_are_refused_against_data():
    k = ExpertKnowledge(tiers=TIERS)
    with pytest.raises(KnowledgeError, match="sex"):
        k.check_nodes(["age", "stage", "dose_gy", "control", "survival"])


def test_yaml_round_trip_file_and_text(tmp_path):
    k = ExpertKnowledge(tiers=TIERS, forbidden=[("age", "dose_gy")],
                        required=[("stage", "dose_gy")], within_tier=["clinical", "outcome"],
                        outcomes=["control"], outcome_parent_tiers=["dose", "clinical"])
    path = tmp_path / "knowledge.yaml"
    text = k.to_yaml(path)
    assert path.read_text() == text
    assert ExpertKnowledge.from_yaml(path) == k
    again = ExpertKnowledge.from_yaml(text)
    assert again == k
    assert list(again.tiers) == list(TIERS)            # tier order survives
    assert again.forbidden_edges(["age", "sex"]) == k.forbidden_edges(["age", "sex"])


def test_yaml_errors_name_the_problem(tmp_path):
    with pytest.raises(MissingFileError, match="absent.yaml"):
        ExpertKnowledge.from_yaml(tmp_path / "absent.yaml")
    with pytest.raises(KnowledgeError, match="tierz"):
        ExpertKnowledge.from_yaml("tierz: []\nrequired: []\n")
    with pytest.raises(KnowledgeError, match="'b' -> 'a'"):
        ExpertKnowledge.from_yaml("tiers:\n- {name: first, nodes: [a]}\n- {name: second, "
                                  "nodes: [b]}\nrequired: [[b, a]]\n")


def test_from_blocks_builds_default_tiers_and_overrides():
    blocks = {"age": "clinical", "stage": "clinical", "radiomics": "radiomics",
              "dose_gy": "dosimetry", "control": "outcome", "centre_id": "site"}
    k = ExpertKnowledge.from_blocks(blocks, node_tiers={"age": "demographics"})
    assert k.tier_of("age") == "demographics"
    assert k.tier_of("radiomics") == "disease" == k.tier_of("stage")
    assert k.tier_of("centre_id") is None
    assert k.outcomes == ["control"]
    assert not k.allows("dose_gy", "radiomics") and k.allows("radiomics", "dose_gy")
    with pytest.raises(KnowledgeError, match="unknown tiers"):
        ExpertKnowledge.from_blocks(blocks, node_tiers={"age": "childhood"})


def test_untiered_blocks_come_before_the_outcomes_and_are_named():
    blocks = {"age": "clinical", "liver_suv": "organ_uptake", "response": "outcome"}
    with pytest.warns(UserWarning, match=r"blocks \['organ_uptake'\] are in no tier"):
        k = ExpertKnowledge.from_blocks(blocks)
    assert k.tier_of("liver_suv") is None
    # no outcome -> organ uptake edge (what the search learned without it, issue 18) ...
    assert "forbidden" in k.reason_forbidden("response", "liver_suv")
    # ... while the untiered node may still precede the outcome or follow the disease
    assert k.allows("liver_suv", "response") and k.allows("age", "liver_suv")


def test_packaged_tiers_are_package_data():
    from bayesrad.graph.knowledge import packaged_tiers

    tiers = packaged_tiers("radiotherapy")
    assert list(tiers["block_tiers"]) == ["patient", "pathology", "tumour", "staging", "prescription",
                                          "plan", "outcome"]
    assert tiers["node_tiers"]["dose_mean_gy"] == "prescription"
    assert "deep" in tiers["block_tiers"]["tumour"]
    with pytest.raises(KnowledgeError, match=r"no packaged tiers 'mars'.*radiotherapy"):
        packaged_tiers("mars")
