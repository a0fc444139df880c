"""Regenerate docs/app_*.png: the app over a small simulated model, photographed in chromium.
Run from the repository root: python docs/app_screenshots.py"""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "app"))
from test_app import _cohort  # noqa: E402  (the tests' simulated cohort)

from bayesrad.app import build_app  # noqa: E402
from bayesrad.graph.graph import Graph, NodeSpec  # noqa: E402
from bayesrad.model import HybridBN  # noqa: E402

DOCS = Path(__file__).parent


def main():
    graph = Graph([NodeSpec("age_years", "continuous", block="clinical"),
                   NodeSpec("histology", "categorical", block="clinical", levels=["adeno", "squamous"]),
                   NodeSpec("dose_mean_gy", "continuous", block="dosimetry"),
                   NodeSpec("local_control", "binary", block="outcome")],
                  [("age_years", "dose_mean_gy"), ("dose_mean_gy", "local_control"),
                   ("histology", "local_control")])
    blocks = _cohort()
    model = HybridBN(graph, num_steps=300, min_steps=300, seed=0, num_threads=1, n_samples=200).fit(blocks)
    app = build_app(model, blocks)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    threading.Thread(target=lambda: app.run(host="127.0.0.1", port=port), daemon=True).start()
    time.sleep(2)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#answer:has-text('P(local_control')", timeout=30000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(DOCS / "app_network.png"))
        page.click("#patient")
        page.get_by_text("P003", exact=True).click()
        page.wait_for_timeout(1500)
        page.locator("#slider [role=slider]").first.focus()
        for _ in range(60):
            page.keyboard.press("ArrowRight")
        page.wait_for_timeout(2000)
        page.screenshot(path=str(DOCS / "app_patient.png"))
        browser.close()


if __name__ == "__main__":
    main()
