"""A symbol's training inputs built from synthetic bars, and an embedded MLflow store, shared by
the cell tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from intelligence_assets.config.universe import Universe
from intelligence_assets.ml.features import build_features, drop_unusable_features
from intelligence_assets.ml.synthetic import PLANTED_FEATURE, synthetic_bars
from intelligence_assets.ml.targets import build_labels
from intelligence_assets.tracking.tracker import ModelTracker

DIRECTION = "y_up_1b"
VOLATILITY = "y_volatility_5b"
# Chosen by hand rather than by `feature_sets`: the planted signal lives in close_location.
SELECTED = [PLANTED_FEATURE, "ret_1", "vol_21"]


@dataclass(frozen=True)
class SymbolData:
    bars: pl.DataFrame
    features: pl.DataFrame
    labels: dict[str, pl.DataFrame]


@pytest.fixture(scope="session")
def planted(small_universe: Universe) -> SymbolData:
    """The small universe's SIGNAL symbol: next-bar direction is predictable from close_location."""
    bars = synthetic_bars(n_bars=1600, seed=100, signal_strength=1.0)
    features = drop_unusable_features(build_features(bars, small_universe.features)).table
    labels = {target: build_labels(bars, small_universe.target(target)) for target in (DIRECTION, VOLATILITY)}
    return SymbolData(bars, features, labels)


@pytest.fixture(autouse=True)
def quiet_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> ModelTracker:
    """One embedded store (SQLite and file artifacts) for the module; tests keep apart by symbol."""
    home: Path = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        return ModelTracker(f"sqlite:///{home / 'mlflow.db'}", experiment_root=home)
