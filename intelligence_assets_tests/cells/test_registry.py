"""Registry promotion, rollback and retirement applied to a real embedded MLflow registry, with
provenance read from a local artifact store, without Dagster. Each test keeps to its own symbols
in one shared registry."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from mlflow.store.entities.paged_list import PagedList

from intelligence_assets.cells.registry import REGISTRY_SCHEMA, RegistryUpdate, update_registry
from intelligence_assets.defs.assets.market_data import BARS
from intelligence_assets.defs.assets.market_data import FEATURES as FEATURES_ASSET
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.ml.families import load_family
from intelligence_assets.ml.trained_model import TrainedModel
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import Manifest, commit_artifact
from intelligence_assets.store.keys import artifact_prefix, pointer_key
from intelligence_assets.tracking import names
from intelligence_assets.tracking import tracker as tracker_module
from intelligence_assets.tracking.promotion import PromotionSettings
from intelligence_assets.tracking.tracker import ModelTracker, TrainingRecord

TARGET = "y_up_1b"
FEATURES = ["momentum", "volatility", "range"]
SETTINGS = PromotionSettings(min_improvement=0.01, min_test_rows=100, challenger_within=0.02)
# Every symbol these tests register: a pass retires the champions of any symbol left out.
PAGED = [f"PAGED{number}" for number in range(5)]
SYMBOLS = {
    "FIRST",
    "ROLL",
    "REFUSED",
    "GONE",
    "STAYS",
    "LISTED",
    "REBARRED",
    "DECAYED",
    "UNREGISTERED",
    "LATE",
    "SKIPPED",
    *PAGED,
}
WHEN = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def fitted() -> Any:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, len(FEATURES)))
    y = (x[:, 0] + rng.normal(size=400) > 0).astype(float)
    return load_family("linear")("classification", {}, 5).fit(x[:300], y[:300], x[300:], y[300:])


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def register(
    tracker: ModelTracker, model: Any, symbol: str, fingerprint: str, score: float, eligible: bool = True
) -> str:
    """Track a model as `models/linear` does; returns its registry version."""
    summary = {
        "task": "classification",
        "features": FEATURES,
        "metrics": {"auc": score},
        "test_rows": 500,
        "test_start": "2024-01-01T00:00:00+00:00",
        "test_end": "2024-12-31T00:00:00+00:00",
    }
    record = TrainingRecord(
        symbol,
        TARGET,
        TrainedModel("linear", summary, model),
        "auc",
        eligible,
        {names.FINGERPRINT_TAG: fingerprint},
        config={},
    )
    return tracker.track_training(record).version


def leaderboard(*rows: tuple[str, str, float, bool]) -> pl.DataFrame:
    """`model_leaderboard`'s columns that the registry reads: (symbol, fingerprint, score, eligible) per model."""
    return pl.DataFrame(
        [
            {
                "symbol": symbol,
                "target": TARGET,
                "family": "linear",
                "trained": True,
                "score": score,
                "test_rows": 500,
                "eligible": eligible,
                "model_fingerprint": fingerprint,
            }
            for symbol, fingerprint, score, eligible in rows
        ],
        schema={
            "symbol": pl.String,
            "target": pl.String,
            "family": pl.String,
            "trained": pl.Boolean,
            "score": pl.Float64,
            "test_rows": pl.Int64,
            "eligible": pl.Boolean,
            "model_fingerprint": pl.String,
        },
    )


def apply(
    tracker: ModelTracker, store: LocalArtifactStore, table: pl.DataFrame, symbols: set[str] = SYMBOLS, **request: Any
) -> RegistryUpdate:
    return update_registry(
        tracker, store, table, SETTINGS, symbols, run_id=request.pop("run_id", "run-1"), clock=lambda: WHEN, **request
    )


def row(update: RegistryUpdate, symbol: str) -> dict[str, Any]:
    return update.table.filter(pl.col("symbol") == symbol).row(0, named=True)


def test_the_best_qualified_version_is_promoted_and_a_second_pass_moves_nothing(
    tracker: ModelTracker, fitted: Any, store: LocalArtifactStore
) -> None:
    versions = [
        register(tracker, fitted, "FIRST", fingerprint, score)
        for fingerprint, score in (("a1", 0.63), ("a2", 0.64), ("a3", 0.70))
    ]
    table = leaderboard(("FIRST", "a1", 0.63, True), ("FIRST", "a2", 0.64, True), ("FIRST", "a3", 0.70, False))
    lines: list[str] = []

    first = apply(tracker, store, table, log=lines.append)

    name = f"intelligence.FIRST.{TARGET}"
    assert versions == ["1", "2", "3"]
    assert tracker.aliases(name) == {names.CHAMPION: "2", names.CHALLENGER: "1"}  # v3 scores best, but may not serve
    assert first.changes == [f"{name}: promoted; champion -> v2, challenger -> v1"]
    assert dict(first.table.schema) == REGISTRY_SCHEMA and first.champions.height == 1
    assert row(first, "FIRST") == {
        "symbol": "FIRST",
        "target": TARGET,
        "registered_model": name,
        "metric": "auc",
        "champion_version": "2",
        "champion_family": "linear",
        "champion_fingerprint": "a2",
        "champion_score": 0.64,
        "champion_test_start": "2024-01-01T00:00:00+00:00",
        "champion_test_end": "2024-12-31T00:00:00+00:00",
        "champion_uri": f"models:/{name}@champion",
        "previous_champion_version": None,
        "previous_champion_family": None,
        "previous_champion_fingerprint": None,
        "previous_champion_score": None,
        "challenger_version": "1",
        "challenger_family": "linear",
        "challenger_fingerprint": "a1",
        "challenger_score": 0.63,
        "action": "promoted",
        "reason": "first champion: linear v2 scores 0.6400",
        "model_fingerprints": "a1,a2,a3",
    }
    assert lines == [
        f"{name}: promoted (first champion: linear v2 scores 0.6400); champion -> v2, challenger -> v1",
        "registry: 1 champions over 1 cells; 1 cells changed",
    ]

    second = apply(tracker, store, table)

    assert second.changes == [] and tracker.aliases(name) == {names.CHAMPION: "2", names.CHALLENGER: "1"}
    assert row(second, "FIRST")["action"] == "kept" and row(second, "FIRST")["champion_version"] == "2"


def test_a_rollback_restores_the_previous_champion_records_why_and_sticks(
    tracker: ModelTracker, fitted: Any, store: LocalArtifactStore
) -> None:
    name = f"intelligence.ROLL.{TARGET}"
    register(tracker, fitted, "ROLL", "r1", 0.60)
    apply(tracker, store, leaderboard(("ROLL", "r1", 0.60, True)))
    register(tracker, fitted, "ROLL", "r2", 0.65)
    table = leaderboard(("ROLL", "r1", 0.60, True), ("ROLL", "r2", 0.65, True))
    apply(tracker, store, table)
    assert tracker.aliases(name) == {names.CHAMPION: "2", names.PREVIOUS_CHAMPION: "1"}

    rolled = apply(tracker, store, table, rollback=[("ROLL", TARGET)], reason="live drawdown", run_id="run-rollback")

    assert tracker.aliases(name) == {names.CHAMPION: "1"}
    assert (
        tracker.client.get_model_version(name, "2").tags[names.ROLLED_BACK_TAG]
        == "2030-01-02T03:04:05+00:00 run run-rollback: live drawdown"
    )
    assert rolled.changes == [f"{name}: rolled back; champion -> v1 (was v2), previous-champion removed (was v1)"]
    assert (row(rolled, "ROLL")["action"], row(rolled, "ROLL")["reason"]) == ("rolled back", "v2 -> v1: live drawdown")

    # The rolled-back version never comes back by itself, however well it scores.
    after = apply(tracker, store, table)
    assert after.changes == [] and tracker.aliases(name) == {names.CHAMPION: "1"}


def test_a_rollback_needs_a_reason_a_cell_on_the_leaderboard_and_a_previous_champion(
    tracker: ModelTracker, fitted: Any, store: LocalArtifactStore
) -> None:
    name = f"intelligence.REFUSED.{TARGET}"
    register(tracker, fitted, "REFUSED", "x1", 0.60)
    table = leaderboard(("REFUSED", "x1", 0.60, True))
    apply(tracker, store, table)

    with pytest.raises(ValueError, match="a rollback needs a reason"):
        apply(tracker, store, table, rollback=[("REFUSED", TARGET)], reason="  ")
    with pytest.raises(ValueError, match=r"rollback of \[\('NOWHERE', 'y_up_1b'\)\]: no models on the leaderboard"):
        apply(tracker, store, table, rollback=[("NOWHERE", TARGET)], reason="why not")
    with pytest.raises(ValueError, match="cannot roll back"):
        apply(tracker, store, table, rollback=[("REFUSED", TARGET)], reason="no way back")
    assert tracker.aliases(name) == {names.CHAMPION: "1"}
    assert names.ROLLED_BACK_TAG not in tracker.client.get_model_version(name, "1").tags


def test_the_champion_of_a_symbol_that_left_the_universe_is_retired(
    tracker: ModelTracker, fitted: Any, store: LocalArtifactStore
) -> None:
    gone, stays = f"intelligence.GONE.{TARGET}", f"intelligence.STAYS.{TARGET}"
    register(tracker, fitted, "GONE", "g1", 0.61)
    register(tracker, fitted, "STAYS", "s1", 0.61)
    apply(tracker, store, leaderboard(("GONE", "g1", 0.61, True), ("STAYS", "s1", 0.61, True)))
    lines: list[str] = []

    # GONE is off the leaderboard and out of the universe; a pass over other symbols finds it.
    update = apply(
        tracker,
        store,
        leaderboard(("STAYS", "s1", 0.61, True)),
        symbols=SYMBOLS - {"GONE"},
        run_id="run-removal",
        log=lines.append,
    )

    reason = "v1 retired (GONE is no longer in the universe); no version qualifies, so the cell has no champion"
    assert tracker.aliases(gone) == {} and tracker.aliases(stays) == {names.CHAMPION: "1"}
    assert (
        tracker.client.get_model_version(gone, "1").tags[names.RETIRED_TAG]
        == "2030-01-02T03:04:05+00:00 run run-removal: GONE is no longer in the universe"
    )
    assert update.changes == [f"{gone}: retired; champion removed (was v1)"]
    assert lines[0] == f"{gone}: {reason}; champion removed (was v1)"
    retired = row(update, "GONE")
    assert (retired["action"], retired["reason"], retired["champion_version"], retired["registered_model"]) == (
        "retired",
        reason,
        None,
        gone,
    )
    assert update.table["symbol"].to_list() == ["GONE", "STAYS"]


def test_a_removed_symbol_still_on_the_stored_leaderboard_is_retired_not_promoted_again(
    tracker: ModelTracker, fitted: Any, store: LocalArtifactStore
) -> None:
    name = f"intelligence.LISTED.{TARGET}"
    register(tracker, fitted, "LISTED", "l1", 0.61)
    table = leaderboard(("LISTED", "l1", 0.61, True))
    apply(tracker, store, table)

    # LISTED left the universe; the leaderboard was stored before, so it still lists the cell.
    update = apply(tracker, store, table, symbols=SYMBOLS - {"LISTED"})

    assert tracker.aliases(name) == {}
    assert update.table.filter(pl.col("symbol") == "LISTED")["action"].to_list() == ["retired"]
    assert update.changes == [f"{name}: retired; champion removed (was v1)"]


def test_a_champion_trained_on_replaced_bars_gives_way_to_a_model_of_the_new_bars(
    tracker: ModelTracker, fitted: Any, store: LocalArtifactStore
) -> None:
    name = f"intelligence.REBARRED.{TARGET}"

    def trained_on(bars: str, model_fingerprint: str) -> None:
        """A model whose features were built from `bars`, as the stored manifests record it."""
        features = f"features-of-{bars}"
        commit_artifact(
            store,
            artifact_prefix(FEATURES_ASSET, "REBARRED"),
            {"n": 1},
            Manifest(features, features, {}, provenance={"inputs": {"bars": bars}}),
        )
        commit_artifact(
            store,
            artifact_prefix(model_key("linear"), "REBARRED", TARGET),
            {"n": 1},
            Manifest(model_fingerprint, model_fingerprint, {}, provenance={"inputs": {"features": features}}),
        )

    def bars_now(version: str, blocked_by: list[str]) -> None:
        store.put_json(
            pointer_key(artifact_prefix(BARS, "REBARRED")),
            {"fingerprint": version, "data_version": version, "blocked_by": blocked_by},
        )

    trained_on("bars-old", "m1")
    bars_now("bars-old", [])
    register(tracker, fitted, "REBARRED", "m1", 0.66)
    apply(tracker, store, leaderboard(("REBARRED", "m1", 0.66, True)))
    trained_on("bars-new", "m2")
    register(tracker, fitted, "REBARRED", "m2", 0.60)
    table = leaderboard(("REBARRED", "m1", 0.66, True), ("REBARRED", "m2", 0.60, True))

    # New bars that failed a blocking check replace nothing: the champion keeps serving.
    bars_now("bars-new", ["prices_positive"])
    assert apply(tracker, store, table).changes == [] and tracker.aliases(name) == {names.CHAMPION: "1"}

    bars_now("bars-new", [])
    warnings: list[str] = []
    update = apply(tracker, store, table, run_id="run-new-bars", warn=warnings.append)

    stale = "trained on bars bars-old, but REBARRED's bars are now bars-new"
    assert tracker.aliases(name) == {names.CHAMPION: "2"}  # the retired version never becomes previous-champion
    assert (
        tracker.client.get_model_version(name, "1").tags[names.RETIRED_TAG]
        == f"2030-01-02T03:04:05+00:00 run run-new-bars: {stale}"
    )
    assert warnings == [f"{name}: linear v1 is not a candidate: {stale}"]
    assert (row(update, "REBARRED")["action"], row(update, "REBARRED")["champion_fingerprint"]) == ("retired", "m2")


def test_a_decayed_champion_is_reassessed_without_the_improvement_margin(
    tracker: ModelTracker, fitted: Any, store: LocalArtifactStore
) -> None:
    name = f"intelligence.DECAYED.{TARGET}"
    register(tracker, fitted, "DECAYED", "d1", 0.620)
    apply(tracker, store, leaderboard(("DECAYED", "d1", 0.620, True)))
    register(tracker, fitted, "DECAYED", "d2", 0.625)
    table = leaderboard(("DECAYED", "d1", 0.620, True), ("DECAYED", "d2", 0.625, True))

    kept = apply(tracker, store, table)
    # 0.005 better is within the margin: v2 only challenges.
    assert kept.changes == [f"{name}: kept; challenger -> v2"] and tracker.aliases(name) == {
        names.CHAMPION: "1",
        names.CHALLENGER: "2",
    }

    reassessed = apply(tracker, store, table, reassess=[("DECAYED", TARGET)])
    assert tracker.aliases(name) == {names.CHAMPION: "2", names.PREVIOUS_CHAMPION: "1", names.CHALLENGER: "1"}
    assert row(reassessed, "DECAYED")["reason"] == "linear v2 (0.6250) beats an unscored champion by at least 0.01"


def test_a_leaderboard_model_without_a_registry_version_is_named_and_left_out(
    tracker: ModelTracker, store: LocalArtifactStore
) -> None:
    warnings: list[str] = []
    update = apply(tracker, store, leaderboard(("UNREGISTERED", "u1", 0.70, True)), warn=warnings.append)
    assert warnings == [
        f"intelligence.UNREGISTERED.{TARGET}: linear model u1 has no registry version; "
        f"rematerialize models/linear UNREGISTERED|{TARGET}"
    ]
    assert update.changes == [] and row(update, "UNREGISTERED")["action"] == "no champion"
    assert row(update, "UNREGISTERED")["model_fingerprints"] == "u1"


class CountingClient:
    """MLflow's client, counting the requests made through it by method; `after_listing` runs
    once, right after the first listing of every model version returns, and versions for which
    `passed_over` is true are missing from that listing (as when a page's offset moved past one)."""

    def __init__(
        self,
        client: Any,
        after_listing: Callable[[], None] | None = None,
        passed_over: Callable[[Any], bool] = lambda version: False,
    ) -> None:
        self.client = client
        self.after_listing = after_listing
        self.passed_over = passed_over
        self.requests: Counter[str] = Counter()
        self.version_filters: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.requests[name] += 1
            result = attribute(*args, **kwargs)
            if name == "search_model_versions":
                self.version_filters.append(args[0] if args else kwargs.get("filter_string"))
                if self.version_filters[-1] == names.PLATFORM_MODELS_FILTER:
                    result = PagedList([version for version in result if not self.passed_over(version)], result.token)
                if self.after_listing:
                    hook, self.after_listing = self.after_listing, None
                    hook()
            return result

        return counted


def test_a_pass_reads_the_registry_in_pages_not_a_request_a_cell(
    tracker: ModelTracker, fitted: Any, store: LocalArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for symbol in PAGED:
        register(tracker, fitted, symbol, f"{symbol}-1", 0.70)
    # Pages of two, so that every listing takes several requests.
    monkeypatch.setattr(tracker_module, "REGISTERED_MODELS_PER_PAGE", 2)
    monkeypatch.setattr(tracker_module, "VERSIONS_PER_PAGE", 2)
    client = CountingClient(tracker.client)
    monkeypatch.setattr(tracker, "client", client)

    update = apply(tracker, store, leaderboard(*((symbol, f"{symbol}-1", 0.70, True) for symbol in PAGED)))

    assert [row(update, symbol)["champion_version"] for symbol in PAGED] == ["1"] * 5
    assert client.requests["get_registered_model"] == 0
    assert client.requests["search_registered_models"] >= 3 and client.requests["search_model_versions"] >= 3
    assert set(client.version_filters) == {names.PLATFORM_MODELS_FILTER}  # none for one model
    assert client.requests["set_registered_model_alias"] == 5


def test_a_version_registered_while_a_pass_reads_the_registry_is_still_a_candidate(
    tracker: ModelTracker, fitted: Any, store: LocalArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(tracker, fitted, "LATE", "late-1", 0.65)
    registered: list[str] = []
    # A training run still going registers the cell's second version just after the pass listed them all.
    client = CountingClient(
        tracker.client, after_listing=lambda: registered.append(register(tracker, fitted, "LATE", "late-2", 0.70))
    )
    monkeypatch.setattr(tracker, "client", client)
    warnings: list[str] = []

    update = apply(
        tracker,
        store,
        leaderboard(("LATE", "late-1", 0.65, True), ("LATE", "late-2", 0.70, True)),
        warn=warnings.append,
    )

    assert registered == ["2"] and warnings == []
    assert row(update, "LATE")["champion_version"] == "2"


def test_a_champion_a_page_passed_over_is_read_again_and_keeps_its_alias(
    tracker: ModelTracker, fitted: Any, store: LocalArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"intelligence.SKIPPED.{TARGET}"
    register(tracker, fitted, "SKIPPED", "k1", 0.70)
    apply(tracker, store, leaderboard(("SKIPPED", "k1", 0.70, True)))
    register(tracker, fitted, "SKIPPED", "k2", 0.60)
    # The champion's model is off the leaderboard now, and the listing of every version misses it.
    client = CountingClient(
        tracker.client, passed_over=lambda version: (version.name, str(version.version)) == (name, "1")
    )
    monkeypatch.setattr(tracker, "client", client)

    update = apply(tracker, store, leaderboard(("SKIPPED", "k2", 0.60, True)))

    # Judged against its recorded 0.70, v1 stays; without it the weaker v2 would replace it.
    assert tracker.aliases(name)[names.CHAMPION] == "1" and row(update, "SKIPPED")["champion_score"] == 0.70
    assert f"name = '{name}'" in client.version_filters
