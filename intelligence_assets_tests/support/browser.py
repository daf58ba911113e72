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
