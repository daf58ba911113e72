"""Headless Debian Chromium through Playwright, for the tests that look at a web UI (Dagster's and
MLflow's). `make test` installs Chromium when missing (scripts/install_debian_package.sh)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from intelligence_assets.config.universe import REPOSITORY_ROOT

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPOSITORY_ROOT / "test-artifacts" / "browser"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: `make test` installs Debian's chromium (scripts/install_debian_package.sh)"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser: object, url: str) -> object:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(30_000)
    # The UI asks once for newsletter sign-up, a modal over the page until dismissed, at a moment
    # that depends on how fast the page loads: Playwright dismisses it whenever it shows before
    # an action.
    page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())
    page.goto(url)
    return page
