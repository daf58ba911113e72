"""The training recipe of one cell, on synthetic bars with a planted signal, without Dagster."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime

import numpy as np
import polars as pl
import pytest

from intelligence_assets.cells.training import Cell, train_cell, training_record
from intelligence_assets.config.universe import REPOSITORY_ROOT, Universe
from intelligence_assets.tracking import names
from intelligence_assets_tests.cells.conftest import DIRECTION, SELECTED, VOLATILITY, SymbolData


def not_read() -> pl.DataFrame:
    raise AssertionError("a gated cell must not read its features or labels")


def selected(features: list[str]) -> dict:
    return {"gated": False, "reason": "", "selected": features}


def test_the_cells_package_imports_no_dagster() -> None:
    code = (
        "import sys, pkgutil, importlib, intelligence_assets.cells as cells; "
        "[importlib.import_module(f'{cells.__name__}.{m.name}') for m in pkgutil.iter_modules(cells.__path__)]; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster')[:5])"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=REPOSITORY_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]", f"importing intelligence_assets.cells loads Dagster: {loaded}"


def test_a_cell_is_fitted_on_its_selected_features_and_scored_after_its_training_period(
    small_universe: Universe, planted: SymbolData
) -> None:
    cell = Cell(small_universe, "linear", "SIGNAL", DIRECTION)
    lines: list[str] = []
    trained = train_cell(
        cell, selected(SELECTED), lambda: planted.features, lambda: planted.labels[DIRECTION], log=lines.append
    )

    model, summary = trained.model, trained.model.summary
    assert model.trained and model.family == "linear" and model.feature_names == SELECTED
    assert summary["symbol"] == "SIGNAL" and summary["target"] == DIRECTION and summary["task"] == "classification"
    # The planted direction signal is learnt (about 0.65 held out), and the sentinel believes it.
    assert 0.58 < summary["metrics"]["auc"] < 0.8, summary["metrics"]
    assert not summary["leakage_suspect"]
    assert summary["train_rows"] + summary["test_rows"] < planted.bars.height
    test_start, test_end = datetime.fromisoformat(summary["test_start"]), datetime.fromisoformat(summary["test_end"])
    # Held out means after everything trained on: the test period closes the series.
    assert test_start.utcoffset().total_seconds() == 0
    assert planted.bars["timestamp"][summary["train_rows"]] < test_start < test_end <= planted.bars["timestamp"].max()
    assert summary["bars_per_year"] == pytest.approx(365.25, rel=0.01)  # synthetic bars come every calendar day
    assert (
        len(lines) == 1
        and lines[0].startswith(f"linear SIGNAL {DIRECTION}: training on ")
        and lines[0].endswith(" rows x 3 features")
    )

    metadata = trained.metadata
    assert metadata["trained"] is True and metadata["auc"] == summary["metrics"]["auc"] == trained.metrics["auc"]
    assert metadata["features"] == ", ".join(SELECTED) and metadata["feature_count"] == 3
    assert metadata["test_period"] == f"{summary['test_start']} .. {summary['test_end']}"
    assert metadata["train_rows"] == summary["train_rows"] and metadata["seed"] == small_universe.seed
    assert "baseline_majority_accuracy" in metadata and "training_seconds" in metadata
    # Metadata and the stored summary are JSON: no NaN may reach them.
    assert all(value is None or np.isfinite(value) for value in summary["metrics"].values())


def test_the_same_inputs_train_the_same_model(small_universe: Universe, planted: SymbolData) -> None:
    """A fingerprint stands for its result only if training is repeatable."""
    cell = Cell(small_universe, "linear", "SIGNAL", DIRECTION)
    first, second = (
        train_cell(cell, selected(SELECTED), lambda: planted.features, lambda: planted.labels[DIRECTION])
        for _ in range(2)
    )
    assert first.metrics == second.metrics
    x = planted.features.select(SELECTED).drop_nulls().to_numpy()
    np.testing.assert_array_equal(first.model.predict(x), second.model.predict(x))


def test_a_gated_cell_reads_nothing_and_says_why(small_universe: Universe) -> None:
    cell = Cell(small_universe, "lightgbm", "NOISE", DIRECTION)
    reason = "not trained: score 0.501 below the bar 0.52"
    trained = train_cell(cell, {"gated": True, "reason": reason, "selected": []}, not_read, not_read)
    assert not trained.model.trained and trained.model.summary["reason"] == reason
    assert trained.metrics == {}
    assert trained.metadata == {"trained": False, "decision": reason}
    with pytest.raises(ValueError, match="not trained"):
        trained.model.predict(np.zeros((1, 3)))


def test_a_regression_target_is_scored_on_its_own_metric(small_universe: Universe, planted: SymbolData) -> None:
    cell = Cell(small_universe, "linear", "SIGNAL", VOLATILITY)
    trained = train_cell(
        cell, selected(["vol_21", "atr_14", "ret_1"]), lambda: planted.features, lambda: planted.labels[VOLATILITY]
    )
    assert (
        trained.model.summary["task"] == "regression" and "rank_ic" in trained.metrics and "auc" not in trained.metrics
    )
    assert cell.score_metric == small_universe.leaderboard.regression_metric == "rank_ic"


def test_a_leaked_label_makes_a_leakage_suspect_that_may_never_serve(
    small_universe: Universe, planted: SymbolData
) -> None:
    cell = Cell(small_universe, "linear", "SIGNAL", DIRECTION)
    labels = planted.labels[DIRECTION]
    leaky = planted.features.join(
        labels.select("timestamp", pl.col("label").cast(pl.Float64).alias("tomorrow")), on="timestamp"
    )
    trained = train_cell(cell, selected(["tomorrow", *SELECTED]), lambda: leaky, lambda: labels)
    assert trained.metrics["auc"] > small_universe.leakage_sentinel.max_auc
    assert trained.model.summary["leakage_suspect"] is True
    record = training_record(cell, trained.model, {names.FINGERPRINT_TAG: "leaky"}, config={})
    assert record.score_metric == "auc" and record.eligible is False

    honest = train_cell(cell, selected(SELECTED), lambda: planted.features, lambda: labels)
    assert training_record(cell, honest.model, {names.FINGERPRINT_TAG: "honest"}, config={}).eligible is True


def test_bars_per_year_timestamps_and_numbers_come_from_one_place_each(
    small_universe: Universe, planted: SymbolData
) -> None:
    """What the training cell records: bars per year from the universe (set or inferred), test
    timestamps in UTC, metrics as finite floats or None."""
    from intelligence_assets.ml.bars import infer_bars_per_year
    from intelligence_assets.ml.dataset import utc_timestamps
    from intelligence_assets.ml.metrics import finite_or_none

    timestamps = planted.bars["timestamp"]
    explicit = small_universe.model_copy(
        update={"bars": small_universe.bars.model_copy(update={"bars_per_year": {"SIGNAL": 365.0}})}
    )
    assert small_universe.bars_per_year("SIGNAL", timestamps) == infer_bars_per_year(
        timestamps, small_universe.bars.gap_settings
    )
    assert explicit.bars_per_year("SIGNAL", timestamps) == 365.0
    for value, expected in ((None, None), (0, 0.0), (2, 2.0), (0.25, 0.25), (np.float32(1.5), 1.5)):
        assert finite_or_none(value) == expected
    for value in (float("nan"), float("inf"), -float("inf")):
        assert finite_or_none(value) is None
    values = timestamps.to_numpy()[:5].astype("datetime64[us]")
    restored = utc_timestamps(values)
    assert (
        str(restored.dtype.time_zone) == "UTC"
        and restored.dt.replace_time_zone(None).to_numpy().tolist() == values.tolist()
    )
