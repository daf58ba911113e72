"""`make demo`'s market-data stage: `bars` and `features` in ranged runs, as their
BackfillPolicies launch them, with a broken symbol failing alone."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from intelligence_assets.cli.demo import UniverseRun, run_market_data_stage, symbol_ranges, worker_pool
from intelligence_assets.config.universe import load_universe
from intelligence_assets.definitions import MARKET_DATA_JOB, build_assets
from intelligence_assets.defs.assets.market_data import BARS, FEATURES
from intelligence_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG, register_symbols
from intelligence_assets.defs.planner import plan_runs
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.store.artifact_store import ArtifactNotFoundError, LocalArtifactStore
from intelligence_assets.store.artifacts import ArtifactHandle
from intelligence_assets.store.keys import artifact_prefix
from intelligence_assets_tests.conftest import fresh_home, home_environment
from intelligence_assets_tests.support.broken_bars import write_universe_with_broken_bars


def test_symbols_are_cut_into_equal_runs_a_multiple_of_the_workers() -> None:
    ordered = [f"S{index:03d}" for index in range(500)]
    runs = symbol_ranges(ordered, set(ordered), 100, workers=2)
    assert len(runs) == 6  # not 5 runs of 100: one worker would run three while the other runs two
    assert [ordered.index(end) - ordered.index(start) + 1 for start, end in runs] == [84] * 5 + [80]
    assert symbol_ranges(ordered, set(ordered), 100, workers=1) == [
        (ordered[index], ordered[index + 99]) for index in range(0, 500, 100)
    ]
    # Two symbols on two workers: one each. Symbols left out split the ranges around them.
    assert symbol_ranges(["A", "B"], {"A", "B"}, 100, workers=2) == [("A", "A"), ("B", "B")]
    assert symbol_ranges(["A", "B", "C", "D"], {"A", "B", "D"}, 100, workers=1) == [("A", "B"), ("D", "D")]
    assert symbol_ranges(["A", "B"], set(), 100, workers=2) == []


def test_the_market_data_stage_runs_ranges_and_a_symbol_with_broken_bars_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    symbols = ["SIGNAL", "BROKEN", "NOISE"]
    universe_path = write_universe_with_broken_bars(tmp_path / "universe", symbols)
    home = fresh_home(tmp_path)
    for name, value in home_environment(home, universe_path).items():
        monkeypatch.setenv(name, value)
    universe = load_universe(universe_path)
    deployment = Deployment.from_environment()
    store = LocalArtifactStore(home / "artifacts")
    assets = build_assets(universe)
    outcome = UniverseRun(market_data_assets=frozenset({BARS.to_user_string(), FEATURES.to_user_string()}))
    with dg.DagsterInstance.get() as instance:
        register_symbols(instance, symbols)
        with worker_pool(1) as pool:
            run_market_data_stage(
                pool,
                MARKET_DATA_JOB,
                symbols,
                symbols,
                100,
                1,
                "WARNING",
                outcome,
                lambda: plan_runs(universe, store, assets, symbols, deployment.bars_source(universe)).partitions(
                    [BARS.to_user_string(), FEATURES.to_user_string()]
                ),
            )
        runs = [record.dagster_run for record in sorted(instance.get_run_records(), key=lambda r: r.create_timestamp)]

    # One run over every symbol: BROKEN's blocking check fails its bars and Dagster skips the
    # run's features step; a second round runs the healthy symbols' features (their bars hits).
    assert [(failure.symbol, failure.asset) for failure in outcome.failures] == [("BROKEN", "bars")]
    assert "prices_positive" in outcome.failures[0].reason
    assert outcome.failed_symbols == {"BROKEN"}
    assert [(run.tags[RANGE_START_TAG], run.tags[RANGE_END_TAG]) for run in runs] == [
        ("SIGNAL", "NOISE"),
        ("SIGNAL", "SIGNAL"),
        ("NOISE", "NOISE"),
    ]
    assert [stage.runs for stage in outcome.stages] == [1, 2]
    assert outcome.stages[1].cache == {"hit": 2, "miss": 2}  # bars found, features computed
    for symbol in ("SIGNAL", "NOISE"):
        assert ArtifactHandle.current(store, artifact_prefix(FEATURES, symbol)).load().height > 0
    with pytest.raises(ArtifactNotFoundError):
        ArtifactHandle.current(store, artifact_prefix(FEATURES, "BROKEN"))
