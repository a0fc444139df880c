"""Regenerate docs/app_*.png: the app over small simulated models (the browser tests' cohorts),
photographed in chromium: the network, a patient's what-if (binary target), the counterfactual
tab, class bars (categorical target), the survival curve, and the exported report.
Run from the repository root: python docs/app_screenshots.py"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.app._browser import CHROMIUM, CHROMIUM_ARGS, serve  # noqa: E402
from tests.app.test_app import _cohort, binary_graph  # noqa: E402  (the tests' cohorts)
from tests.app.test_app_targets import targets_cohort, targets_graph  # noqa: E402

from bayesrad.app import build_app  # noqa: E402
from bayesrad.model import HybridBN  # noqa: E402

DOCS = Path(__file__).parent


def _patient(page, patient):
    page.click("#patient")
    page.keyboard.type(patient)     # searched first, as in tests/app (a click in the full menu can be lost)
    page.locator(".dash-options-list-option", has_text=patient).click()
    page.wait_for_timeout(1500)


def _slide(page, steps):
    page.locator("#slider [role=slider]").first.focus()
    for _ in range(steps):
        page.keyboard.press("ArrowRight")
    page.wait_for_timeout(2000)


def main():
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    blocks = _cohort()
    model = HybridBN(binary_graph(), num_steps=300, min_steps=300, seed=0, num_threads=1, n_samples=200).fit(blocks)
    url = serve(build_app(model, blocks))
    tblocks = targets_cohort()
    tmodel = HybridBN(targets_graph(), num_steps=300, min_steps=300, seed=0, num_threads=1,
                      n_samples=200).fit(tblocks)
    url_classes = serve(build_app(tmodel, tblocks, "response"))
    url_survival = serve(build_app(tmodel, tblocks, "os_days"))
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900}, accept_downloads=True)
        page.goto(url)
        page.wait_for_selector("#answer:has-text('P(local_control')", timeout=30000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(DOCS / "app_network.png"))
        _patient(page, "P003")
        _slide(page, 60)
        page.screenshot(path=str(DOCS / "app_patient.png"))
        page.get_by_text("Counterfactual", exact=True).click()
        page.locator("#cf-value").fill("75")
        page.locator("#cf-value").press("Enter")
        page.wait_for_selector("#cf-answer:has-text('Had')", timeout=30000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(DOCS / "app_counterfactual.png"))
        with page.expect_download(timeout=120000) as info:
            page.click("#export")
        report = Path(tempfile.mkdtemp()) / "report.html"
        info.value.save_as(report)
        shot = browser.new_page(viewport={"width": 1000, "height": 900})
        shot.goto(report.as_uri())
        shot.wait_for_timeout(500)
        shot.screenshot(path=str(DOCS / "app_report.png"), full_page=True)
        for target_url, ready, name in ((url_classes, "most likely response", "app_classes.png"),
                                        (url_survival, "median os_days", "app_survival.png")):
            page.goto(target_url)
            page.wait_for_selector(f"#answer:has-text('{ready}')", timeout=30000)
            _patient(page, "Q003")
            _slide(page, 40)
            page.screenshot(path=str(DOCS / name))
        browser.close()


if __name__ == "__main__":
    main()
