"""Every partition's latest materialization, from a ranged run or a single-partition run, records
its fingerprint as Dagster data version, its code version, its resolved config and the exact
upstream partitions it read (versions, events, links), as an auditor reads them in the UI."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import dagster as dg
import pytest
from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_TAG,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)
from dagster._core.definitions.partitions.context import partition_loading_context

from intelligence_assets.config.universe import load_universe
from intelligence_assets.definitions import build_assets
from intelligence_assets.defs.assets.lineage import latest_materializations
from intelligence_assets.defs.assets.market_data import FEATURES
from intelligence_assets.defs.assets.registry import ALIAS_COLUMNS, MODEL_REGISTRY
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.defs.resources.io_manager import parse_partition_key, partition_prefix
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import read_manifest, read_value
from intelligence_assets.store.keys import artifact_prefix, pointer_key
from intelligence_assets.tracking.names import registered_model_name
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.pipeline import materialize_everything

DAGSTER_UI = "http://dagster.example:8080/ui"
MLFLOW_UI = "https://mlflow.example/tracking"


def latest(instance: dg.DagsterInstance, asset: dg.AssetKey, partition: str | None) -> dg.EventLogRecord:
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return record


@pytest.mark.parametrize("ranged_training", [True, False], ids=["ranged runs", "single-partition runs"])
def test_each_partition_records_its_fingerprint_and_the_upstream_partitions_it_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ranged_training: bool
) -> None:
    monkeypatch.setenv("INTELLIGENCE_DAGSTER_UI_URL", DAGSTER_UI)
    universe = load_universe(write_small_universe(tmp_path, families={"linear": {"params": {}}}))
    assets = build_assets(universe)
    deployment = Deployment(artifact_root=tmp_path / "artifacts", dagster_ui_url=DAGSTER_UI, mlflow_ui_url=MLFLOW_UI)
    resources = deployment.resources(universe)
    graph = dg.Definitions(assets=assets, resources=resources).resolve_asset_graph()
    store = LocalArtifactStore(tmp_path / "artifacts")
    with dg.instance_for_test() as instance:
        materialize_everything(universe, instance, resources, assets, ranged_training)
        checked = 0
        for node in graph.asset_nodes:
            if not node.is_materializable or not node.is_partitioned:
                continue
            for partition in instance.get_materialized_partitions(node.key):
                record = latest(instance, node.key, partition)
                materialization = record.asset_materialization
                tags, metadata = materialization.tags, materialization.metadata
                prefix = partition_prefix(node.key, parse_partition_key(node.partitions_def, partition))
                pointer = store.get_json(pointer_key(prefix))
                where = f"{node.key.to_user_string()} {partition}"
                assert tags[DATA_VERSION_TAG] == pointer["data_version"], where
                assert tags[CODE_VERSION_TAG] == node.code_version, where
                assert metadata["fingerprint"].value == pointer["fingerprint"], where
                manifest = read_manifest(store, prefix, pointer["fingerprint"])
                assert metadata["config"].value == manifest.provenance["config"], where

                table = metadata["upstream"].value.records if node.parent_keys else []
                rows = {(row.data["asset"], row.data["partition"]): row.data for row in table}
                for parent in node.parent_keys:
                    parent_node = graph.get(parent)
                    parents: list[str | None] = [None]
                    if parent_node.is_partitioned:
                        with partition_loading_context(dynamic_partitions_store=instance):
                            mapped = graph.get_parent_partition_keys_for_child(partition, parent, node.key)
                        parents = sorted(mapped.partitions_subset.get_partition_keys())
                    for parent_partition in parents:
                        upstream = latest(instance, parent, parent_partition)
                        version = upstream.asset_materialization.tags[DATA_VERSION_TAG]
                        assert rows[(parent.to_user_string(), parent_partition or "")]["data_version"] == version, where
                    if len(parents) == 1:
                        # Exactly what Dagster's staleness compares: the version and the event read.
                        assert tags[get_input_data_version_tag(parent)] == version, (where, parent)
                        assert tags[get_input_event_pointer_tag(parent)] == str(upstream.storage_id), where
                        link = metadata[f"upstream {parent.to_user_string()}"].value
                        assert link == f"{DAGSTER_UI}/assets/{parent.to_user_string()}" + (
                            f"?view=partitions&partition={quote(parents[0], safe='')}" if parents[0] else ""
                        ), where
                checked += 1
        # bars, features, predictions per symbol; labels .. models per symbol x target.
        assert checked == 2 * 3 + 2 * 2 * 4

        # MLflow and back: links built from this deployment's addresses, clickable in both UIs.
        model = latest(instance, dg.AssetKey(["models", "linear"]), "SIGNAL|y_up_1b").asset_materialization
        run_link = model.metadata["mlflow_run"].value
        assert run_link.startswith(f"{MLFLOW_UI}/#/experiments/") and run_link.endswith(
            model.metadata["mlflow_run_id"].value
        )
        tracker = resources["mlflow_tracking"].tracker()
        run = tracker.client.get_run(model.metadata["mlflow_run_id"].value)
        note = run.data.tags["mlflow.note.content"]
        dagster_run = run.data.tags["dagster_run_id"]
        assert f"({DAGSTER_UI}/runs/{dagster_run})" in note
        assert f"({DAGSTER_UI}/assets/models/linear?view=partitions&partition=SIGNAL%7Cy_up_1b)" in note
        # The registry as a table, each alias with its links; each model partition says whether it serves.
        registry = latest(instance, MODEL_REGISTRY, None).asset_materialization.metadata
        assert [column.name for column in registry["aliases"].value.schema.columns] == ALIAS_COLUMNS
        champions = [row.data for row in registry["aliases"].value.records if row.data["alias"] == "champion"]
        assert champions, "no cell has a champion"
        for row in champions:
            partition = f"{row['symbol']}|{row['target']}"
            model_prefix = partition_prefix(
                dg.AssetKey(["models", row["family"]]),
                parse_partition_key(graph.get(dg.AssetKey(["models", row["family"]])).partitions_def, partition),
            )
            assert row["fingerprint"] == store.get_json(pointer_key(model_prefix))["fingerprint"]
            name = registered_model_name(row["symbol"], row["target"])
            assert row["mlflow_version"] == f"{MLFLOW_UI}/#/models/{name}/versions/{row['version']}"
            assert (
                row["dagster_model"]
                == f"{DAGSTER_UI}/assets/models/{row['family']}?view=partitions&partition={quote(partition, safe='')}"
            )
            [observed] = instance.fetch_observations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(["models", row["family"]]), asset_partitions=[partition]),
                limit=1,
            ).records
            assert observed.asset_observation.metadata["serving"].value.startswith(
                f"yes: this model is {name} v{row['version']}"
            )
        # Tables carry their row count and column schema.
        features = latest(instance, FEATURES, "SIGNAL").asset_materialization.metadata
        stored = read_value(store, artifact_prefix(FEATURES, "SIGNAL"))
        assert features["dagster/row_count"].value == stored.height
        assert [column.name for column in features["dagster/column_schema"].value.columns] == stored.columns
        version = tracker.client.get_model_version(
            registered_model_name("SIGNAL", "y_up_1b"), run.data.tags["registered_version"]
        )
        assert f"({DAGSTER_UI}/runs/{dagster_run})" in version.description


def test_the_latest_materializations_of_more_partitions_than_dagster_fetches_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The leaderboard reads every symbol x target's models: 12,500 partitions at 500 symbols x 25
    targets, more than Dagster fetches in one query (10,000 by default, 5 here)."""
    monkeypatch.setenv("MAX_LIMIT_GET_EVENT_RECORDS", "5")
    models = dg.AssetKey(["models", "linear"])
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        for index in range(12):
            event = dg.AssetMaterialization(models, partition=f"S{index}|y", tags={DATA_VERSION_TAG: f"v{index}"})
            instance.report_runless_asset_event(event)
        instance.report_runless_asset_event(
            dg.AssetMaterialization(models, partition="S3|y", tags={DATA_VERSION_TAG: "rematerialized"})
        )
        reads = {(models, f"S{index}|y") for index in range(12)} | {(models, "NEVER|y")}
        latest = latest_materializations(instance, reads, partitions_per_query=4)
    versions = {partition: found.data_version for (_, partition), found in latest.items()}
    expected = {f"S{index}|y": f"v{index}" for index in range(12)} | {"S3|y": "rematerialized", "NEVER|y": None}
    assert versions == expected
