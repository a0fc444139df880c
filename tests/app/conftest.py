"""One chromium for every browser test of the app: starting it is most of their setup time."""

from __future__ import annotations

import pytest

from tests.app._browser import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="session")
def browser():
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    if CHROMIUM is None:
        pytest.skip("chromium not found at /usr/bin/chromium: apt-get install chromium "
                    "(make test does it where it can)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
