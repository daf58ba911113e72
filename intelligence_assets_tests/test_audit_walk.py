"""An auditor's walk, in Chromium: from a champion in MLflow's UI (a real MLflow server keeping its
artifacts in S3) through its back-link into Dagster's UI (a real dagster-webserver), then
upstream partition by partition through the links in each partition's metadata down to the
bars; on every page the fingerprint, commit and config shown are those of the stored artifact.
Screenshots go to test-artifacts/browser/.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import pytest

from intelligence_assets.config.code_revision import code_revision
from intelligence_assets.config.universe import load_universe
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import read_manifest, read_value
from intelligence_assets.store.keys import artifact_prefix, pointer_key
from intelligence_assets.tracking import names
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.browser import SCREENSHOTS, open_page
from intelligence_assets_tests.support.mlflow_server import MlflowServer
from intelligence_assets_tests.support.pipeline import materialize_everything
from intelligence_assets_tests.support.services import free_port
from intelligence_assets_tests.support.webserver import dagster_webserver, write_instance_yaml

# The walk: each asset's partition page links to the next one upstream.
WALK = ["models/linear", "feature_sets", "target_rankings", "labels", "bars"]


@dataclass
class Deployed:
    dagster_url: str
    mlflow_url: str
    store: LocalArtifactStore
    champion: dict  # the registry row of the cell walked


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer) -> Iterator[Deployed]:
    root = tmp_path_factory.mktemp("audit_walk")
    home = root / "home"
    write_instance_yaml(home)
    # Symbols of its own on the session's MLflow server.
    path = write_small_universe(root / "universe", families={"linear": {"params": {}}}, symbol_prefix="W")
    port = free_port()
    dagster_url = f"http://127.0.0.1:{port}"
    environment = {
        "DAGSTER_HOME": str(home),
        "INTELLIGENCE_UNIVERSE": str(path),
        "INTELLIGENCE_ARTIFACT_ROOT": str(home / "artifacts"),
        "INTELLIGENCE_MLFLOW_TRACKING_URI": mlflow_server.url,
        "INTELLIGENCE_DAGSTER_UI_URL": dagster_url,
    }
    universe = load_universe(path)
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in environment.items():
            patch.setenv(variable, value)
        resources = Deployment.from_environment().resources(universe)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            materialize_everything(universe, instance, resources)
    store = LocalArtifactStore(home / "artifacts")
    registry = read_value(store, artifact_prefix(MODEL_REGISTRY.to_user_string()))
    champions = registry.filter(registry["champion_version"].is_not_null())
    assert champions.height, "no cell of the small universe has a champion"

    with dagster_webserver(port, environment, root / "webserver.log"):
        yield Deployed(dagster_url, mlflow_server.url, store, champions.row(0, named=True))


def stored(store: LocalArtifactStore, asset: str, partition: str) -> tuple[str, dict]:
    """(fingerprint, provenance) of a partition's current artifact."""
    prefix = artifact_prefix(asset, *partition.split("|"))
    fingerprint = store.get_json(pointer_key(prefix))["fingerprint"]
    return fingerprint, read_manifest(store, prefix, fingerprint).provenance


def test_an_auditor_walks_from_the_champion_in_mlflow_to_the_bars_in_dagster(deployed: Deployed, browser) -> None:
    champion = deployed.champion
    name, version = champion["registered_model"], champion["champion_version"]
    family = champion["champion_family"]
    partition = f"{champion['symbol']}|{champion['target']}"
    page = open_page(browser, f"{deployed.mlflow_url}/#/models/{urllib.parse.quote(name)}/versions/{version}")
    # MLflow renders the version's description as markdown: the back-link is a link.
    back_link = page.get_by_role("link", name=partition, exact=True).first
    back_link.wait_for()
    href = back_link.get_attribute("href")
    quoted = urllib.parse.quote(partition, safe="")
    assert href == f"{deployed.dagster_url}/assets/models/{family}?view=partitions&partition={quoted}"
    page.screenshot(path=str(SCREENSHOTS / "7_mlflow_champion_back_link.png"), full_page=True)
    page.close()

    commit = code_revision().commit
    asset, walked = f"models/{family}", []
    while True:
        page = open_page(browser, href)
        page.get_by_text("fingerprint", exact=True).first.wait_for()
        fingerprint, provenance = stored(deployed.store, asset, partition)
        rows = page.locator("tr")
        assert (
            rows.filter(has=page.get_by_text("fingerprint", exact=True))
            .filter(has=page.get_by_text(fingerprint))
            .count()
        ), f"{asset} {partition}: fingerprint {fingerprint} not shown"
        if commit:
            assert page.get_by_text(commit[:12]).count(), f"{asset} {partition}: commit {commit} not shown"
        assert rows.filter(has=page.get_by_text("config", exact=True)).count(), f"{asset} {partition}: no config"
        # The config row's value is the stored one: defs/assets/test_lineage.py compares them on every partition.
        assert provenance["config"] is not None, f"{asset} {partition}: no config in the manifest"
        page.screenshot(path=str(SCREENSHOTS / f"8_walk_{len(walked)}_{asset.replace('/', '_')}.png"), full_page=True)
        walked.append(asset)
        if asset == "bars":
            page.close()
            break
        upstream = WALK[WALK.index(asset if not asset.startswith("models/") else "models/linear") + 1]
        link = page.locator(f'a[href^="{deployed.dagster_url}/assets/{upstream}"]').first
        assert link.count(), f"{asset} {partition}: no link to its upstream {upstream}"
        href = link.get_attribute("href")
        page.close()
        asset = upstream
        partition = urllib.parse.unquote(urllib.parse.parse_qs(urllib.parse.urlparse(href).query)["partition"][0])
        if asset == "bars":
            assert partition == champion["symbol"]
    assert walked == [f"models/{family}", *WALK[1:]]

    # And back in MLflow: the champion's run carries the commit as MLflow's own source tag.
    run_tags = json.loads(
        urllib.request.urlopen(
            f"{deployed.mlflow_url}/api/2.0/mlflow/model-versions/get?name={urllib.parse.quote(name)}&version={version}"
        ).read()
    )["model_version"]
    run = json.loads(
        urllib.request.urlopen(f"{deployed.mlflow_url}/api/2.0/mlflow/runs/get?run_id={run_tags['run_id']}").read()
    )["run"]
    tags = {tag["key"]: tag["value"] for tag in run["data"]["tags"]}
    assert (
        tags[names.FINGERPRINT_TAG]
        == stored(deployed.store, f"models/{family}", f"{champion['symbol']}|{champion['target']}")[0]
    )
    if commit:
        assert tags["mlflow.source.git.commit"] == commit
