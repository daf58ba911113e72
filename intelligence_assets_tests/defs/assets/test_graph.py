"""The whole asset graph through `dagster.materialize` on a small synthetic universe, with the
real local artifact store and a real (temporary) Dagster instance."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from intelligence_assets.config.universe import Universe, load_universe
from intelligence_assets.definitions import build_assets, build_definitions
from intelligence_assets.defs.assets.leaderboard import MODEL_LEADERBOARD
from intelligence_assets.defs.assets.market_data import BARS, FEATURES
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.predictions import PREDICTIONS
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.defs.assets.target_analysis import LABELS, TARGET_ANALYSIS_ASSETS, TARGET_RANKINGS
from intelligence_assets.defs.partitions import register_symbols
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import ArtifactHandle, BlockedArtifactError, read_manifest, read_value
from intelligence_assets.store.keys import artifact_prefix, file_key, manifest_key
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.pipeline import MODEL_SELECTION, local_resources, materialize_everything


@pytest.fixture(scope="module")
def materialized(small_universe: Universe, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("artifacts")
    with dg.instance_for_test() as instance:
        materialize_everything(small_universe, instance, local_resources(root, small_universe))
        yield instance, LocalArtifactStore(root)


def test_definitions_load_with_every_stage(small_universe: Universe, tmp_path: Path) -> None:
    defs = build_definitions(small_universe, Deployment(artifact_root=tmp_path))
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    # Spelled out: an asset's key names its folder in the store and its history in the instance,
    # so a store or instance written by an earlier version must still find these.
    assert keys == {
        "bars",
        "features",
        "labels",
        "target_rankings",
        "feature_sets",
        "model_leaderboard",
        "model_registry",
        "predictions",
        "checkpoint_retention",
        "storage_usage",
        "models/linear",
        "models/lightgbm",
        "models/xgboost",
        "models/torch_mlp",
    }
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).code_version, f"{key.to_user_string()} has no code_version"


def test_layout_follows_asset_symbol_target_fingerprint(materialized) -> None:
    _, store = materialized
    # The file names spelled out: those a store written by an earlier version has. The keys around
    # them are built here; the asset keys are pinned above, the layout by store/test_keys.py.
    expected = {
        artifact_prefix(BARS, "SIGNAL"): "data.parquet",
        artifact_prefix(FEATURES, "NOISE"): "data.parquet",
        artifact_prefix(LABELS, "SIGNAL", "y_up_1b"): "data.parquet",
        artifact_prefix(TARGET_RANKINGS, "SIGNAL", "y_up_1b"): "result.json",
        artifact_prefix(model_key("lightgbm"), "SIGNAL", "y_up_1b"): "model/model.txt",
        artifact_prefix(model_key("torch_mlp"), "SIGNAL", "y_up_1b"): "model/model.pt",
        artifact_prefix(MODEL_LEADERBOARD): "data.parquet",
        artifact_prefix(PREDICTIONS, "SIGNAL"): "data.parquet",
    }
    for prefix, file in expected.items():
        handle = ArtifactHandle.current(store, prefix)
        assert store.exists(manifest_key(prefix, handle.fingerprint)), prefix
        assert file in read_manifest(store, prefix, handle.fingerprint).files, prefix
        # A table is its own Parquet object; a small result or model rides in its manifest.
        assert store.exists(file_key(prefix, handle.fingerprint, file)) == (file == "data.parquet"), prefix


def test_ranking_gates_training_and_says_why(materialized) -> None:
    instance, store = materialized
    planted = read_value(store, artifact_prefix(TARGET_RANKINGS, "SIGNAL", "y_up_1b"))
    noise = read_value(store, artifact_prefix(TARGET_RANKINGS, "NOISE", "y_up_1b"))
    assert planted["passed"], planted["reason"]
    assert not noise["passed"], noise["reason"]
    gated_model = read_value(store, artifact_prefix(model_key("xgboost"), "NOISE", "y_up_1b"))
    assert not gated_model.trained and "not trained" in gated_model.summary["reason"]
    # The decision and its score are visible in the UI as metadata.
    key = dg.MultiPartitionKey({"symbol": "NOISE", "target": "y_up_1b"})
    event = instance.get_latest_materialization_event(model_key("xgboost"))
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=model_key("xgboost"), asset_partitions=[key]), limit=1
    ).records
    metadata = records[0].asset_materialization.metadata
    assert metadata["trained"].value is False and "below" in metadata["decision"].value
    assert event is not None
    ranking_metadata = (
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=TARGET_RANKINGS, asset_partitions=[key]), limit=1
        )
        .records[0]
        .asset_materialization.metadata
    )
    assert ranking_metadata["passed"].value is False and "score" in ranking_metadata


def test_leaderboard_proposes_one_candidate_per_trained_cell(materialized, small_universe: Universe) -> None:
    _, store = materialized
    leaderboard = read_value(store, artifact_prefix(MODEL_LEADERBOARD))
    assert leaderboard.height == len(small_universe.symbols) * len(small_universe.targets) * len(
        small_universe.model_families
    )
    trained_cells = leaderboard.filter(pl.col("trained")).select("symbol", "target").unique()
    candidates = leaderboard.filter(pl.col("candidate"))
    assert candidates.select("symbol", "target").unique().height == candidates.height
    assert candidates.height <= trained_cells.height
    assert candidates["eligible"].all()
    signal = leaderboard.filter((pl.col("symbol") == "SIGNAL") & (pl.col("target") == "y_up_1b") & pl.col("trained"))
    assert signal.height == len(small_universe.model_families)
    # The planted signal is found on held-out data by the candidate.
    assert signal.filter(pl.col("candidate"))["auc"][0] > 0.55


def _check_evaluation(instance: dg.DagsterInstance, asset: dg.AssetKey, partition: str):
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(asset, "leakage_sentinel"), limit=100
    )
    evaluations = [
        r.event.dagster_event.event_specific_data
        for r in records
        if r.partition == partition and r.event and r.event.dagster_event
    ]
    evaluations = [e for e in evaluations if isinstance(e, dg.AssetCheckEvaluation)]
    assert evaluations, f"no leakage_sentinel evaluation for {asset.to_user_string()} {partition}"
    return evaluations[0]


def test_model_metadata_and_leakage_sentinel(materialized) -> None:
    instance, _ = materialized
    key = dg.MultiPartitionKey({"symbol": "SIGNAL", "target": "y_up_1b"})
    asset = model_key("lightgbm")
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[key]), limit=1
    ).records[0]
    metadata = record.asset_materialization.metadata
    for name in (
        "auc",
        "accuracy",
        "log_loss",
        "sharpe",
        "feature_count",
        "train_rows",
        "test_rows",
        "test_period",
        "seed",
    ):
        assert name in metadata, name
    # Below the (test universe's relaxed) bar the sentinel passes.
    assert _check_evaluation(instance, asset, str(key)).passed


def test_a_ranged_training_run_stores_what_per_cell_runs_store(
    materialized, small_universe: Universe, tmp_path: Path
) -> None:
    """The fixture trains one ranged run per symbol; one run per cell must give the same artifacts."""
    ranged_instance, ranged_store = materialized
    with dg.instance_for_test() as instance:
        materialize_everything(
            small_universe, instance, local_resources(tmp_path, small_universe), ranged_training=False
        )
    per_cell_store = LocalArtifactStore(tmp_path)
    assets = [*TARGET_ANALYSIS_ASSETS, *[model_key(family) for family in small_universe.model_families]]
    for asset in assets:
        for symbol in small_universe.symbols:
            for target in small_universe.target_names:
                prefix = artifact_prefix(asset, symbol, target)
                assert (
                    ArtifactHandle.current(per_cell_store, prefix).fingerprint
                    == ArtifactHandle.current(ranged_store, prefix).fingerprint
                ), prefix
    # The ranged runs report every cell's leakage sentinel as that cell's own evaluation.
    for family in small_universe.model_families:
        for symbol in small_universe.symbols:
            for target in small_universe.target_names:
                _check_evaluation(ranged_instance, model_key(family), f"{symbol}|{target}")
    runs = ranged_instance.get_run_records(
        filters=dg.RunsFilter(tags={"dagster/asset_partition_range_start": f"SIGNAL|{small_universe.target_names[0]}"})
    )
    assert len(runs) == 1, "one training run per symbol"


def test_leakage_sentinel_fails_too_good_direction_models(tmp_path: Path) -> None:
    # Default thresholds (real daily bars): the planted synthetic signal is too good to be true.
    path = write_small_universe(
        tmp_path, families={"linear": {"params": {}}}, leakage_sentinel={"max_auc": 0.56, "max_ic": 0.1}
    )
    universe = load_universe(path)
    assets = build_assets(universe)
    resources = Deployment(artifact_root=tmp_path / "artifacts").resources(universe)
    key = dg.MultiPartitionKey({"symbol": "SIGNAL", "target": "y_up_1b"})
    with dg.instance_for_test() as instance:
        register_symbols(instance, ["SIGNAL"])
        assert dg.materialize(
            assets,
            selection=dg.AssetSelection.assets(BARS, FEATURES),
            partition_key="SIGNAL",
            instance=instance,
            resources=resources,
        ).success
        result = dg.materialize(
            assets,
            selection=MODEL_SELECTION,
            partition_key=key,
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        evaluation = _check_evaluation(instance, model_key("linear"), str(key))
        assert not evaluation.passed
        assert "too good to be true" in (evaluation.description or "")
        assert result.success  # a failed non-blocking check flags the model; it does not fail the run
        model = read_value(
            LocalArtifactStore(tmp_path / "artifacts"), artifact_prefix(model_key("linear"), "SIGNAL", "y_up_1b")
        )
        assert model.summary["leakage_suspect"] is True


def test_predictions_cover_champions_up_to_the_newest_bar(materialized) -> None:
    _, store = materialized
    predictions = read_value(store, artifact_prefix(PREDICTIONS, "SIGNAL"))
    bars = read_value(store, artifact_prefix(BARS, "SIGNAL"))
    assert predictions.height > 0
    assert predictions["timestamp"].max() == bars["timestamp"].max()


def test_bad_bars_block_downstream_with_a_named_check(tmp_path: Path) -> None:
    path = write_small_universe(tmp_path, families={"linear": {"params": {}}}, n_bars=700)
    universe = load_universe(path)
    bars = pl.read_parquet(tmp_path / "bars" / "NOISE.parquet")
    bars.with_columns(
        pl.when(pl.int_range(pl.len()) == 300).then(-1.0).otherwise(pl.col("low")).alias("low")
    ).write_parquet(tmp_path / "bars" / "NOISE.parquet")
    resources = Deployment(artifact_root=tmp_path / "artifacts").resources(universe)
    with dg.instance_for_test() as instance:
        register_symbols(instance, universe.symbols)
        result = dg.materialize(
            build_assets(universe),
            selection=dg.AssetSelection.assets(BARS, FEATURES),
            partition_key="NOISE",
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        assert not result.success
        failed_checks = [e for e in result.get_asset_check_evaluations() if not e.passed]
        assert {c.check_name for c in failed_checks} >= {"prices_positive"}
        store = LocalArtifactStore(tmp_path / "artifacts")
        assert not store.list_keys(artifact_prefix(FEATURES, "NOISE"))
        # Dagster stored the bars before the blocking check failed; no later run may use them.
        key = dg.MultiPartitionKey({"symbol": "NOISE", "target": "y_up_1b"})
        later = dg.materialize(
            build_assets(universe),
            selection=dg.AssetSelection.assets(LABELS),
            partition_key=key,
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        assert not later.success
        failure = later.get_step_failure_events()[0].step_failure_data.error
        assert "failed blocking checks" in str(failure.cause or failure.message) + failure.message
        with pytest.raises(BlockedArtifactError, match="prices_positive"):
            ArtifactHandle.current(store, artifact_prefix(BARS, "NOISE"))


def test_a_symbol_without_a_bars_file_fails_naming_where_the_file_was_expected(
    small_universe: Universe, tmp_path: Path
) -> None:
    resources = Deployment(artifact_root=tmp_path).resources(small_universe)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("symbol", ["TSLA"])
        with pytest.raises(FileNotFoundError, match=r"no bars for symbol 'TSLA': expected .*TSLA\.parquet"):
            dg.materialize(
                build_assets(small_universe),
                selection=dg.AssetSelection.assets(BARS),
                partition_key="TSLA",
                instance=instance,
                resources=resources,
            )


def test_candidate_must_beat_no_skill_and_the_sentinel(small_universe: Universe) -> None:
    from intelligence_assets.cells.leaderboard import leaderboard_rows

    def model(family: str, auc: float, suspect: bool = False) -> dict:
        return {
            "symbol": "A",
            "target": "y_up_1b",
            "task": "classification",
            "trained": True,
            "metrics": {"auc": auc},
            "leakage_suspect": suspect,
        }

    rows = leaderboard_rows(
        {"linear": {"k": model("linear", 0.49)}, "lightgbm": {"k": model("lightgbm", 0.47)}}, small_universe
    )
    assert not any(row["candidate"] or row["eligible"] for row in rows)
    rows = leaderboard_rows(
        {"linear": {"k": model("linear", 0.53)}, "lightgbm": {"k": model("lightgbm", 0.60, suspect=True)}},
        small_universe,
    )
    assert [row["family"] for row in rows if row["candidate"]] == ["linear"]
    assert [row["family"] for row in rows if row["eligible"]] == ["linear"]


def test_leaderboard_ranks_the_current_model_versions(materialized) -> None:
    _, store = materialized
    leaderboard = read_value(store, artifact_prefix(MODEL_LEADERBOARD))
    for row in leaderboard.filter(pl.col("trained")).iter_rows(named=True):
        handle = ArtifactHandle.current(store, artifact_prefix(model_key(row["family"]), row["symbol"], row["target"]))
        assert row["model_fingerprint"] == handle.fingerprint


def test_embedded_mlflow_store_tracks_every_model_and_make_mlflow_ui_serves_it(
    materialized, small_universe: Universe
) -> None:
    """No server during training: runs and the registry land in SQLite inside the artifact store,
    and `make mlflow-ui` browses them."""
    import json
    import os
    import signal
    import subprocess
    import time
    import urllib.request

    from mlflow import MlflowClient

    from intelligence_assets.config.universe import REPOSITORY_ROOT
    from intelligence_assets_tests.support.services import free_port

    instance, store = materialized
    database = Path(store.location.removeprefix("file://")) / "mlflow" / "mlflow.db"
    assert database.exists()
    client = MlflowClient(f"sqlite:///{database}")
    model_runs = sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments())
    assert model_runs == len(small_universe.symbols) * len(small_universe.targets) * len(small_universe.model_families)
    registry = read_value(store, artifact_prefix(MODEL_REGISTRY))
    champion = registry.filter(pl.col("champion_version").is_not_null()).row(0, named=True)

    port = free_port()
    environment = {**os.environ, "INTELLIGENCE_ARTIFACT_ROOT": str(database.parent.parent), "MLFLOW_UI_PORT": str(port)}
    process = subprocess.Popen(
        ["make", "--no-print-directory", "mlflow-ui"],
        cwd=REPOSITORY_ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/registered-models/alias?name={champion['registered_model']}&alias=champion"
        deadline, answer = time.monotonic() + 90, None
        while time.monotonic() < deadline and answer is None:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    answer = json.loads(response.read())
            except OSError:
                time.sleep(0.5)
        assert answer is not None, "make mlflow-ui did not serve the embedded store within 90 s"
        assert answer["model_version"]["version"] == champion["champion_version"]
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
