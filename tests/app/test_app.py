"""The clinician's app in a real browser (Playwright + Debian chromium): the page loads, a
patient is chosen, the dose slider moves and the displayed probability is the model's own
answer under do(dose), a wrongly typed value shows a message, the counterfactual tab gives the
model's counterfactual for the patient (and, at the patient's own dose, their observed
outcome), and the exported report holds every section with the model's numbers. A small model
is fitted once per module; the browser is shared (conftest.py)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from bayesrad.graph.graph import Graph, NodeSpec
from bayesrad.model import HybridBN

from tests.app._browser import serve


def _cohort(n=80, seed=0):
    rng = np.random.default_rng(seed)
    ids = pd.Index([f"P{i:03d}" for i in range(n)], name="patient_id")
    age = rng.normal(65, 9, n)
    hist = rng.choice(["adeno", "squamous"], n)
    dose = 60 - 0.15 * (age - 65) + rng.normal(0, 4, n)
    lc = (rng.random(n) < expit(-7 + 0.12 * dose - 0.5 * (hist == "squamous"))).astype(float)
    return {"clinical": pd.DataFrame({"age_years": age, "histology": pd.Categorical(hist)}, index=ids),
            "dosimetry": pd.DataFrame({"dose_mean_gy": dose}, index=ids),
            "outcome": pd.DataFrame({"local_control": lc}, index=ids)}


def binary_graph():
    """Age -> dose -> local control <- histology: the graph of ``_cohort``."""
    return Graph([NodeSpec("age_years", "continuous", block="clinical"),
                  NodeSpec("histology", "categorical", block="clinical", levels=["adeno", "squamous"]),
                  NodeSpec("dose_mean_gy", "continuous", block="dosimetry"),
                  NodeSpec("local_control", "binary", block="outcome")],
                 [("age_years", "dose_mean_gy"), ("dose_mean_gy", "local_control"),
                  ("histology", "local_control")])


@pytest.fixture(scope="module")
def served(browser):
    from bayesrad.app import build_app

    blocks = _cohort()
    model = HybridBN(binary_graph(), num_steps=300, min_steps=300, seed=0, num_threads=1, n_samples=200
                     ).fit(blocks)
    app = build_app(model, blocks)
    page = browser.new_page(accept_downloads=True)
    page.set_default_timeout(90000)   # a loaded 2-core CI machine; a hang still fails
    page.goto(serve(app))
    page.wait_for_selector("#answer:has-text('P(local_control')", timeout=90000)
    yield model, app.state, page
    page.close()


def _probability(text):
    return float(text.split(") = ")[1].split()[0])


def _answer(page):
    return page.inner_text("#answer")


def test_slider_answer_is_the_models_do_answer(served):
    model, state, page = served
    # choose a cohort patient: their dose appears in its input
    page.click("#patient")
    page.keyboard.type("P003")      # searched first: see test_app_targets._choose_patient
    page.locator(".dash-options-list-option", has_text="P003").click()
    dose_input = page.locator("input[id*='dose_mean_gy']")
    page.wait_for_function("document.querySelector(\"input[id*='dose_mean_gy']\").value !== ''")
    assert "P003" in page.inner_text("#patient")
    assert float(dose_input.input_value()) == pytest.approx(state.patient_values("P003")["dose_mean_gy"])
    page.wait_for_timeout(500)
    before = _answer(page)
    # move the slider to its maximum with the keyboard
    page.locator("#slider [role=slider]").first.focus()
    page.keyboard.press("End")
    page.wait_for_function(f"document.querySelector('#answer').innerText !== {before!r}", timeout=90000)
    shown = float(page.inner_text("#whatif-value"))
    assert shown == pytest.approx(state.ranges["dose_mean_gy"][1], abs=0.6)
    evidence, _ = state.validate(state.patient_values("P003"))
    evidence.pop("dose_mean_gy")
    expect = model.query("local_control", evidence, do={"dose_mean_gy": shown},
                         n_samples=state.n_samples, seed=0).iloc[0]
    text = _answer(page)
    assert f"= {expect['mean']:.2f}" in text and f"{expect['q05']:.2f} to {expect['q95']:.2f}" in text
    # dose raises local control in this cohort (truth +0.12 / Gy): the answer moved up
    assert _probability(text) > _probability(before)
    assert "extrapolation" in page.inner_text("#warning")


def test_explanation_follows_the_what_if(served):
    """After the slider move above, the explanation panel shows bayesrad.explain's causal
    Shapley values (the what-if is in "do" mode) for P003's evidence with the slider's dose."""
    from bayesrad.app.core import SEED, evidence_blocks
    from bayesrad.explain import shapley

    model, state, page = served
    page.wait_for_selector("#explanation-table", timeout=90000)
    shown = float(page.inner_text("#whatif-value"))
    page.wait_for_function("document.querySelector('#explanation-caption').innerText"
                           f".includes('dose_mean_gy = {shown:g}')", timeout=90000)
    evidence, _ = state.validate(state.patient_values("P003"))
    evidence["dose_mean_gy"] = shown
    expect = shapley(model, evidence_blocks(state, evidence), "local_control", method="exact",
                     causal=True, n_samples=state.n_samples, seed=SEED)
    rows = page.locator("#explanation-table tr").all_inner_texts()[1:]
    shown_values = {r.split("\t")[0]: r.split("\t")[1] for r in rows}
    assert set(shown_values) == set(expect["node"])
    for r in expect.itertuples():
        # 3 decimals shown; a value on a rounding boundary may print either way
        assert float(shown_values[r.node]) == pytest.approx(r.value, abs=0.0015)
    assert "as interventions (do)" in page.inner_text("#explanation-caption")


def test_wrong_value_shows_a_message(served):
    _, state, page = served
    age = page.locator("input[id*='age_years']")
    age.fill("sixty")
    age.press("Enter")
    page.wait_for_selector("#message:has-text('age_years')", timeout=90000)
    assert "not a number" in page.inner_text("#message")
    age.fill("400")
    age.press("Enter")
    page.wait_for_selector("#message:has-text('plausible range')", timeout=90000)
    # back to the patient's own age: the next tests see P003's record
    age.fill(repr(state.patient_values("P003")["age_years"]))
    age.press("Enter")
    page.wait_for_function("document.querySelector('#message').innerText === ''", timeout=90000)


def _section(text, ident):
    """The HTML of the report's ``<div id=ident>`` (sections are not nested but the model card)."""
    start = text.index(f"id='{ident}'")
    return text[start:text.index("</div>", start)]


def _counterfactual(page, value):
    before = page.inner_text("#cf-answer")
    box = page.locator("#cf-value")
    box.fill(value)
    box.press("Enter")
    page.wait_for_function(f"document.querySelector('#cf-answer').innerText !== {before!r}",
                           timeout=90000)
    return page.inner_text("#cf-answer")


def test_counterfactual_tab_is_the_models_counterfactual(served):
    from bayesrad.query import counterfactual

    model, state, page = served
    page.get_by_text("Counterfactual", exact=True).click()
    page.wait_for_selector("#cf-status:has-text('Observed for P003')", timeout=90000)
    factual = float(state.blocks["outcome"].at["P003", "local_control"])
    assert f"local_control = {factual:g}" in page.inner_text("#cf-status")
    # the Python API's answer for this patient's own record (abduction from their outcome)
    record = {name: frame.loc[["P003"]] for name, frame in _cohort().items()}
    expect = counterfactual(model, record, "local_control", {"dose_mean_gy": 75.0},
                            n_samples=state.n_samples, seed=0).iloc[0]
    text = _counterfactual(page, "75")
    assert text.startswith("Had dose_mean_gy been 75 Gy: P(local_control = 1) = ")
    assert (f"= {expect['mean']:.2f} (90% interval {expect['q05']:.2f} to {expect['q95']:.2f})"
            in text), (text, expect)
    # at the patient's own dose nothing changes: the counterfactual is the observed outcome
    own = _counterfactual(page, repr(state.patient_values("P003")["dose_mean_gy"]))
    assert f"= {factual:.2f} (90% interval {factual:.2f} to {factual:.2f})" in own, own
    # a wrongly typed value: a message, the answer cleared, no traceback
    _counterfactual(page, "lots")
    assert "not a number" in page.inner_text("#cf-message")
    _counterfactual(page, "75")   # leave the tab set up for the report


def test_counterfactual_needs_a_recorded_outcome(served):
    from bayesrad.app.core import counterfactual_callback

    _, state, _ = served
    status, row, _ = counterfactual_callback(state, "", "dose_mean_gy", "70")
    assert row is None and "choose one" in status
    state.blocks["outcome"].loc["P001", "local_control"] = np.nan   # an unrecorded outcome
    try:
        status, row, _ = counterfactual_callback(state, "P001", "dose_mean_gy", "70")
        assert row is None and "P001's local_control is not recorded" in status
    finally:
        state.blocks["outcome"].loc["P001", "local_control"] = _cohort()["outcome"].at["P001", "local_control"]


def test_export_report(served, tmp_path):
    import bayesrad
    from bayesrad.evaluate import metrics
    from bayesrad.explain import shapley

    model, state, page = served
    with page.expect_download(timeout=60000) as info:
        page.click("#export")
    path = tmp_path / "report.html"
    info.value.save_as(path)
    text = path.read_text()
    # self-contained: no script, nothing fetched from elsewhere
    assert "<script" not in text and not re.search(r"src=['\"]http", text)
    # prediction: the what-if answer under the slider's do(dose), as the Python API gives it
    shown = float(page.inner_text("#whatif-value"))
    evidence, _ = state.validate(state.patient_values("P003"))
    evidence.pop("dose_mean_gy")
    expect = model.query("local_control", evidence, do={"dose_mean_gy": shown},
                         n_samples=state.n_samples, seed=0).iloc[0]
    prediction = _section(text, "prediction-section")
    assert (f"P(local_control = 1) = {expect['mean']:.2f} (90% interval {expect['q05']:.2f} to "
            f"{expect['q95']:.2f}) under do(dose_mean_gy = {shown:g} Gy)") in prediction
    # evidence table: every input with the patient's value
    table = text[text.index("id='evidence'"):text.index("</table>", text.index("id='evidence'"))]
    for node, value in state.patient_values("P003").items():
        shown = f"{value:.6g} {state.unit(node)}" if isinstance(value, float) else value
        assert f"<td>{node}</td><td>{shown}</td>" in table, node
    # explanation: the Shapley contributions of bayesrad.explain for this evidence
    expl = _section(text, "explanation")
    full, _ = state.validate(state.patient_values("P003"))
    ref = shapley(model, {name: frame.loc[["P003"]] for name, frame in _cohort().items()},
                  "local_control", n_samples=state.n_samples, seed=0)
    for r in ref.itertuples():
        assert f"<td>{r.node}</td><td>{r.value:+.3f}</td>" in expl, (r.node, expl)
    # what-if curve, network picture
    assert "data:image/png;base64," in _section(text, "whatif")
    assert "data:image/png;base64," in _section(text, "network")
    # counterfactual (set in the tab by the previous test)
    cf = model.counterfactual({n: f.loc[["P003"]] for n, f in _cohort().items()}, "local_control",
                              {"dose_mean_gy": 75.0}, n_samples=state.n_samples, seed=0).iloc[0]
    assert (f"Had dose_mean_gy been 75 Gy: P(local_control = 1) = {cf['mean']:.2f}"
            in _section(text, "counterfactual"))
    # model card: data, version, calibration on the 80 patients with the API's Brier score
    card = text[text.index("id='model-card'"):]
    assert "80 patients" in card and f"bayesrad {bayesrad.__version__}" in card
    assert "<td>dose_mean_gy</td><td>dosimetry</td><td>continuous</td>" in card
    pred = model.predict(_cohort(), "local_control", n_samples=state.n_samples, seed=0)
    y = _cohort()["outcome"]["local_control"]
    brier = metrics.brier(y.to_numpy(), pred["mean"].reindex(y.index).to_numpy())
    assert f"<td>Brier score</td><td>{brier:.3f}</td>" in card
    assert "calibration figure" in card and "in-sample" in card


def test_model_card_names_the_saved_models_versions(served, tmp_path):
    import json

    from bayesrad.app.core import AppState, model_card
    from bayesrad.model import HybridBN

    model, _, _ = served
    model.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "meta.json").read_text())
    state = AppState(HybridBN.load(tmp_path / "model"), None, "local_control", 50,
                     model_dir=tmp_path / "model")
    card = model_card(state)
    assert f"torch {meta['versions']['torch']}" in card and f"pyro {meta['versions']['pyro']}" in card
    assert meta["sha256"]["params.safetensors"][:16] in card
    # no cohort: the card says why there is no calibration instead of drawing one
    assert "Calibration not shown" in card and "calibration figure" not in card
