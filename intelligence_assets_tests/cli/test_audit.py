"""`make audit`: a champion's trail verified link by link, and the first broken link named when an
artifact in the store or the MLflow model copy has been changed since it was written."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import pytest

from intelligence_assets.cli.audit import run_audit
from intelligence_assets.config.universe import load_universe
from intelligence_assets.definitions import build_assets
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import read_value
from intelligence_assets.store.keys import artifact_prefix, fingerprint_directory, pointer_key
from intelligence_assets.tracking import names
from intelligence_assets_tests.conftest import fresh_home, home_environment, write_small_universe
from intelligence_assets_tests.support.pipeline import materialize_everything


@dataclass
class AuditedHome:
    home: Path
    universe_path: Path
    defs: dg.Definitions
    deployment: Deployment
    store: LocalArtifactStore
    champion: str  # NAME@champion
    symbol: str
    target: str

    def audit(self, model: str) -> tuple[bool, list[str]]:
        lines: list[str] = []
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            verified = run_audit(model, None, None, self.defs, instance, self.deployment, say=lines.append)
        return verified, lines


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditedHome]:
    root = tmp_path_factory.mktemp("audit")
    universe_path = write_small_universe(root, families={"linear": {"params": {}}})
    universe = load_universe(universe_path)
    home = fresh_home(root)
    deployment = Deployment(artifact_root=home / "artifacts")
    resources = deployment.resources(universe)
    assets = build_assets(universe)
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("DAGSTER_HOME", str(home))  # the home's dagster.yaml places its storage under it
        with dg.DagsterInstance.from_config(str(home)) as instance:
            materialize_everything(universe, instance, resources, assets)
        store = LocalArtifactStore(home / "artifacts")
        registry = read_value(store, artifact_prefix(MODEL_REGISTRY.to_user_string()))
        champion = registry.filter(registry["champion_version"].is_not_null()).row(0, named=True)
        yield AuditedHome(
            home,
            universe_path,
            dg.Definitions(assets=assets, resources=resources),
            deployment,
            store,
            f"{champion['registered_model']}@{names.CHAMPION}",
            champion["symbol"],
            champion["target"],
        )


def test_a_champion_is_verified_from_its_mlflow_copy_to_the_bars(audited: AuditedHome) -> None:
    verified, lines = audited.audit(audited.champion)
    assert verified, "\n".join(lines)
    cell = f"{audited.symbol}|{audited.target}"
    for link in (
        "MLflow version",
        "MLflow model copy",
        "MLflow run",
        "Dagster run",
        f"models/linear {cell}",
        f"feature_sets {cell}",
        f"target_rankings {cell}",
        f"labels {cell}",
        f"features {audited.symbol}",
        f"bars {audited.symbol}",
    ):
        assert any(line.startswith(f"  ok  {link}") for line in lines), (link, lines)
    assert any("content hash" in line for line in lines if line.startswith(f"  ok  bars {audited.symbol}"))
    assert lines[-1].startswith("verified")


def test_the_command_exits_0_when_verified_and_1_naming_a_tampered_artifact(audited: AuditedHome) -> None:
    command = [sys.executable, "-m", "intelligence_assets.cli.audit", "--model", audited.champion]
    environment = home_environment(audited.home, audited.universe_path)
    clean = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "verified" in clean.stdout

    # The labels the champion's model was trained on, changed in the store after the fact.
    prefix = artifact_prefix("labels", audited.symbol, audited.target)
    fingerprint = audited.store.get_json(pointer_key(prefix))["fingerprint"]
    [stored] = [
        key
        for key in audited.store.list_keys(fingerprint_directory(prefix, fingerprint))
        if not key.endswith("manifest.json")
    ]
    original = audited.store.get_bytes(stored)
    audited.store.put_bytes(stored, original + b"tampered")
    try:
        tampered = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)
    finally:
        audited.store.put_bytes(stored, original)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    mismatch = [line for line in tampered.stdout.splitlines() if line.startswith("MISMATCH")]
    assert mismatch and mismatch[0].startswith(f"MISMATCH at labels {audited.symbol}|{audited.target} artifact"), (
        tampered.stdout
    )
    assert stored.rsplit("/", 1)[-1] in mismatch[0]


def test_a_tampered_mlflow_model_copy_is_named(audited: AuditedHome) -> None:
    tracker = audited.defs.resources["mlflow_tracking"].tracker()
    name, alias = audited.champion.split("@")
    version = tracker.version_by_alias(name, alias)
    artifacts = Path(urlparse(tracker.client.get_run(version.run_id).info.artifact_uri).path)
    model_file = next(path for path in sorted((artifacts / names.MODEL_ARTIFACT_PATH).rglob("*")) if path.is_file())
    original = model_file.read_bytes()
    model_file.write_bytes(original + b" ")
    try:
        verified, lines = audited.audit(audited.champion)
    finally:
        model_file.write_bytes(original)
    assert not verified
    mismatch = next(line for line in lines if line.startswith("MISMATCH"))
    assert mismatch.startswith(f"MISMATCH at MLflow model copy of {name} v{version.version}"), lines
    assert model_file.name in mismatch


@pytest.mark.parametrize("asset", ["model_leaderboard", "model_registry"])
def test_an_unpartitioned_asset_is_verified_through_every_partition_it_read(audited: AuditedHome, asset: str) -> None:
    lines: list[str] = []
    with dg.DagsterInstance.from_config(str(audited.home)) as instance:
        assert run_audit(None, asset, None, audited.defs, instance, audited.deployment, say=lines.append), "\n".join(
            lines
        )
    if asset == "model_leaderboard":  # every model of the small universe, down to both symbols' bars
        assert sum(line.startswith("  ok  models/linear ") for line in lines) == 4
        assert {line.split()[2] for line in lines if line.startswith("  ok  bars ")} == {"SIGNAL:", "NOISE:"}
