"""A symbol's predictions, without Dagster: each registry champion loaded from MLflow by alias
and scored from its held-out test start to the newest bar. What `predictions` does for each
partition."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from intelligence_assets.cells import Log, ignore
from intelligence_assets.ml.dataset import build_inference_matrix, utc_timestamps
from intelligence_assets.store.artifact_store import ArtifactStore, ArtifactStoreError
from intelligence_assets.store.artifacts import ArtifactHandle
from intelligence_assets.store.keys import MODELS, artifact_prefix
from intelligence_assets.tracking import names
from intelligence_assets.tracking.flavours import pyfunc_predict
from intelligence_assets.tracking.tracker import ModelTracker

PREDICTIONS_SCHEMA = {
    "timestamp": pl.Datetime("us", "UTC"),
    "target": pl.String,
    "family": pl.String,
    "model_version": pl.String,
    "prediction": pl.Float64,
}


def symbol_champions(registry: pl.DataFrame, symbol: str) -> pl.DataFrame:
    """This symbol's cells that have a champion. Reading the small registry table first lets the
    predictions' fingerprint depend on this symbol's champions only."""
    return registry.filter((pl.col("symbol") == symbol) & pl.col("champion_version").is_not_null()).sort("target")


def cells_the_registry_has_not_seen(
    store: ArtifactStore, registry: pl.DataFrame, symbol: str, families: list[str], targets: list[str]
) -> list[str]:
    """This symbol's cells (`SYMBOL|target`) whose models now current in the store are not the
    ones the registry last decided from: predicting now would serve champions chosen without
    them (for a new symbol, none at all)."""
    seen = (
        {
            (row["target"]): set(filter(None, (row["model_fingerprints"] or "").split(",")))
            for row in registry.filter(pl.col("symbol") == symbol).iter_rows(named=True)
        }
        if "model_fingerprints" in registry.columns
        else {}
    )
    behind = []
    for target in targets:
        current = set()
        for family in families:
            try:
                current.add(
                    ArtifactHandle.current(store, artifact_prefix([MODELS, family], symbol, target)).fingerprint
                )
            except ArtifactStoreError:  # never trained, failed or blocked: the registry cannot have seen it either
                continue
        if current and current != seen.get(target, set()):
            behind.append(f"{symbol}|{target}")
    return behind


@dataclass(frozen=True)
class ChampionPredictions:
    """A symbol's predictions (`PREDICTIONS_SCHEMA`, by target and time) and each champion's newest one."""

    table: pl.DataFrame
    latest: pl.DataFrame  # one row per target: family, model_version, timestamp, prediction


def predict_champions(
    champions: pl.DataFrame, features: pl.DataFrame, tracker: ModelTracker, log: Log = ignore
) -> ChampionPredictions:
    """Score each champion (`symbol_champions`' rows) on the symbol's feature table, from its
    held-out test start on; `log` gets one line per champion.

    Raises RuntimeError when a champion alias no longer names the version the registry recorded:
    the alias moved outside `model_registry`, so its table no longer says who serves."""
    frames = []
    for champion in champions.iter_rows(named=True):
        uri = champion["champion_uri"]
        version = tracker.version_by_alias(champion["registered_model"], names.CHAMPION)
        if version is None or str(version.version) != champion["champion_version"]:
            found = "nothing" if version is None else f"version {version.version}"
            raise RuntimeError(
                f"{uri} resolves to {found}, but model_registry recorded version {champion['champion_version']}: "
                "the alias moved outside model_registry; materialize model_registry, then predictions"
            )
        frame = _scores(champion, tracker.load_model(version), features)
        frames.append(frame.filter(pl.col("timestamp") >= datetime.fromisoformat(champion["champion_test_start"])))
        log(
            f"{champion['symbol']} {champion['target']}: {uri} (v{version.version}, {champion['champion_family']}) "
            f"scored {frame.height} bars"
        )
    table = (
        pl.concat(frames).select(list(PREDICTIONS_SCHEMA)).sort("target", "timestamp")
        if frames
        else pl.DataFrame(schema=PREDICTIONS_SCHEMA)
    )
    latest = (
        table.group_by("target", "family", "model_version")
        .agg(pl.col("timestamp").last(), pl.col("prediction").last())
        .sort("target")
    )
    return ChampionPredictions(table, latest)


def _scores(champion: dict[str, Any], model: Any, features: pl.DataFrame) -> pl.DataFrame:
    """The champion's prediction on every bar with the features its model was logged with."""
    feature_names = model.metadata.get_input_schema().input_names()
    timestamps, x = build_inference_matrix(features, feature_names)
    return pl.DataFrame(
        {"timestamp": utc_timestamps(timestamps), "prediction": pyfunc_predict(model, feature_names, x)}
    ).with_columns(
        pl.lit(champion["target"]).alias("target"),
        pl.lit(champion["champion_family"]).alias("family"),
        pl.lit(champion["champion_version"]).alias("model_version"),
    )
