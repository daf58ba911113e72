"""`model_leaderboard`: every model's held-out metrics, and per symbol x target the candidate
for promotion: the best model that may serve at all. Whether it replaces the serving champion
is the registry's decision (`model_registry`)."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import polars as pl

from intelligence_assets.cells.leaderboard import Leaderboard, models_changed_since, rank_models
from intelligence_assets.config.universe import Universe
from intelligence_assets.defs.assets.caching import Computed, materialize_cached
from intelligence_assets.defs.assets.market_data import BARS, FEATURES
from intelligence_assets.defs.assets.metadata import table_metadata
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.planning import PlanningContext, plans
from intelligence_assets.defs.assets.target_analysis import FEATURE_SETS, LABELS, TARGET_RANKINGS
from intelligence_assets.defs.automation.conditions import FROM_WHAT_EXISTS
from intelligence_assets.defs.partitions import SYMBOL_DIMENSION, cell_key
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.ml.trained_model import SUMMARY_FILE
from intelligence_assets.store.artifact_store import ArtifactStore, ArtifactStoreError
from intelligence_assets.store.artifacts import ArtifactHandle, BlockedArtifactError, latest_failure
from intelligence_assets.store.keys import artifact_prefix

MODEL_LEADERBOARD = dg.AssetKey("model_leaderboard")
# What a reader compares first, in the UI's `candidates` table and in `make demo`'s printout.
SUMMARY_COLUMNS = [
    "symbol",
    "target",
    "family",
    "metric",
    "score",
    "sharpe",
    "buy_and_hold_sharpe",
    "bars_per_year",
    "test_rows",
]
MISSING_SCHEMA = {
    "symbol": pl.String,
    "target": pl.String,
    "family": pl.String,
    "reason": pl.String,
    "failed_asset": pl.String,
    "run_id": pl.String,
}


def missing_models(store: ArtifactStore, expected: list[tuple[str, str]], present: dict[str, set[str]]) -> pl.DataFrame:
    """The cells of each family with no model, and why: the first asset along the cell's chain
    (bars -> features -> labels -> target_rankings -> feature_sets -> the model) whose latest
    attempt failed or whose bars are blocked; otherwise "not materialized yet"."""
    rows = []
    for family, partitions in sorted(present.items()):
        for symbol, target in expected:
            if cell_key(symbol, target) in partitions:
                continue
            reason, failed_asset, run_id = "not materialized yet", None, None
            chain = [(key, artifact_prefix(key, symbol)) for key in (BARS, FEATURES)] + [
                (key, artifact_prefix(key, symbol, target))
                for key in (LABELS, TARGET_RANKINGS, FEATURE_SETS, model_key(family))
            ]
            for key, prefix in chain:
                asset = key.to_user_string()
                failure = latest_failure(store, prefix)
                if failure is None and key == BARS:
                    try:
                        ArtifactHandle.current(store, prefix)
                    except BlockedArtifactError as error:
                        failure = {"error": str(error)}
                    except ArtifactStoreError:
                        pass
                if failure is not None:
                    reason, failed_asset, run_id = failure["error"], asset, failure.get("run_id")
                    break
            rows.append(
                {
                    "symbol": symbol,
                    "target": target,
                    "family": family,
                    "reason": reason,
                    "failed_asset": failed_asset,
                    "run_id": run_id,
                }
            )
    return pl.DataFrame(rows, schema=MISSING_SCHEMA)


def model_input_name(family: str) -> str:
    return f"models_{family}"


def leaderboard_config(universe: Universe, missing: pl.DataFrame | None = None) -> dict[str, Any]:
    """`missing` (from `missing_models`) is part of the config: a cell that newly failed, or
    failed for another reason, recomputes the leaderboard, which reports it."""
    digest = (
        []
        if missing is None
        else missing.select("symbol", "target", "family", "reason").sort("symbol", "target", "family").rows()
    )
    return {"leaderboard": universe.leaderboard, "families": list(universe.model_families), "missing": digest}


@plans(MODEL_LEADERBOARD)
def planned_leaderboard_config(context: PlanningContext) -> dict[str, Any]:
    # Asked only when every model is current (otherwise the leaderboard needs a run anyway), so
    # no model is missing.
    return leaderboard_config(context.universe)


def leaderboard_metadata(board: Leaderboard, missing: pl.DataFrame) -> dict[str, Any]:
    table = board.table
    return {
        "models": table.height,
        "trained": int(table["trained"].sum()),
        "candidates": table_metadata(board.candidates.to_dicts(), SUMMARY_COLUMNS),
        "gated": table_metadata(board.gated.to_dicts(), ["symbol", "target", "reason"]),
        "no_model_beats_no_skill": table_metadata(board.without_skill.to_dicts(), ["symbol", "target", "best_score"]),
        "leakage_suspects": int(table["leakage_suspect"].sum()),
        "missing_models": missing.height,
        "missing": table_metadata(
            missing.unique(["symbol", "target", "reason"]).to_dicts(),
            ["symbol", "target", "family", "failed_asset", "reason", "run_id"],
        ),
    }


def build_leaderboard_asset(universe: Universe) -> dg.AssetsDefinition:
    families = list(universe.model_families)
    model_ins = {model_input_name(f): dg.AssetIn(model_key(f)) for f in families}

    @dg.asset(
        key=MODEL_LEADERBOARD,
        automation_condition=FROM_WHAT_EXISTS,
        ins=model_ins,
        group_name="results",
        code_version="1",
        kinds={"polars"},
        description=(
            "Every model's held-out metrics; per symbol x target the candidate for promotion (best eligible model by "
            "the configured metric)."
        ),
    )
    def model_leaderboard(
        context: dg.AssetExecutionContext, artifact_store: ArtifactStoreResource, **models: dict[str, ArtifactHandle]
    ) -> Iterator[dg.Output]:
        store = artifact_store.store()
        symbols = context.instance.get_dynamic_partitions(SYMBOL_DIMENSION)
        expected = [(symbol, target) for symbol in symbols for target in universe.target_names]
        present = {name.removeprefix("models_"): set(handles) for name, handles in models.items()}
        # Cheap (pointers and failure records) and part of the result: a newly failed cell
        # changes the leaderboard's fingerprint, so it is recomputed and says so.
        missing = missing_models(store, expected, present)
        if missing.height:
            context.log.warning(
                f"leaderboard over what exists: {missing.height} models missing in "
                f"{missing.select('symbol', 'target').unique().height} cells, e.g. "
                + "; ".join(
                    f"{row['symbol']}|{row['target']} {row['family']}: {row['reason'][:200]}"
                    for row in missing.head(3).iter_rows(named=True)
                )
            )

        def compute() -> Computed:
            summaries = {
                name.removeprefix("models_"): {key: handle.load_json(SUMMARY_FILE) for key, handle in handles.items()}
                for name, handles in models.items()
            }
            fingerprints = {
                name.removeprefix("models_"): {key: handle.fingerprint for key, handle in handles.items()}
                for name, handles in models.items()
            }
            board = rank_models(summaries, universe, fingerprints)
            context.log.info(
                f"leaderboard: {board.table.height} models, {board.candidates.height} candidates, "
                f"{board.gated.height} gated cells, {board.without_skill.height} trained cells where no model beats "
                "no-skill on held-out data"
            )
            return Computed(board.table, metadata=leaderboard_metadata(board, missing))

        yield from materialize_cached(context, store, models, leaderboard_config(universe, missing), compute)

    return model_leaderboard


def build_leaderboard_checks(universe: Universe) -> list[dg.AssetChecksDefinition]:
    families, targets = list(universe.model_families), universe.target_names

    @dg.asset_check(
        asset=MODEL_LEADERBOARD,
        name="models_current",
        additional_deps=[model_key(family) for family in families],
        description=(
            "The leaderboard ranks every model now current: fails (warning) naming each model partition retrained or "
            "new since it ran. Dagster does not judge the staleness of an unpartitioned asset over more than 100 "
            "upstream partitions; run this check from the UI, or it runs with the leaderboard."
        ),
    )
    def models_current(
        context: dg.AssetCheckExecutionContext, artifact_store: ArtifactStoreResource
    ) -> dg.AssetCheckResult:
        store = artifact_store.store()
        board = ArtifactHandle.current(store, artifact_prefix(MODEL_LEADERBOARD.to_user_string())).load()
        symbols = context.instance.get_dynamic_partitions(SYMBOL_DIMENSION)
        cells = [(symbol, target, family) for symbol in symbols for target in targets for family in families]
        changed = models_changed_since(store, board, cells)
        return dg.AssetCheckResult(
            passed=not changed,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"{len(changed)} of {len(cells)} models changed since the leaderboard ran; materialize it"
                if changed
                else f"ranks the current model of all {len(cells)} cells and families that have one"
            ),
            metadata={"models_changed": len(changed), "changed": dg.MetadataValue.json(changed[:100])},
        )

    return [models_current]
