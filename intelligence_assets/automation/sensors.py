"""Sensors: new bars in the bars store, and champions whose live skill has decayed.

Both keep a cursor (JSON) and give every request a run key derived from the evidence, so a tick
that repeats, or a daemon restarted with a lost cursor, requests nothing twice (Dagster drops a
run key it has seen for the sensor).
"""
import json
from datetime import datetime
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from intelligence_assets.assets.market_data import BARS
from intelligence_assets.fingerprints import table_fingerprint
from intelligence_assets.ml.decay import assess_decay
from intelligence_assets.partitions import SYMBOL_DIMENSION, cell_key, symbol_partitions
from intelligence_assets.resources.artifact_store import ArtifactStore, ArtifactStoreError
from intelligence_assets.resources.artifact_store_resource import ArtifactStoreResource
from intelligence_assets.resources.artifacts import ArtifactHandle
from intelligence_assets.resources.bars_source import BarsSourceResource
from intelligence_assets.universe import Universe

TRIGGER_TAG = "intelligence/trigger"


def production_tags(universe: Universe, trigger: str) -> dict[str, str]:
    """Runs the platform launches itself: production retraining, ahead of exploratory work."""
    return {"dagster/priority": str(universe.automation.production_priority), "intelligence/purpose": "production", TRIGGER_TAG: trigger}


def _stored_bars_version(store: ArtifactStore, symbol: str) -> str | None:
    try:
        return ArtifactHandle.current(store, f"bars/{symbol}").data_version
    except ArtifactStoreError:  # never materialized, blocked or unreadable: a run will sort it out
        return None


def build_new_bars_sensor(universe: Universe) -> dg.SensorDefinition:
    @dg.sensor(
        name="new_bars",
        asset_selection=[BARS],
        minimum_interval_seconds=universe.automation.bars_sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="New or changed <SYMBOL>.parquet in the bars store: registers a new symbol once and requests `bars` for exactly that symbol; declarative automation carries the change downstream.",
    )
    def new_bars(context: dg.SensorEvaluationContext, bars_source: BarsSourceResource, artifact_store: ArtifactStoreResource) -> dg.SensorResult:
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        store = artifact_store.store()
        source = bars_source.source()
        registered = set(context.instance.get_dynamic_partitions(SYMBOL_DIMENSION))
        new_symbols, requests, ignored = [], [], []
        for bars_file in source.files():
            if seen.get(bars_file.symbol) == bars_file.version:
                continue
            seen[bars_file.symbol] = bars_file.version
            if bars_file.symbol not in universe.symbols:
                ignored.append(bars_file.symbol)
                continue
            if bars_file.symbol not in registered:
                new_symbols.append(bars_file.symbol)
            # The file changed on disk; whether its bars did is the content hash's to say (a
            # rewrite with the same rows, or a cursor lost in a restart, requests nothing).
            try:
                content = table_fingerprint(source.read(bars_file.symbol))
            except (OSError, ValueError) as error:
                context.log.warning(f"bars file {bars_file.location} cannot be read yet ({error}); it will be retried when it changes")
                continue
            if content == _stored_bars_version(store, bars_file.symbol):
                continue
            requests.append(
                dg.RunRequest(
                    run_key=f"bars:{bars_file.symbol}:{content}",
                    partition_key=bars_file.symbol,
                    asset_selection=[BARS],
                    tags=production_tags(universe, "new_bars"),
                )
            )
        if ignored:
            context.log.info(f"bars files for symbols not in the universe, ignored: {sorted(ignored)}")
        if new_symbols:
            context.log.info(f"registering new symbols {new_symbols}")
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[symbol_partitions.build_add_request(new_symbols)] if new_symbols else [],
            cursor=json.dumps(seen, sort_keys=True),
        )

    return new_bars


def _load(store: ArtifactStore, prefix: str) -> tuple[Any, str] | None:
    try:
        handle = ArtifactHandle.current(store, prefix)
        return handle.load(), handle.fingerprint
    except ArtifactStoreError:
        return None


def build_champion_decay_sensor(universe: Universe, training_job: Any, registry_job: Any) -> dg.SensorDefinition:
    settings = universe.automation

    @dg.sensor(
        name="champion_decay",
        jobs=[training_job, registry_job],
        minimum_interval_seconds=settings.decay_sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Scores each champion on its labelled predictions after its held-out period; past the configured skill loss, requests a retrain of the partition and a registry reassessment.",
    )
    def champion_decay(context: dg.SensorEvaluationContext, artifact_store: ArtifactStoreResource) -> dg.SensorResult | dg.SkipReason:
        store = artifact_store.store()
        registry = _load(store, "model_registry")
        if registry is None:
            return dg.SkipReason("model_registry has not been materialized yet")
        table, _ = registry
        judged: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        requests = []
        for champion in table.filter(pl.col("champion_version").is_not_null()).iter_rows(named=True):
            symbol, target = champion["symbol"], champion["target"]
            cell = cell_key(symbol, target)
            predictions, labels = _load(store, f"predictions/{symbol}"), _load(store, f"labels/{symbol}/{target}")
            if predictions is None or labels is None or not champion["champion_test_end"]:
                continue
            evidence = f"v{champion['champion_version']}:{predictions[1]}:{labels[1]}"
            if judged.get(cell) == evidence:
                continue
            judged[cell] = evidence
            recent = (
                predictions[0]
                .filter((pl.col("target") == target) & (pl.col("model_version") == champion["champion_version"]))
                .join(labels[0].select("timestamp", "label"), on="timestamp")
                .filter(pl.col("label").is_not_null() & (pl.col("timestamp") > datetime.fromisoformat(champion["champion_test_end"])))
                .sort("timestamp")
                .tail(settings.decay_window_rows)
            )
            verdict = assess_decay(
                champion["metric"], champion["champion_score"], recent["label"].to_numpy().astype(np.float64),
                recent["prediction"].to_numpy(), settings.decay_min_rows, settings.decay_max_skill_loss,
            )
            context.log.info(f"{cell} champion v{champion['champion_version']}: {verdict.reason}")
            if not verdict.decayed:
                continue
            tags = {**production_tags(universe, "champion_decay"), "intelligence/decay": verdict.reason[:200]}
            requests.append(dg.RunRequest(run_key=f"decay-retrain:{cell}:{evidence}", job_name=training_job.name, partition_key=cell, tags=tags))
            requests.append(
                dg.RunRequest(
                    run_key=f"decay-reassess:{cell}:{evidence}",
                    job_name=registry_job.name,
                    run_config={"ops": {"model_registry": {"config": {"reassess": [cell]}}}},
                    tags=tags,
                )
            )
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(judged, sort_keys=True))

    return champion_decay
