"""The Dagster UI in a real browser: dagster-webserver on loopback over a small materialized
universe, driven by Playwright through Debian's Chromium (`make test` installs it when missing).

Sees our assets and partitions in the catalog, launches one partition's materialization from the
UI and sees the run succeed, and opens a model's metadata: its held-out metrics and MLflow link.
Screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from intelligence_assets.config.universe import load_universe
from intelligence_assets.defs.assets.market_data import BARS
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.browser import SCREENSHOTS, open_page
from intelligence_assets_tests.support.pipeline import local_resources, materialize_everything
from intelligence_assets_tests.support.services import free_port
from intelligence_assets_tests.support.webserver import dagster_webserver, write_instance_yaml


class UI:
    def __init__(self, url: str, home: Path) -> None:
        self.url = url
        self.home = home


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    root = tmp_path_factory.mktemp("browser")
    home = root / "home"
    write_instance_yaml(home)
    universe_path = write_small_universe(root / "universe", families={"linear": {"params": {}}})
    environment = {
        "DAGSTER_HOME": str(home),
        "INTELLIGENCE_UNIVERSE": str(universe_path),
        "INTELLIGENCE_ARTIFACT_ROOT": str(home / "artifacts"),
    }
    universe = load_universe(universe_path)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        materialize_everything(universe, instance, local_resources(home / "artifacts", universe))

    with dagster_webserver(free_port(), environment, root / "webserver.log") as url:
        yield UI(url, home)


def test_catalog_shows_our_assets_and_their_partitions(ui: UI, browser: object) -> None:
    page = open_page(browser, f"{ui.url}/assets")
    page.get_by_text("model_leaderboard").first.wait_for()
    # Partition counts arrive after the list: 2 symbols; 2 symbols x 2 targets.
    page.get_by_text("4 partitions").first.wait_for()
    page.get_by_text("2 partitions").first.wait_for()
    text = page.inner_text("body")
    for asset in (
        "bars",
        "features",
        "labels",
        "target_rankings",
        "feature_sets",
        "model_leaderboard",
        "model_registry",
        "predictions",
    ):
        assert re.search(rf"\b{asset}\b", text), f"{asset} missing from the catalog"
    assert "models / linear" in text
    page.screenshot(path=str(SCREENSHOTS / "1_catalog.png"), full_page=True)

    page.goto(f"{ui.url}/assets/bars?view=partitions")
    page.get_by_text("SIGNAL").first.wait_for()
    assert "NOISE" in page.inner_text("body")
    page.screenshot(path=str(SCREENSHOTS / "2_bars_partitions.png"))
    page.close()


def test_one_partition_launched_from_the_ui_succeeds(ui: UI, browser: object) -> None:
    with dg.DagsterInstance.from_config(str(ui.home)) as instance:
        runs_before = {run.run_id for run in instance.get_runs()}
    page = open_page(browser, f"{ui.url}/assets/bars")
    page.get_by_role("button", name="Materialize…").first.click()
    dialog = page.get_by_role("dialog")
    # "Custom" starts from the partitions the dialog has loaded: clicked before they arrive (a
    # busy machine), it starts from none. "All" counts them once they have.
    dialog.get_by_role("button", name="All", exact=True).click()
    dialog.get_by_text("2 partitions", exact=True).wait_for()
    dialog.get_by_role("button", name="Custom").click()
    dialog.locator('[data-tooltip="NOISE"] [aria-label="close"]').click()
    launch = dialog.get_by_role("button", name="Launch 1 run")
    launch.wait_for()
    page.screenshot(path=str(SCREENSHOTS / "3_launch_one_partition.png"))
    launch.click()

    deadline = time.monotonic() + 180
    run = None
    with dg.DagsterInstance.from_config(str(ui.home)) as instance:
        while time.monotonic() < deadline:
            new = [r for r in instance.get_runs() if r.run_id not in runs_before]
            if new and new[0].is_finished:
                run = new[0]
                break
            time.sleep(1)
        assert run is not None, "the run launched from the UI did not finish within 180 s"
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags.get("dagster/partition") == "SIGNAL"
        materialized = instance.fetch_materializations(BARS, limit=1).records[0]
        assert materialized.run_id == run.run_id and materialized.partition_key == "SIGNAL"

    page.goto(f"{ui.url}/runs/{run.run_id}")
    page.get_by_text("Success").first.wait_for()
    page.screenshot(path=str(SCREENSHOTS / "4_run_succeeded.png"))
    page.close()


def test_model_metadata_shows_metrics_and_the_mlflow_link(ui: UI, browser: object) -> None:
    # A partition the ranking let through (SIGNAL carries a planted signal).
    with dg.DagsterInstance.from_config(str(ui.home)) as instance:
        records = instance.fetch_materializations(model_key("linear"), limit=10).records
    # A ranged run's record for the whole range carries no per-partition metadata; its partitions' own do.
    metadata_of = [r for r in records if "trained" in r.asset_materialization.metadata]
    trained = [r for r in metadata_of if r.asset_materialization.metadata["trained"].value]
    assert trained, "no linear model was trained in the small universe"
    partition = trained[0].partition_key
    metadata = trained[0].asset_materialization.metadata
    metrics = [key for key in ("auc", "accuracy", "ic", "rank_ic", "sharpe") if key in metadata]
    assert metrics
    mlflow_url = metadata["mlflow_run"].value

    page = open_page(
        browser, f"{ui.url}/assets/models/linear?view=partitions&partition={urllib.parse.quote(partition)}"
    )
    page.get_by_text("mlflow_run", exact=True).first.wait_for()
    rows = page.locator("tr")
    baselines = [key for key in metadata if key.startswith("baseline_")]
    assert baselines
    for key in [*metrics, baselines[0], "test_rows"]:
        assert rows.filter(has=page.get_by_text(key, exact=True)).count() >= 1, f"metadata row {key} missing"
    assert page.locator(f'a[href="{mlflow_url}"]').count() >= 1, f"no link to {mlflow_url}"
    page.screenshot(path=str(SCREENSHOTS / "5_model_metadata.png"), full_page=True)
    page.close()
