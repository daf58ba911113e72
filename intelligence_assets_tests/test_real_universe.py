"""A real universe: new symbols, odd series and one broken symbol never stop the platform.

Built on series with the shapes real users bring (intelligence_assets_tests/support/real_series.py):
hourly FX with weekends closed, 5-minute index bars with zero volume, a decade-long hole, a
constant price, empty and header-only files, and a universe symbol with no file at all.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from intelligence_assets.config.universe import REPOSITORY_ROOT, load_universe
from intelligence_assets.defs.assets.caching import stored_metadata_values
from intelligence_assets.defs.assets.leaderboard import MODEL_LEADERBOARD
from intelligence_assets.defs.assets.market_data import FEATURES, read_symbol_bars
from intelligence_assets.defs.assets.models import model_config, model_key
from intelligence_assets.defs.assets.predictions import PREDICTIONS
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.ml.bars import (
    BarsFileError,
    GapSettings,
    infer_bars_per_year,
    long_gaps,
    read_bars_parquet,
    validate_bars,
)
from intelligence_assets.ml.features import (
    FeatureSettings,
    TooFewUsableRowsError,
    build_features,
    drop_unusable_features,
    require_enough_rows,
)
from intelligence_assets.store.artifact_store import ArtifactNotFoundError, LocalArtifactStore
from intelligence_assets.store.artifacts import TABLE_FILE, ArtifactHandle, read_manifest, read_value
from intelligence_assets.store.bars_source import LocalBarsSource
from intelligence_assets.store.keys import artifact_prefix, file_key
from intelligence_assets.tracking.promotion import Candidate, PromotionSettings, retire
from intelligence_assets_tests.conftest import fresh_home, home_environment, write_small_universe
from intelligence_assets_tests.support.real_series import (
    constant_price_bars,
    daily_bars_with_hole,
    five_minute_zero_volume_bars,
    hourly_fx_bars,
    write_empty_file,
    write_header_only_file,
)

# ------------------------------------------------------------------ bars: frequency, gaps, empty files


def test_bars_per_year_is_inferred_from_each_series_own_timestamps() -> None:
    settings = GapSettings()
    assert infer_bars_per_year(hourly_fx_bars()["timestamp"], settings) == pytest.approx(24 * 5 * 52.18, rel=0.03)
    assert infer_bars_per_year(five_minute_zero_volume_bars()["timestamp"], settings) == pytest.approx(
        78 * 5 * 52.18, rel=0.03
    )
    bundled = read_bars_parquet(REPOSITORY_ROOT / "data" / "bars" / "SP500.parquet")
    assert infer_bars_per_year(bundled["timestamp"], settings) == pytest.approx(252, rel=0.01)
    # A hole is missing data, not the market's rhythm: it does not dilute the count.
    assert infer_bars_per_year(daily_bars_with_hole()["timestamp"], settings) == pytest.approx(261, rel=0.01)


def test_a_long_gap_fails_the_gap_check_naming_start_end_and_size_while_weekends_and_nights_pass() -> None:
    checks = {check.name: check for check in validate_bars(daily_bars_with_hole(), min_history=500)}
    gap = checks["no_long_gaps"]
    assert not gap.passed and gap.failing_rows == 1
    assert "1995-09-29" in gap.detail and "2005-09-30" in gap.detail and "3654.0 days" in gap.detail
    for series in (
        hourly_fx_bars(),
        five_minute_zero_volume_bars(),
        read_bars_parquet(REPOSITORY_ROOT / "data" / "bars" / "MSFT.parquet"),
    ):
        assert long_gaps(series["timestamp"], GapSettings()) == []
        assert all(check.passed for check in validate_bars(series, min_history=500)), [
            c for c in validate_bars(series, 500) if not c.passed
        ]


def _bars_every(every: str, trades: str, start: datetime, end: datetime, zone: str = "UTC") -> pl.Series:
    """Timestamps of a market's rhythm: `trades` is "session" (09:30-16:00 New York, weekdays, so
    UTC times move with daylight saving), "weekdays" or "always" (24x7)."""
    times = pl.datetime_range(start, end, every, eager=True, time_zone=zone)
    if trades == "session":
        times = times.filter(
            (times.dt.weekday() <= 5) & (times.dt.time() >= time(9, 30)) & (times.dt.time() < time(16))
        )
    elif trades == "weekdays":
        times = times.filter(times.dt.weekday() <= 5)
    return times.dt.convert_time_zone("UTC")


def _without(times: pl.Series, first: date, after_last: date) -> pl.Series:
    start, end = (datetime.combine(day, time(), tzinfo=UTC) for day in (first, after_last))
    return times.filter((times < start) | (times >= end))


FIVE_MINUTE_SESSION = _bars_every("5m", "session", datetime(2022, 1, 3), datetime(2023, 1, 1), "America/New_York")
FIFTEEN_MINUTE_CRYPTO = _bars_every("15m", "always", datetime(2022, 1, 3), datetime(2022, 7, 1))
DAILY_STOCK = _bars_every("1d", "weekdays", datetime(2000, 1, 3), datetime(2010, 1, 1))
WEEKLY = _bars_every("1w", "always", datetime(2000, 1, 7), datetime(2020, 1, 1))


@pytest.mark.parametrize(
    ("times", "trading_days_missing"),
    [
        (_without(FIVE_MINUTE_SESSION, date(2022, 6, 6), date(2022, 6, 13)), 5),  # a week of 5-minute bars
        (_without(FIFTEEN_MINUTE_CRYPTO, date(2022, 3, 8), date(2022, 3, 17)), 9),  # 9 days of 24x7 bars
        (_without(DAILY_STOCK, date(2004, 3, 8), date(2004, 3, 22)), 10),  # two weeks of daily bars
        (_without(WEEKLY, date(2010, 1, 1), date(2011, 1, 1)), 53),  # a year of weekly bars
    ],
    ids=["5-minute session, a week", "15-minute 24x7, 9 days", "daily, two weeks", "weekly, a year"],
)
def test_a_stretch_of_missing_bars_is_flagged_at_any_frequency(times: pl.Series, trading_days_missing: int) -> None:
    [gap] = long_gaps(times, GapSettings())
    assert gap.trading_days == pytest.approx(trading_days_missing, abs=0.2)


@pytest.mark.parametrize(
    "times",
    [
        FIVE_MINUTE_SESSION,  # nights, weekends and daylight saving time moving the session in UTC
        _without(FIVE_MINUTE_SESSION, date(2022, 7, 4), date(2022, 7, 5)),  # a holiday
        FIFTEEN_MINUTE_CRYPTO,
        _without(DAILY_STOCK, date(2001, 9, 11), date(2001, 9, 17)),  # a four-day market closure
        WEEKLY,
    ],
    ids=["5-minute session", "5-minute session, a holiday", "15-minute 24x7", "daily, 4-day closure", "weekly"],
)
def test_a_markets_own_rhythm_is_not_a_gap(times: pl.Series) -> None:
    assert long_gaps(times, GapSettings()) == []


@pytest.mark.parametrize("write", [write_empty_file, write_header_only_file])
def test_an_empty_or_header_only_file_names_the_symbol_the_path_and_0_rows(tmp_path: Path, write) -> None:
    path = write(tmp_path / "EMPTY.parquet")
    with pytest.raises(BarsFileError) as raised:
        read_symbol_bars(LocalBarsSource(tmp_path), "EMPTY")
    assert "EMPTY" in str(raised.value) and str(path) in str(raised.value) and "0 rows" in str(raised.value)


def test_capitalised_column_names_are_named_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "CAPS.parquet"
    hourly_fx_bars(bars=50).rename(lambda name: name.capitalize()).write_parquet(path)
    with pytest.raises(BarsFileError, match=r"lack column.*found \['Timestamp', 'Open'.*case-sensitive"):
        read_bars_parquet(path)


# ------------------------------------------------------------------ features the symbol cannot use


def test_zero_volume_features_are_dropped_and_the_rest_stays_usable() -> None:
    usable = drop_unusable_features(build_features(five_minute_zero_volume_bars(), FeatureSettings()))
    assert set(usable.dropped) == {"volume_z_21", "volume_z_63", "volume_ratio_5_21", "signed_volume"}
    assert all(reason == "null on every bar" for reason in usable.dropped.values())
    assert usable.names and not set(usable.names) & set(usable.dropped)
    require_enough_rows(usable, minimum_rows=1000, symbol="INDEX")  # raises if too few
    assert usable.complete_rows > 2000


@pytest.mark.parametrize(
    "volume",
    [
        pl.when(pl.int_range(pl.len()) % 300 == 5).then(1000.0).otherwise(0.0),  # a print now and then
        pl.when(pl.int_range(pl.len()) < pl.len() // 2).then(0.0).otherwise(1000.0 + pl.int_range(pl.len())),  # late
    ],
    ids=["volume on one bar in 300", "volume from halfway"],
)
def test_mostly_null_volume_features_are_dropped_so_the_index_trains_on_the_rest(volume: pl.Expr) -> None:
    bars = five_minute_zero_volume_bars(bars=3000).with_columns(volume.alias("volume"))
    usable = drop_unusable_features(build_features(bars, FeatureSettings()))
    assert {"volume_z_21", "signed_volume"} <= set(usable.dropped)
    assert all("bars (more than 25%)" in usable.dropped[name] for name in ("volume_z_21", "signed_volume"))
    assert len(usable.names) >= 25
    require_enough_rows(usable, minimum_rows=2500, symbol="INDEX")  # raises if too few


def test_a_constant_price_fails_in_features_naming_the_columns() -> None:
    usable = drop_unusable_features(build_features(constant_price_bars(), FeatureSettings()))
    with pytest.raises(
        TooFewUsableRowsError,
        match=r"FLAT: no usable feature left of 34: each is null or constant.*ret_1: constant \(0\)",
    ):
        require_enough_rows(usable, minimum_rows=500, symbol="FLAT")


def test_too_few_complete_rows_name_the_row_counts_and_the_sparsest_columns() -> None:
    usable = drop_unusable_features(build_features(hourly_fx_bars(bars=700), FeatureSettings()))
    with pytest.raises(
        TooFewUsableRowsError,
        match=r"FX: \d+ complete rows of 700 bars, at least 900 needed.*ret_63 \(63 null\).*"
        r"dropped as unusable: ma_gap_200: null on 199 of 700 bars",
    ):
        require_enough_rows(usable, minimum_rows=900, symbol="FX")


# ------------------------------------------------------------------ per-symbol frequency in fingerprints


def test_one_symbols_bars_per_year_is_in_its_own_models_config_only(tmp_path: Path) -> None:
    path = write_small_universe(tmp_path)
    before = load_universe(path)
    config = yaml.safe_load(path.read_text())
    config["bars"]["bars_per_year"] = {"SIGNAL": 6240}
    path.write_text(yaml.safe_dump(config))
    after = load_universe(path)
    assert model_config(before, "linear", "NOISE", "y_up_1b") == model_config(after, "linear", "NOISE", "y_up_1b")
    assert model_config(before, "linear", "SIGNAL", "y_up_1b") != model_config(after, "linear", "SIGNAL", "y_up_1b")


# ------------------------------------------------------------------ retiring a champion


def test_a_champion_is_retired_without_a_previous_champion_and_never_becomes_one() -> None:
    settings = PromotionSettings()
    lone = retire([], {"champion": "3"}, settings, "trained on bars since replaced")
    assert (lone.champion, lone.previous_champion, lone.action) == (None, None, "retired")
    assert "no champion" in lone.reason
    other = Candidate(version="5", family="linear", score=0.53, test_rows=400, eligible=True)
    replaced = retire([other], {"champion": "3", "previous-champion": "1"}, settings, "not current")
    assert (replaced.champion, replaced.previous_champion) == ("5", "1")


# ------------------------------------------------------------------ make demo with a broken universe


def _demo(home: Path, universe_path: Path) -> subprocess.CompletedProcess:
    environment = home_environment(home, universe_path)
    return subprocess.run(
        [sys.executable, "-m", "intelligence_assets.cli.demo", "--workers", "2"],
        cwd=home,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def broken_universe(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    directory = tmp_path_factory.mktemp("real_universe")
    path = write_small_universe(
        directory,
        families={
            "linear": {"params": {}},
            "lightgbm": {"params": {"num_boost_round": 40}},
            "torch_mlp": {"params": {"max_epochs": 3, "hidden_sizes": [8]}},
        },
    )
    bars = directory / "bars"
    five_minute_zero_volume_bars().write_parquet(bars / "INDEX.parquet")
    constant_price_bars().write_parquet(bars / "FLAT.parquet")
    daily_bars_with_hole().write_parquet(bars / "HOLE.parquet")
    write_header_only_file(bars / "HOLLOW.parquet")
    (bars / "GARBLED.parquet").write_bytes(b"not parquet at all")
    config = yaml.safe_load(path.read_text())
    config["symbols"] = ["SIGNAL", "INDEX", "FLAT", "HOLE", "HOLLOW", "GARBLED", "NOFILE"]
    path.write_text(yaml.safe_dump(config))
    home = fresh_home(directory)
    return home, path, _demo(home, path)


def test_demo_finishes_every_healthy_symbol_prints_the_leaderboard_and_a_failure_summary_then_fails(
    broken_universe, monkeypatch
) -> None:
    home, _, completed = broken_universe
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    assert "Traceback" not in output, output
    assert "All trained models" in completed.stdout and "Failed:" in completed.stdout, output
    summary = completed.stdout[completed.stdout.index("Failed:") :]
    for symbol, asset, words in [
        ("FLAT", "features", "no usable feature"),
        ("HOLE", "bars", "no_long_gaps"),
        ("HOLLOW", "bars", "0 rows"),
        ("GARBLED", "bars", "cannot read bars parquet"),
        ("NOFILE", "bars", "no bars file"),
    ]:
        lines = [line for line in summary.splitlines() if f" {symbol} " in line or line.startswith(f"│ {symbol}")]
        assert any(asset in line and words in line for line in lines), (symbol, summary)
    store = LocalArtifactStore(home / "artifacts")
    leaderboard = read_value(store, artifact_prefix(MODEL_LEADERBOARD))
    assert set(leaderboard["symbol"]) == {"SIGNAL", "INDEX"}
    index = leaderboard.filter(pl.col("symbol") == "INDEX")
    # The zero-volume index trains every family on the features it has.
    assert set(index.filter(pl.col("trained"))["family"]) == {"linear", "lightgbm", "torch_mlp"}, index
    assert index["bars_per_year"].min() > 15_000 and set(index["bar_spacing"]) == {"5m"}
    assert leaderboard.filter(pl.col("symbol") == "SIGNAL")["bars_per_year"].max() < 400
    features = ArtifactHandle.current(store, artifact_prefix(FEATURES, "INDEX"))
    assert "volume_z_21" not in features.load().columns
    assert read_value(store, artifact_prefix(PREDICTIONS, "SIGNAL")).height > 0
    # Leaderboard and registry were computed from what exists and say what is missing, and why.
    for asset in ("model_leaderboard", "model_registry"):
        notes = read_manifest(store, asset, ArtifactHandle.current(store, asset).fingerprint).metadata
        assert notes["missing_models"] == 4 * 2 * 3, notes  # FLAT, HOLE, HOLLOW, GARBLED x 2 targets x 3 families
        reasons = " ".join(record.data["reason"] for record in stored_metadata_values(notes)["missing"].value.records)
        assert "no usable feature" in reasons and "no_long_gaps" in reasons
    # The symbol without a file was never registered as a partition.
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml places storage under it
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert "NOFILE" not in instance.get_dynamic_partitions("symbol")


def test_a_rerun_heals_a_corrupt_artifact_it_would_reuse(broken_universe) -> None:
    home, path, _ = broken_universe
    store = LocalArtifactStore(home / "artifacts")
    features = ArtifactHandle.current(store, artifact_prefix(FEATURES, "SIGNAL"))
    damaged = store.root / file_key(features.prefix, features.fingerprint, TABLE_FILE)
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"0123456789")
    completed = _demo(home, path)
    assert "features SIGNAL: stored artifact unusable" in completed.stdout, completed.stdout + completed.stderr
    assert features.load().height > 0  # recomputed under the same fingerprint, intact again
    failed_symbols = {
        line.split()[1]
        for line in completed.stdout[completed.stdout.index("Failed:") :].splitlines()
        if line.startswith("│")
    }
    assert "SIGNAL" not in failed_symbols and "INDEX" not in failed_symbols


# ------------------------------------------------------------------ registry and leaderboard over a real graph


@pytest.fixture(scope="module")
def materialized_signal(tmp_path_factory: pytest.TempPathFactory):
    from intelligence_assets_tests.support.pipeline import MaterializedUniverse

    with MaterializedUniverse.built(
        tmp_path_factory.mktemp("signal"),
        lambda folder: write_small_universe(folder, families={"linear": {"params": {}}}, symbols=["SIGNAL"]),
    ) as universe:
        yield universe


@pytest.fixture
def trained_signal(materialized_signal):
    """SIGNAL alone, linear only, materialized end to end with a champion."""
    with materialized_signal.restored() as (instance, resources):
        path = materialized_signal.universe_path
        yield path, load_universe(path), instance, resources, LocalArtifactStore(materialized_signal.artifacts)


def _champions(store: LocalArtifactStore) -> dict[str, str]:
    registry = read_value(store, artifact_prefix(MODEL_REGISTRY)).filter(pl.col("champion_version").is_not_null())
    return {f"{row['symbol']}|{row['target']}": row["champion_version"] for row in registry.iter_rows(named=True)}


def _tracker(resources: dict):
    return resources["mlflow_tracking"].tracker()


def test_when_bars_change_a_champion_trained_on_the_old_bars_loses_its_alias(trained_signal) -> None:
    from intelligence_assets.ml.synthetic import synthetic_bars
    from intelligence_assets.tracking import names
    from intelligence_assets_tests.support.pipeline import materialize_everything

    path, universe, instance, resources, store = trained_signal
    before = _champions(store)
    assert before, "the planted signal must give SIGNAL a champion"
    # New bars: pure noise where the signal was. Every model retrains on them; the champions
    # trained on the old bars are no longer current, however well they scored then.
    synthetic_bars(n_bars=1600, seed=999, signal_strength=0.0).write_parquet(path.parent / "bars" / "SIGNAL.parquet")
    materialize_everything(universe, instance, resources)
    registry = read_value(store, artifact_prefix(MODEL_REGISTRY))
    tracker = _tracker(resources)
    for cell, version in before.items():
        symbol, target = cell.split("|")
        row = registry.filter((pl.col("symbol") == symbol) & (pl.col("target") == target)).row(0, named=True)
        assert row["action"] == "retired", row
        assert row["champion_version"] != version
        name = names.registered_model_name(symbol, target)
        retired = tracker.client.get_model_version(name, version)
        assert (
            "trained on bars" in retired.tags[names.RETIRED_TAG]
            and "SIGNAL's bars are now" in retired.tags[names.RETIRED_TAG]
        )
        # Whatever serves now is a model current for the new bars.
        current_models = set(filter(None, row["model_fingerprints"].split(",")))
        if row["champion_version"] is not None:
            assert row["champion_fingerprint"] in current_models
        else:
            assert "no champion" in row["reason"]


def test_a_removed_symbol_stops_counting_and_its_champions_are_retired_with_a_reason(trained_signal) -> None:
    from intelligence_assets.defs.partitions import remove_symbols_not_in
    from intelligence_assets.tracking import names

    path, universe, instance, resources, store = trained_signal
    before = _champions(store)
    assert before
    assert remove_symbols_not_in(instance, []) == ["SIGNAL"]
    result = dg.materialize(
        build_assets_for(universe),
        selection=["model_leaderboard", "model_registry"],
        instance=instance,
        resources=resources,
    )
    assert result.success
    assert read_value(store, artifact_prefix(MODEL_LEADERBOARD)).height == 0
    registry = read_value(store, artifact_prefix(MODEL_REGISTRY))
    tracker = _tracker(resources)
    for cell, version in before.items():
        symbol, target = cell.split("|")
        name = names.registered_model_name(symbol, target)
        assert names.CHAMPION not in tracker.aliases(name)
        assert "no longer in the universe" in tracker.client.get_model_version(name, version).tags[names.RETIRED_TAG]
        row = registry.filter((pl.col("symbol") == symbol) & (pl.col("target") == target)).row(0, named=True)
        assert row["action"] == "retired" and "no longer in the universe" in row["reason"]
    # Kept: the artifacts and the MLflow history.
    assert read_value(store, artifact_prefix(FEATURES, "SIGNAL")).height > 0
    assert tracker.versions(names.registered_model_name(*next(iter(before)).split("|")))


def test_the_leaderboard_reads_scores_not_models_so_a_format_version_bump_cannot_fail_it(
    trained_signal, monkeypatch
) -> None:
    from intelligence_assets.ml.families import load_family

    _, universe, instance, resources, store = trained_signal
    handle = ArtifactHandle.current(store, artifact_prefix(model_key("linear"), "SIGNAL", "y_up_1b"))
    # What a newer linear family would say of the stored model (its format version moved on).
    monkeypatch.setattr(load_family("linear"), "version", "99")
    with pytest.raises(Exception, match="format version"):
        handle.load()
    result = dg.materialize(
        build_assets_for(universe), selection=["model_leaderboard"], instance=instance, resources=resources
    )
    assert result.success
    assert read_value(store, artifact_prefix(MODEL_LEADERBOARD)).filter(pl.col("trained")).height > 0


def build_assets_for(universe):
    from intelligence_assets.definitions import build_assets

    return build_assets(universe)


def test_a_ranged_run_materializes_every_healthy_partition_and_fails_naming_the_broken_one(tmp_path: Path) -> None:
    from intelligence_assets.defs.assets.caching import FAILED_PARTITIONS
    from intelligence_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG, register_symbols
    from intelligence_assets.defs.resources.deployment import Deployment
    from intelligence_assets.store.artifacts import latest_failure

    path = write_small_universe(tmp_path, families={"linear": {"params": {}}})
    constant_price_bars().write_parquet(tmp_path / "bars" / "FLAT.parquet")
    five_minute_zero_volume_bars().write_parquet(tmp_path / "bars" / "INDEX.parquet")
    config = yaml.safe_load(path.read_text())
    config["symbols"] = ["SIGNAL", "FLAT", "INDEX"]  # the broken one in the middle of the range
    path.write_text(yaml.safe_dump(config))
    universe = load_universe(path)
    resources = Deployment(artifact_root=tmp_path / "artifacts").resources(universe)
    store = LocalArtifactStore(tmp_path / "artifacts")
    assets = build_assets_for(universe)
    with dg.instance_for_test() as instance:
        register_symbols(instance, universe.symbols)
        for symbol in universe.symbols:
            assert dg.materialize(
                assets, selection=["bars"], partition_key=symbol, instance=instance, resources=resources
            ).success
        ranged = dg.materialize(
            assets,
            selection=["features"],
            instance=instance,
            resources=resources,
            raise_on_error=False,
            tags={RANGE_START_TAG: "SIGNAL", RANGE_END_TAG: "INDEX"},
        )
        assert not ranged.success
        [failure] = ranged.get_step_failure_events()
        failed = failure.step_failure_data.user_failure_data.metadata[FAILED_PARTITIONS].value
        assert list(failed) == ["FLAT"] and "no usable feature" in failed["FLAT"]
        assert instance.get_materialized_partitions(FEATURES) == {"SIGNAL", "INDEX"}
    assert (
        read_value(store, artifact_prefix(FEATURES, "SIGNAL")).height > 0
        and read_value(store, artifact_prefix(FEATURES, "INDEX")).height > 0
    )
    assert "no usable feature" in latest_failure(store, artifact_prefix(FEATURES, "FLAT"))["error"]
    assert latest_failure(store, artifact_prefix(FEATURES, "SIGNAL")) is None


def test_predictions_refuse_a_registry_that_has_not_seen_the_symbols_current_models(trained_signal) -> None:
    from intelligence_assets.defs.partitions import register_symbols
    from intelligence_assets_tests.support.pipeline import MODEL_SELECTION, symbol_training_range

    path, _, instance, resources, store = trained_signal
    config = yaml.safe_load(path.read_text())
    config["symbols"] = ["SIGNAL", "NOISE"]
    path.write_text(yaml.safe_dump(config))
    universe = load_universe(path)
    assets = build_assets_for(universe)
    register_symbols(instance, ["NOISE"])
    assert dg.materialize(
        assets, selection=["bars", "features"], partition_key="NOISE", instance=instance, resources=resources
    ).success
    assert dg.materialize(
        assets,
        selection=MODEL_SELECTION,
        instance=instance,
        resources=resources,
        tags=symbol_training_range(universe, "NOISE"),
    ).success
    # NOISE's models exist, but neither the leaderboard nor the registry has run since.
    early = dg.materialize(
        assets,
        selection=["predictions"],
        partition_key="NOISE",
        instance=instance,
        resources=resources,
        raise_on_error=False,
    )
    assert not early.success
    message = early.get_step_failure_events()[0].step_failure_data.error.cause.message
    assert (
        "model_registry has not yet decided from the current models of ['NOISE|y_up_1b', 'NOISE|y_volatility_5b']"
        in message
    )
    with pytest.raises(ArtifactNotFoundError):  # nothing published, not even an empty table
        ArtifactHandle.current(store, artifact_prefix(PREDICTIONS, "NOISE"))
    assert dg.materialize(
        assets, selection=["model_leaderboard", "model_registry"], instance=instance, resources=resources
    ).success
    assert dg.materialize(
        assets, selection=["predictions"], partition_key="NOISE", instance=instance, resources=resources
    ).success
