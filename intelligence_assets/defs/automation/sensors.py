"""Sensors: new bars in the bars store, and champions whose live skill has decayed.

Both keep a cursor (JSON) and give every request a run key derived from the evidence, so a tick
that repeats, or a daemon restarted with a lost cursor, requests nothing twice (Dagster drops a
run key it has seen for the sensor).
"""

import hashlib
import json
from datetime import datetime
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from intelligence_assets.config.universe import Universe, UniverseError, load_universe
from intelligence_assets.defs.assets.leaderboard import MODEL_LEADERBOARD
from intelligence_assets.defs.assets.market_data import BARS, read_symbol_bars
from intelligence_assets.defs.assets.predictions import PREDICTIONS
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.defs.assets.target_analysis import LABELS
from intelligence_assets.defs.partitions import SYMBOL_DIMENSION, cell_key, symbol_partitions
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.defs.resources.bars_source import BarsSourceResource
from intelligence_assets.ml.decay import assess_decay
from intelligence_assets.store.artifact_store import ArtifactStore, ArtifactStoreError
from intelligence_assets.store.artifacts import ArtifactHandle
from intelligence_assets.store.fingerprints import table_fingerprint
from intelligence_assets.store.keys import artifact_prefix

TRIGGER_TAG = "intelligence/trigger"


def _purpose_tags(priority: int, purpose: str, trigger: str) -> dict[str, str]:
    # The run queue dequeues by `dagster/priority` and limits runs by `intelligence/purpose` (dagster.yaml).
    return {"dagster/priority": str(priority), "intelligence/purpose": purpose, TRIGGER_TAG: trigger}


def production_tags(universe: Universe, trigger: str) -> dict[str, str]:
    """Runs the platform launches itself: production retraining, ahead of exploratory work."""
    return _purpose_tags(universe.automation.production_priority, "production", trigger)


def exploratory_tags(universe: Universe, trigger: str) -> dict[str, str]:
    """Runs a user asks for to explore (hyperparameter search): dequeued after production's, and
    limited to one at a time by the run queue's `intelligence/purpose` limit (dagster.yaml)."""
    return _purpose_tags(universe.automation.exploratory_priority, "exploratory", trigger)


def _stored_bars_version(store: ArtifactStore, symbol: str) -> str | None:
    try:
        return ArtifactHandle.current(store, artifact_prefix(BARS, symbol)).data_version
    except ArtifactStoreError:  # never materialized, blocked or unreadable: a run will sort it out
        return None


def _graph_changes(loaded: Universe, fresh: Universe) -> list[str]:
    """What in universe.yaml changed that only a reload of the code location applies: targets and
    model families shape the asset graph; symbols do not (they are partitions)."""
    changes = []
    if fresh.target_names != loaded.target_names or fresh.targets != loaded.targets:
        changes.append("targets")
    if fresh.model_families != loaded.model_families:
        changes.append("model_families")
    return changes


def build_new_bars_sensor(universe: Universe) -> dg.SensorDefinition:
    @dg.sensor(
        name="new_bars",
        asset_selection=[BARS, MODEL_LEADERBOARD, MODEL_REGISTRY],
        minimum_interval_seconds=universe.automation.bars_sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Keeps the `symbol` partitions in step with universe.yaml (read every tick, no reload needed) and requests "
            "`bars` for exactly the symbol whose <SYMBOL>.parquet is new or changed; declarative automation carries "
            "the change downstream."
        ),
    )
    def new_bars(
        context: dg.SensorEvaluationContext, bars_source: BarsSourceResource, artifact_store: ArtifactStoreResource
    ) -> dg.SensorResult | dg.SkipReason:
        try:
            # Read every tick: adding or removing a symbol must not wait for a reload.
            current = load_universe(universe.source_path) if universe.source_path else universe
        except UniverseError as error:
            context.log.error(f"universe.yaml is invalid; symbols unchanged until it is fixed: {error}")
            return dg.SkipReason(f"invalid universe file: {error}")
        reshaped = _graph_changes(universe, current)
        if reshaped:
            context.log.warning(
                f"universe.yaml changed {reshaped}: reload the code location (UI: Deployment -> Reload) for that to "
                "take effect"
            )
        cursor = json.loads(context.cursor) if context.cursor else {}
        # Only files acted on are remembered: one that arrives before its symbol is in the universe
        # is picked up as soon as the symbol is added. An unreadable version is remembered apart,
        # so it is reported once and retried when the file changes.
        acted: dict[str, str] = cursor.get("acted", {}) if isinstance(cursor.get("acted"), dict) else {}
        unreadable: dict[str, str] = cursor.get("unreadable", {}) if isinstance(cursor.get("unreadable"), dict) else {}
        store = artifact_store.store()
        source = bars_source.source()
        registered = set(context.instance.get_dynamic_partitions(SYMBOL_DIMENSION))
        wanted = set(current.symbols)
        new_symbols, requests, ignored = [], [], []
        bars_files = source.files()
        for bars_file in bars_files:
            if bars_file.symbol not in wanted:
                ignored.append(bars_file.symbol)
                continue
            if (
                acted.get(bars_file.symbol) == bars_file.version
                or unreadable.get(bars_file.symbol) == bars_file.version
            ):
                continue
            # The file changed on disk; whether its bars did is the content hash's to say (a
            # rewrite with the same rows, or a cursor lost in a restart, requests nothing).
            try:
                content = table_fingerprint(read_symbol_bars(source, bars_file.symbol))
            except (OSError, ValueError) as error:
                context.log.error(
                    f"bars file {bars_file.location} cannot be used ({error}); {bars_file.symbol} is not requested "
                    "until the file changes"
                )
                unreadable[bars_file.symbol] = bars_file.version
                continue
            unreadable.pop(bars_file.symbol, None)
            acted[bars_file.symbol] = bars_file.version
            if bars_file.symbol not in registered:
                new_symbols.append(bars_file.symbol)
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
        without_file = sorted(wanted - {bars_file.symbol for bars_file in bars_files})
        if without_file:
            context.log.warning(
                f"symbols in universe.yaml without a bars file, not registered until one arrives: {without_file}"
            )
        removed = sorted(registered - wanted)
        if ignored:
            context.log.info(
                f"bars files for symbols not in universe.yaml, ignored until they are added: {sorted(ignored)}"
            )
        if new_symbols:
            context.log.info(f"registering new symbols {new_symbols}")
        partition_requests = [symbol_partitions.build_add_request(new_symbols)] if new_symbols else []
        if removed:
            context.log.info(
                f"symbols removed from universe.yaml: {removed}; their partitions stop counting (artifacts and MLflow "
                "history are kept) "
                "and model_registry retires their champions"
            )
            partition_requests.append(symbol_partitions.build_delete_request(removed))
            for symbol in removed:
                acted.pop(symbol, None)
            requests.append(
                dg.RunRequest(
                    run_key=f"removed:{','.join(removed)}:"
                    + hashlib.sha256(",".join(sorted(registered)).encode()).hexdigest()[:16],
                    asset_selection=[MODEL_LEADERBOARD, MODEL_REGISTRY],
                    tags={
                        **production_tags(universe, "new_bars"),
                        "intelligence/reason": f"symbols removed: {', '.join(removed)}"[:200],
                    },
                )
            )
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=partition_requests,
            cursor=json.dumps({"acted": acted, "unreadable": unreadable}, sort_keys=True),
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
        description=(
            "Scores each champion on its labelled predictions after its held-out period; past the configured skill "
            "loss, requests a retrain of the partition and a registry reassessment."
        ),
    )
    def champion_decay(
        context: dg.SensorEvaluationContext, artifact_store: ArtifactStoreResource
    ) -> dg.SensorResult | dg.SkipReason:
        store = artifact_store.store()
        registry = _load(store, artifact_prefix(MODEL_REGISTRY))
        if registry is None:
            return dg.SkipReason("model_registry has not been materialized yet")
        table, _ = registry
        judged: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        requests = []
        for champion in table.filter(pl.col("champion_version").is_not_null()).iter_rows(named=True):
            symbol, target = champion["symbol"], champion["target"]
            cell = cell_key(symbol, target)
            predictions, labels = (
                _load(store, artifact_prefix(PREDICTIONS, symbol)),
                _load(store, artifact_prefix(LABELS, symbol, target)),
            )
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
                .filter(
                    pl.col("label").is_not_null()
                    & (pl.col("timestamp") > datetime.fromisoformat(champion["champion_test_end"]))
                )
                .sort("timestamp")
                .tail(settings.decay_window_rows)
            )
            verdict = assess_decay(
                champion["metric"],
                champion["champion_score"],
                recent["label"].to_numpy().astype(np.float64),
                recent["prediction"].to_numpy(),
                settings.decay_min_rows,
                settings.decay_max_skill_loss,
            )
            context.log.info(f"{cell} champion v{champion['champion_version']}: {verdict.reason}")
            if not verdict.decayed:
                continue
            tags = {**production_tags(universe, "champion_decay"), "intelligence/decay": verdict.reason[:200]}
            requests.append(
                dg.RunRequest(
                    run_key=f"decay-retrain:{cell}:{evidence}",
                    job_name=training_job.name,
                    partition_key=cell,
                    tags=tags,
                )
            )
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
