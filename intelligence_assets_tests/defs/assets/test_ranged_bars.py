"""`bars` over a partition range, as a backfill launches it: each symbol is read, checked,
committed and recorded on its own, a symbol whose blocking check fails or whose file is
unreadable fails alone, and nothing below a failed symbol runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionStatus

from intelligence_assets.config.universe import REPOSITORY_ROOT, load_universe
from intelligence_assets.definitions import build_assets
from intelligence_assets.defs.assets.caching import FAILED_PARTITIONS
from intelligence_assets.defs.assets.market_data import BARS, FEATURES
from intelligence_assets.defs.checks import bars_check_specs
from intelligence_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG, register_symbols, symbol_partitions
from intelligence_assets.store.artifact_store import ArtifactNotFoundError, LocalArtifactStore
from intelligence_assets.store.artifacts import ArtifactHandle, BlockedArtifactError, latest_failure
from intelligence_assets.store.keys import artifact_prefix
from intelligence_assets_tests.conftest import home_environment
from intelligence_assets_tests.support.backfill import STATUS_LINE, write_instance_config
from intelligence_assets_tests.support.broken_bars import write_universe_with_broken_bars
from intelligence_assets_tests.support.pipeline import cache_outcomes, local_resources

# In the partitions' order: each broken symbol sits between healthy ones, so a range covers it.
SYMBOLS = ["SIGNAL", "BROKEN", "GARBLED", "NOISE"]
HEALTHY = ["SIGNAL", "NOISE"]
CHECK_NAMES = {spec.name for spec in bars_check_specs(BARS, symbol_partitions)}


def _evaluations(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, dg.AssetCheckEvaluation]]:
    by_partition: dict[str, dict[str, dg.AssetCheckEvaluation]] = {}
    for evaluation in result.get_asset_check_evaluations():
        by_partition.setdefault(evaluation.partition or "-", {})[evaluation.check_name] = evaluation
    return by_partition


def test_a_ranged_bars_run_commits_each_healthy_symbol_and_fails_naming_the_broken_ones(tmp_path: Path) -> None:
    universe = load_universe(write_universe_with_broken_bars(tmp_path, SYMBOLS))
    resources = local_resources(tmp_path / "artifacts", universe)
    store = LocalArtifactStore(tmp_path / "artifacts")
    with dg.instance_for_test() as instance:
        register_symbols(instance, SYMBOLS)
        result = dg.materialize(
            build_assets(universe),
            selection=dg.AssetSelection.assets(BARS),
            instance=instance,
            resources=resources,
            tags={RANGE_START_TAG: SYMBOLS[0], RANGE_END_TAG: SYMBOLS[-1]},
            raise_on_error=False,
        )
        assert not result.success
        [failure] = result.get_step_failure_events()
        failed = failure.step_failure_data.user_failure_data.metadata[FAILED_PARTITIONS].value
        assert set(failed) == {"BROKEN", "GARBLED"}
        assert "prices_positive" in failed["BROKEN"] and "low <= 0" in failed["BROKEN"]
        assert "BarsFileError" in failed["GARBLED"] and "GARBLED.parquet" in failed["GARBLED"]

        # The healthy symbols are committed and recorded, each as its own materialization.
        assert cache_outcomes(result) == {("bars", symbol): "miss" for symbol in HEALTHY}
        for event in result.get_asset_materialization_events():
            symbol = event.materialization.partition
            handle = ArtifactHandle.current(store, artifact_prefix(BARS, symbol))
            assert event.materialization.metadata["fingerprint"].value == handle.fingerprint
            assert event.materialization.metadata["rows"].value == handle.load().height
            assert event.materialization.metadata["failed_checks"].value == "none"

        # Every readable symbol's checks are evaluated under its own partition, blocking as declared.
        evaluations = _evaluations(result)
        assert set(evaluations) == {"SIGNAL", "BROKEN", "NOISE"}
        assert all(set(checks) == CHECK_NAMES for checks in evaluations.values())
        assert all(evaluation.passed for symbol in HEALTHY for evaluation in evaluations[symbol].values())
        broken = evaluations["BROKEN"]["prices_positive"]
        assert not broken.passed and broken.blocking and "low <= 0" in (broken.description or "")
        assert [name for name, evaluation in evaluations["BROKEN"].items() if not evaluation.passed] == [
            "prices_positive"
        ]

        # The broken bars are stored, as a single-partition run stores them, but no run may build on them.
        with pytest.raises(BlockedArtifactError, match="prices_positive"):
            ArtifactHandle.current(store, artifact_prefix(BARS, "BROKEN"))
        assert "prices_positive" in latest_failure(store, artifact_prefix(BARS, "BROKEN"))["error"]
        with pytest.raises(ArtifactNotFoundError):
            ArtifactHandle.current(store, artifact_prefix(BARS, "GARBLED"))
        assert "cannot read bars parquet" in latest_failure(store, artifact_prefix(BARS, "GARBLED"))["error"]

        # A single-partition run (the UI, the new-bars sensor) finds what the range stored.
        single = dg.materialize(
            build_assets(universe),
            selection=dg.AssetSelection.assets(BARS),
            partition_key="SIGNAL",
            instance=instance,
            resources=resources,
        )
        assert cache_outcomes(single) == {("bars", "SIGNAL"): "hit"}
        assert {evaluation.check_name for evaluation in single.get_asset_check_evaluations()} == CHECK_NAMES


def test_a_backfill_runs_bars_in_ranges_and_stops_downstream_of_a_blocked_symbol_only(tmp_path: Path) -> None:
    """A backfill of `bars` and `features` through Dagster's backfill daemon logic
    (`support/backfill.py`): `bars` of every symbol in one run, then `features` of the healthy
    ones only."""
    symbols = ["SIGNAL", "BROKEN", "NOISE"]
    home = tmp_path / "home"
    home.mkdir()
    write_instance_config(home)
    environment = home_environment(home, write_universe_with_broken_bars(tmp_path / "universe", symbols))
    completed = subprocess.run(
        [sys.executable, "-m", "intelligence_assets_tests.support.backfill", "bars,features", ",".join(symbols)],
        cwd=REPOSITORY_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert f"{STATUS_LINE}{BulkActionStatus.COMPLETED_FAILED.value}" in completed.stdout, completed.stdout

    store = LocalArtifactStore(home / "artifacts")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = {
            (
                tuple(sorted(key.to_user_string() for key in run.asset_selection or [])),
                run.tags.get(RANGE_START_TAG),
            ): run
            for run in instance.get_runs()
        }
        bars_run = runs[(("bars",), "SIGNAL")]
        assert bars_run.tags[RANGE_END_TAG] == "NOISE" and bars_run.status == dg.DagsterRunStatus.FAILURE
        # Features of the healthy symbols only: no run covers BROKEN's.
        features_runs = [run for (assets, _), run in runs.items() if assets == ("features",)]
        covered = {
            symbol
            for run in features_runs
            for symbol in symbols[symbols.index(run.tags[RANGE_START_TAG]) : symbols.index(run.tags[RANGE_END_TAG]) + 1]
        }
        assert covered == {"SIGNAL", "NOISE"}
        assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in features_runs)
        assert len(runs) == 1 + len(features_runs)
        # BROKEN's bars are stored blocked but not recorded as materialized: nothing treats them as done.
        assert instance.get_materialized_partitions(BARS) == {"SIGNAL", "NOISE"}
        assert instance.get_materialized_partitions(FEATURES) == {"SIGNAL", "NOISE"}
    for symbol in ("SIGNAL", "NOISE"):
        assert ArtifactHandle.current(store, artifact_prefix(FEATURES, symbol)).load().height > 0
    with pytest.raises(BlockedArtifactError):
        ArtifactHandle.current(store, artifact_prefix(BARS, "BROKEN"))
    with pytest.raises(ArtifactNotFoundError):
        ArtifactHandle.current(store, artifact_prefix(FEATURES, "BROKEN"))
