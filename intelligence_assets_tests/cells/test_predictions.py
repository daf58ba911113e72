"""A symbol's champions scored from their held-out test start to the newest bar, and the refusal
of a registry that has not seen the current models, without Dagster or MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from intelligence_assets.cells.predictions import (
    PREDICTIONS_SCHEMA,
    cells_the_registry_has_not_seen,
    predict_champions,
    symbol_champions,
)
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.keys import MODELS, artifact_prefix, pointer_key
from intelligence_assets.tracking import names
from intelligence_assets_tests.cells.conftest import SymbolData

TEST_START = "2003-01-01T00:00:00+00:00"


@dataclass
class Version:
    version: str


class InputSchema:
    def __init__(self, feature_names: list[str]) -> None:
        self.feature_names = feature_names

    def input_names(self) -> list[str]:
        return self.feature_names


@dataclass
class Metadata:
    feature_names: list[str]

    def get_input_schema(self) -> InputSchema:
        return InputSchema(self.feature_names)


class SumOfFeatures:
    """A pyfunc stand-in: predicts the sum of its features."""

    def __init__(self, feature_names: list[str]) -> None:
        self.metadata = Metadata(feature_names)

    def predict(self, frame: Any) -> np.ndarray:
        return frame.to_numpy().sum(axis=1)


class Registry:
    """A tracker stand-in: the champion alias of each registered model."""

    def __init__(self, aliases: dict[str, str], features: list[str]) -> None:
        self.aliases, self.features = aliases, features

    def version_by_alias(self, name: str, alias: str) -> Version | None:
        assert alias == names.CHAMPION
        return Version(self.aliases[name]) if name in self.aliases else None

    def load_model(self, version: Version) -> SumOfFeatures:
        return SumOfFeatures(self.features)


def registry_table(*rows: dict[str, Any]) -> pl.DataFrame:
    columns = ["symbol", "target", "registered_model", "champion_version", "champion_family"]
    columns += ["champion_uri", "champion_test_start", "model_fingerprints"]
    return pl.DataFrame([{column: row.get(column) for column in columns} for row in rows], schema=columns)


def champion(symbol: str, target: str, version: str | None, family: str = "linear", **fields: Any) -> dict[str, Any]:
    name = f"intelligence.{symbol}.{target}"
    return {
        "symbol": symbol,
        "target": target,
        "registered_model": name,
        "champion_version": version,
        "champion_family": family,
        "champion_uri": f"models:/{name}@champion",
        "champion_test_start": TEST_START,
        **fields,
    }


REGISTRY = registry_table(
    champion("SIGNAL", "y_volatility_5b", "2", "lightgbm"),
    champion("SIGNAL", "y_up_1b", "1"),
    champion("SIGNAL", "y_gated", None),
    champion("NOISE", "y_up_1b", "3"),
)


def test_a_symbols_champions_are_its_cells_that_have_one_by_target():
    assert symbol_champions(REGISTRY, "SIGNAL")["target"].to_list() == ["y_up_1b", "y_volatility_5b"]
    assert symbol_champions(REGISTRY, "ABSENT").is_empty()


def test_each_champion_scores_from_its_test_start_to_the_newest_bar(planted: SymbolData):
    features = ["ret_1", "vol_21"]
    tracker = Registry({"intelligence.SIGNAL.y_up_1b": "1", "intelligence.SIGNAL.y_volatility_5b": "2"}, features)
    lines: list[str] = []
    predicted = predict_champions(symbol_champions(REGISTRY, "SIGNAL"), planted.features, tracker, log=lines.append)

    table = predicted.table
    assert table.schema == pl.Schema(PREDICTIONS_SCHEMA)
    assert table["target"].unique(maintain_order=True).to_list() == ["y_up_1b", "y_volatility_5b"]
    assert table["timestamp"].min() >= datetime.fromisoformat(TEST_START)
    assert table["timestamp"].max() == planted.features["timestamp"].max()
    newest = planted.features.filter(pl.col("timestamp") == pl.col("timestamp").max())
    assert predicted.latest.rows() == [
        ("y_up_1b", "linear", "1", newest["timestamp"][0], pytest.approx(sum(newest[name][0] for name in features))),
        (
            "y_volatility_5b",
            "lightgbm",
            "2",
            newest["timestamp"][0],
            pytest.approx(sum(newest[name][0] for name in features)),
        ),
    ]
    complete = planted.features.drop_nulls(features).height  # every bar with the model's features
    assert lines == [
        f"SIGNAL y_up_1b: models:/intelligence.SIGNAL.y_up_1b@champion (v1, linear) scored {complete} bars",
        f"SIGNAL y_volatility_5b: models:/intelligence.SIGNAL.y_volatility_5b@champion (v2, lightgbm) scored "
        f"{complete} bars",
    ]


def test_no_champion_gives_an_empty_table_of_the_same_columns(planted: SymbolData):
    predicted = predict_champions(symbol_champions(REGISTRY, "ABSENT"), planted.features, Registry({}, []))
    assert predicted.table.is_empty() and predicted.table.schema == pl.Schema(PREDICTIONS_SCHEMA)
    assert predicted.latest.is_empty()


def test_an_alias_moved_outside_the_registry_asset_is_refused(planted: SymbolData):
    champions = symbol_champions(REGISTRY, "NOISE")
    with pytest.raises(RuntimeError, match="resolves to version 4, but model_registry recorded version 3"):
        predict_champions(champions, planted.features, Registry({"intelligence.NOISE.y_up_1b": "4"}, ["ret_1"]))
    with pytest.raises(RuntimeError, match="resolves to nothing"):
        predict_champions(champions, planted.features, Registry({}, ["ret_1"]))


def test_a_registry_that_has_not_seen_the_current_models_is_behind(tmp_path: Path):
    store = LocalArtifactStore(tmp_path / "artifacts")

    def current(family: str, target: str, fingerprint: str) -> None:
        prefix = artifact_prefix([MODELS, family], "SIGNAL", target)
        store.put_json(pointer_key(prefix), {"fingerprint": fingerprint, "data_version": fingerprint})

    current("linear", "y_up_1b", "a" * 32)
    current("lightgbm", "y_up_1b", "b" * 32)
    current("linear", "y_volatility_5b", "c" * 32)
    families, targets = ["linear", "lightgbm"], ["y_up_1b", "y_volatility_5b", "y_never_trained"]
    seen = registry_table(
        champion("SIGNAL", "y_up_1b", "1", model_fingerprints=f"{'a' * 32},{'b' * 32}"),
        champion("SIGNAL", "y_volatility_5b", None, model_fingerprints="c" * 32),
    )
    assert cells_the_registry_has_not_seen(store, seen, "SIGNAL", families, targets) == []

    current("lightgbm", "y_up_1b", "d" * 32)  # retrained since the registry's last pass
    assert cells_the_registry_has_not_seen(store, seen, "SIGNAL", families, targets) == ["SIGNAL|y_up_1b"]
    # A registry written before it recorded fingerprints has seen nothing.
    older = seen.drop("model_fingerprints")
    assert cells_the_registry_has_not_seen(store, older, "SIGNAL", families, targets) == [
        "SIGNAL|y_up_1b",
        "SIGNAL|y_volatility_5b",
    ]
