"""One pass of the promotion rule over the MLflow registry: for every symbol x target on the
leaderboard, decide its aliases (promote, keep, roll back, retire) and move those that differ;
champions of symbols that left the universe are retired. What `model_registry` does, without
Dagster."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from intelligence_assets.cells import Log, ignore
from intelligence_assets.store.artifact_store import ArtifactStore, ArtifactStoreError
from intelligence_assets.store.artifacts import read_manifest
from intelligence_assets.store.keys import BARS, FEATURES, MODELS, artifact_prefix, pointer_key
from intelligence_assets.tracking import names
from intelligence_assets.tracking.promotion import (
    AliasDecision,
    Candidate,
    PromotionSettings,
    decide_aliases,
    retire,
    roll_back,
)
from intelligence_assets.tracking.tracker import ModelTracker

Clock = Callable[[], datetime]
# The aliases a pass moves, in the order it moves them.
ALIASES = (names.CHAMPION, names.PREVIOUS_CHAMPION, names.CHALLENGER)

REGISTRY_SCHEMA = {
    "symbol": pl.String,
    "target": pl.String,
    "registered_model": pl.String,
    "metric": pl.String,
    "champion_version": pl.String,
    "champion_family": pl.String,
    "champion_fingerprint": pl.String,
    "champion_score": pl.Float64,
    "champion_test_start": pl.String,
    "champion_test_end": pl.String,
    "champion_uri": pl.String,
    "previous_champion_version": pl.String,
    "previous_champion_family": pl.String,
    "previous_champion_fingerprint": pl.String,
    "previous_champion_score": pl.Float64,
    "challenger_version": pl.String,
    "challenger_family": pl.String,
    "challenger_fingerprint": pl.String,
    "challenger_score": pl.Float64,
    "action": pl.String,
    "reason": pl.String,
    # Every model of the cell the registry decided from: `predictions` refuses a registry that
    # has not yet seen the models now current in the store.
    "model_fingerprints": pl.String,
}


def utc_now() -> datetime:
    """The default `clock`: now, in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class RegistryUpdate:
    """What one pass over the registry left: one row per cell (`REGISTRY_SCHEMA`, sorted by
    symbol and target) and one line per registered model whose aliases moved."""

    table: pl.DataFrame
    changes: list[str] = field(default_factory=list)

    @property
    def champions(self) -> pl.DataFrame:
        """The rows of cells that have a champion."""
        return self.table.filter(pl.col("champion_version").is_not_null())


def require_reason(rollback: Collection[tuple[str, str]], reason: str) -> None:
    """Raises ValueError for a rollback without a reason: the reason is recorded on the rolled-back version."""
    if rollback and not reason.strip():
        raise ValueError("a rollback needs a reason (config `reason`): it is recorded on the rolled-back version")


def update_registry(
    tracker: ModelTracker,
    store: ArtifactStore,
    leaderboard: pl.DataFrame,
    settings: PromotionSettings,
    symbols: Collection[str],
    run_id: str,
    rollback: Collection[tuple[str, str]] = (),
    reason: str = "",
    reassess: Collection[tuple[str, str]] = (),
    log: Log = ignore,
    warn: Log = ignore,
    clock: Clock = utc_now,
) -> RegistryUpdate:
    """Apply the promotion rule to every cell of `leaderboard` (the `model_leaderboard` table)
    and move the registry's aliases where the decision differs from what they are.

    `symbols` are the symbols now in the universe: a champion of any other symbol is retired.
    `rollback` cells go back to their previous champion, the version they leave tagged with
    `reason` and `run_id` (the run that decided, as is every retirement). `reassess` cells
    have decayed champions: the best qualified version takes over without the min_improvement
    margin. A champion trained on bars its symbol no longer has is retired (read through the
    model's provenance in `store`). `log` takes each alias move and a summary line, `warn` each
    leaderboard model that cannot be a candidate; `clock` stamps the retirement and rollback tags.

    Raises ValueError for a rollback without a reason or of a cell the leaderboard does not have.
    """
    require_reason(rollback, reason)
    cells = leaderboard.select("symbol", "target").unique(maintain_order=True).rows()
    unknown = [cell for cell in rollback if cell not in cells]
    if unknown:
        raise ValueError(f"rollback of {unknown}: no models on the leaderboard for these cells")
    models = tracker.registered_models()
    registry = _RegistryPass(
        tracker,
        store,
        leaderboard.partition_by("symbol", "target", as_dict=True),
        {model.name: {alias: str(version) for alias, version in (model.aliases or {}).items()} for model in models},
        tracker.versions_by_model(),
        settings,
        run_id,
        reason,
        log,
        warn,
        clock,
    )
    rows: list[dict[str, Any]] = []
    changes: list[str] = []
    retired = set()
    for name, symbol, target in champions_of_removed_symbols(models, set(symbols)):
        row, change = registry.retire_removed_symbol(name, symbol, target)
        rows.append(row)
        changes.append(change)
        retired.add((symbol, target))
    # A leaderboard stored before the symbol left the universe still has its cells (a rollback
    # run ahead of the leaderboard): the retirement is their row, and nothing is promoted there.
    for symbol, target in (cell for cell in cells if cell not in retired):
        row, change = registry.update_cell(
            symbol, target, rolling_back=(symbol, target) in rollback, reassessing=(symbol, target) in reassess
        )
        rows.append(row)
        if change:
            changes.append(change)
    table = pl.DataFrame(rows, schema=REGISTRY_SCHEMA).sort("symbol", "target")
    update = RegistryUpdate(table, changes)
    log(f"registry: {update.champions.height} champions over {table.height} cells; {len(changes)} cells changed")
    return update


@dataclass(frozen=True)
class _RegistryPass:
    """What every cell's decision in one pass reads and writes through. The registry is read
    once, before the first cell (`aliases`, `versions`): a request or two a cell made the pass
    grow with the universe."""

    tracker: ModelTracker
    store: ArtifactStore
    # (symbol, target) -> the cell's leaderboard rows
    leaderboard: dict[tuple[Any, ...], pl.DataFrame]
    # registered model -> alias -> version, as the pass began
    aliases: dict[str, dict[str, str]]
    # registered model -> its versions, as the pass began
    versions: dict[str, list[Any]]
    settings: PromotionSettings
    run_id: str
    reason: str
    log: Log
    warn: Log
    clock: Clock
    # symbol -> its bars pointer, read once per pass however many versions are judged against it.
    bars_pointers: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def retire_removed_symbol(self, name: str, symbol: str, target: str) -> tuple[dict[str, Any], str]:
        """Retire the champion of a symbol that left the universe: its registry row and line of changes."""
        current = self.aliases[name]
        why = f"{symbol} is no longer in the universe"
        decision = retire([], current, self.settings, why)
        self.tracker.set_version_tag(name, current[names.CHAMPION], names.RETIRED_TAG, self.stamp(why))
        moved = apply_decision(self.tracker, name, current, decision)
        self.log(f"{name}: {decision.reason}; " + ", ".join(moved))
        row = {
            "symbol": symbol,
            "target": target,
            "registered_model": name,
            "action": "retired",
            "reason": decision.reason,
            "previous_champion_version": decision.previous_champion,
        }
        return row, f"{name}: {decision.action}; " + ", ".join(moved)

    def update_cell(
        self, symbol: str, target: str, rolling_back: bool, reassessing: bool
    ) -> tuple[dict[str, Any], str | None]:
        """One cell's decision, applied: its registry row, and its line of changes (None when no alias moved)."""
        name = names.registered_model_name(symbol, target)
        models_of_cell = self.leaderboard[(symbol, target)]
        rows_of_cell = models_of_cell.filter(pl.col("trained"))
        # Even a cell with no trained model now: an earlier champion keeps its alias.
        current = self.aliases.get(name, {})
        versions = self.versions_of(name, rows_of_cell, current)
        by_number = {str(version.version): version for version in versions}
        if rolling_back:
            decision = roll_back(current, self.reason)
            self.tracker.set_version_tag(name, current[names.CHAMPION], names.ROLLED_BACK_TAG, self.stamp(self.reason))
        else:
            candidates = self.candidates(name, rows_of_cell, versions, symbol, target)
            champion = by_number.get(current.get(names.CHAMPION, ""))
            replaced_bars = champion is not None and self.trained_on_replaced_bars(champion.tags, symbol, target)
            if replaced_bars:
                # However well it scored on the old bars, it must not keep serving once the
                # symbol's bars changed: only models current for the new bars may.
                decision = retire(candidates, current, self.settings, replaced_bars)
                self.tracker.set_version_tag(name, str(champion.version), names.RETIRED_TAG, self.stamp(replaced_bars))
            else:
                # A decayed champion's held-out score no longer describes it.
                recorded = recorded_score(champion.tags) if champion and not reassessing else None
                decision = decide_aliases(candidates, current, recorded, self.settings)
        moved = apply_decision(self.tracker, name, current, decision)
        if moved:
            self.log(f"{name}: {decision.action} ({decision.reason}); " + ", ".join(moved))
        champion = by_number.get(decision.champion or "")
        previous = by_number.get(decision.previous_champion or "")
        challenger = by_number.get(decision.challenger or "")
        row = {
            "symbol": symbol,
            "target": target,
            "registered_model": name,
            "metric": champion.tags.get(names.SCORE_METRIC_TAG) if champion else None,
            "champion_version": decision.champion,
            "champion_family": champion.tags.get(names.FAMILY_TAG) if champion else None,
            "champion_fingerprint": champion.tags.get(names.FINGERPRINT_TAG) if champion else None,
            "champion_score": recorded_score(champion.tags) if champion else None,
            "champion_test_start": champion.tags.get(names.TEST_START_TAG) if champion else None,
            "champion_test_end": champion.tags.get(names.TEST_END_TAG) if champion else None,
            "champion_uri": f"models:/{name}@{names.CHAMPION}" if decision.champion else None,
            "previous_champion_version": decision.previous_champion,
            "previous_champion_family": previous.tags.get(names.FAMILY_TAG) if previous else None,
            "previous_champion_fingerprint": previous.tags.get(names.FINGERPRINT_TAG) if previous else None,
            "previous_champion_score": recorded_score(previous.tags) if previous else None,
            "challenger_version": decision.challenger,
            "challenger_family": challenger.tags.get(names.FAMILY_TAG) if challenger else None,
            "challenger_fingerprint": challenger.tags.get(names.FINGERPRINT_TAG) if challenger else None,
            "challenger_score": recorded_score(challenger.tags) if challenger else None,
            "action": decision.action if moved or decision.action == "no champion" else "kept",
            "reason": decision.reason,
            "model_fingerprints": ",".join(sorted(models_of_cell["model_fingerprint"].drop_nulls())),
        }
        return row, (f"{name}: {decision.action}; " + ", ".join(moved) if moved else None)

    def versions_of(self, name: str, rows_of_cell: pl.DataFrame, current: dict[str, str]) -> list[Any]:
        """The registered model's versions; read again where a model on the leaderboard or a
        version an alias names is missing from what the pass read first (registered since by a
        training run still going, or passed over by a page when another version was deleted)."""
        versions = self.versions.get(name, [])
        fingerprints = {version.tags.get(names.FINGERPRINT_TAG) for version in versions}
        numbers = {str(version.version) for version in versions}
        if set(rows_of_cell["model_fingerprint"].drop_nulls()) <= fingerprints and set(current.values()) <= numbers:
            return versions
        return self.tracker.versions(name)

    def candidates(
        self, name: str, rows_of_cell: pl.DataFrame, versions: Iterable[Any], symbol: str, target: str
    ) -> list[Candidate]:
        """The cell's leaderboard models that may hold an alias, as registry versions."""
        by_fingerprint = {version.tags.get(names.FINGERPRINT_TAG): version for version in versions}
        candidates = []
        for row in rows_of_cell.iter_rows(named=True):
            version = by_fingerprint.get(row["model_fingerprint"])
            if version is None:
                self.warn(
                    f"{name}: {row['family']} model {row['model_fingerprint']} has no registry version; "
                    f"rematerialize models/{row['family']} {symbol}|{target}"
                )
                continue
            stale = self.trained_on_replaced_bars(version.tags, symbol, target)
            if stale:  # its retraining on the new bars failed or has not run yet
                self.warn(f"{name}: {row['family']} v{version.version} is not a candidate: {stale}")
                continue
            candidates.append(
                Candidate(
                    version=str(version.version),
                    family=row["family"],
                    score=row["score"],
                    test_rows=int(row["test_rows"] or 0),
                    eligible=bool(row["eligible"]),
                    rolled_back=names.ROLLED_BACK_TAG in version.tags,
                )
            )
        return candidates

    def trained_on_replaced_bars(self, tags: dict[str, str], symbol: str, target: str) -> str | None:
        if symbol not in self.bars_pointers:
            try:
                self.bars_pointers[symbol] = self.store.get_json(pointer_key(artifact_prefix(BARS, symbol)))
            except ArtifactStoreError:
                self.bars_pointers[symbol] = None
        pointer = self.bars_pointers[symbol]
        return None if pointer is None else trained_on_replaced_bars(self.store, tags, symbol, target, pointer)

    def stamp(self, why: str) -> str:
        """A retirement or rollback tag's value: when, by which run, why."""
        return f"{self.clock().isoformat(timespec='seconds')} run {self.run_id}: {why}"


def trained_on_replaced_bars(
    store: ArtifactStore, tags: dict[str, str], symbol: str, target: str, bars_pointer: dict[str, Any]
) -> str | None:
    """Why a version was trained on bars the symbol no longer has (`bars_pointer`: the symbol's
    current bars), or None: read through the model's and its features' provenance. Bars that
    failed a blocking check replace nothing yet (no model can be trained on them), so the last
    good champion keeps serving meanwhile."""
    pointer = bars_pointer
    try:
        manifest = read_manifest(
            store, artifact_prefix([MODELS, tags[names.FAMILY_TAG]], symbol, target), tags[names.FINGERPRINT_TAG]
        )
        features = read_manifest(store, artifact_prefix(FEATURES, symbol), manifest.provenance["inputs"]["features"])
        trained_on = features.provenance["inputs"]["bars"]
    except (ArtifactStoreError, KeyError):  # no provenance to judge by: the promotion rule decides
        return None
    if pointer.get("blocked_by") or trained_on == pointer.get("data_version"):
        return None
    return f"trained on bars {trained_on[:12]}, but {symbol}'s bars are now {str(pointer.get('data_version'))[:12]}"


def champions_of_removed_symbols(models: Iterable[Any], symbols: set[str]) -> list[tuple[str, str, str]]:
    """(registered model, symbol, target) of every champion among `models` (the registry's
    registered models) whose symbol is not in `symbols` (removed from the universe); read from
    the registered models' tags."""
    found = []
    for model in models:
        symbol, target = model.tags.get(names.SYMBOL_TAG), model.tags.get(names.TARGET_TAG)
        if symbol and symbol not in symbols and names.CHAMPION in (model.aliases or {}):
            found.append((model.name, symbol, target))
    return sorted(found)


def recorded_score(tags: dict[str, str]) -> float | None:
    """A version's held-out score as recorded in its tags; None when absent or not finite."""
    try:
        value = float(tags.get(names.SCORE_TAG, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def decided_aliases(decision: AliasDecision) -> dict[str, str]:
    """alias -> version, as `decision` leaves them (an alias it removes is absent)."""
    wanted = dict(zip(ALIASES, (decision.champion, decision.previous_champion, decision.challenger), strict=True))
    return {alias: version for alias, version in wanted.items() if version is not None}


def apply_decision(tracker: ModelTracker, name: str, current: dict[str, str], decision: AliasDecision) -> list[str]:
    """Move only the aliases that differ; returns what changed."""
    wanted = decided_aliases(decision)
    changes = []
    for alias in ALIASES:
        version = wanted.get(alias)
        if current.get(alias) == version:
            continue
        if version is None:
            tracker.delete_alias(name, alias)
            changes.append(f"{alias} removed (was v{current[alias]})")
        else:
            tracker.set_alias(name, alias, version)
            changes.append(f"{alias} -> v{version}" + (f" (was v{current[alias]})" if alias in current else ""))
    return changes
