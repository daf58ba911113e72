"""The one Definitions object: assets, checks, jobs and resources for this deployment."""

import warnings

import dagster as dg

# Deliberate uses of beta/preview APIs (data versions on outputs, partitioned check specs, the
# multi-to-single partition mapping): acknowledged once here instead of on every load.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
# market_data_job runs `bars` and `features`, whose policies differ on purpose (docs/design.md,
# *How work is cut into runs*); Dagster warns about that on every load. Backfills launched from
# the asset graph use each asset's own policy.
warnings.filterwarnings("ignore", message="Asset job market_data_job materializes assets with varying BackfillPolicies")

from intelligence_assets.config.code_revision import code_revision  # noqa: E402
from intelligence_assets.config.universe import REPOSITORY_ROOT, Universe, load_universe  # noqa: E402
from intelligence_assets.defs.assets.housekeeping import (  # noqa: E402
    CHECKPOINT_RETENTION,
    HOUSEKEEPING_JOB,
    STORAGE_USAGE,
    build_housekeeping_assets,
    build_housekeeping_schedule,
)
from intelligence_assets.defs.assets.hyperparameter_search import (  # noqa: E402
    SEARCH_GROUP,
    build_search_assets,
    searched_families,
)
from intelligence_assets.defs.assets.leaderboard import (  # noqa: E402
    MODEL_LEADERBOARD,
    build_leaderboard_asset,
    build_leaderboard_checks,
)
from intelligence_assets.defs.assets.market_data import BARS, FEATURES, build_market_data_assets  # noqa: E402
from intelligence_assets.defs.assets.models import MODEL_KEY_PREFIX, build_model_assets  # noqa: E402
from intelligence_assets.defs.assets.predictions import PREDICTIONS, build_predictions_asset  # noqa: E402
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY, build_registry_asset  # noqa: E402
from intelligence_assets.defs.assets.target_analysis import TARGET_ANALYSIS_ASSETS, build_target_analysis_assets  # noqa: E402
from intelligence_assets.defs.automation.alerts import run_failure_alerts  # noqa: E402
from intelligence_assets.defs.automation.schedules import build_retrain_schedule, build_search_schedule  # noqa: E402
from intelligence_assets.defs.automation.sensors import (  # noqa: E402
    build_champion_decay_sensor,
    build_new_bars_sensor,
    exploratory_tags,
    production_tags,
)
from intelligence_assets.defs.processes import worker_libraries  # noqa: E402
from intelligence_assets.defs.resources.deployment import Deployment  # noqa: E402 - imported after the warning filters on purpose


def build_assets(universe: Universe) -> list[dg.AssetsDefinition]:
    assets = [
        *build_market_data_assets(universe),
        *build_target_analysis_assets(universe),
        *build_search_assets(universe),
        *build_model_assets(universe),
        build_leaderboard_asset(universe),
        build_registry_asset(universe),
        build_predictions_asset(universe),
        *build_housekeeping_assets(universe),
    ]
    return list(dg.map_asset_specs(lambda spec: spec.replace_attributes(owners=universe.owners), assets))


# One job per partitioning: a run covers one partition of every asset in its stage.
MARKET_DATA_JOB = "market_data_job"
TRAINING_JOB = "training_job"
LEADERBOARD_JOB = "leaderboard_job"
REGISTRY_JOB = "registry_job"
PREDICTIONS_JOB = "predictions_job"
SEARCH_JOB = "hyperparameter_search_job"
TRAINING_SELECTION = dg.AssetSelection.assets(*TARGET_ANALYSIS_ASSETS) | dg.AssetSelection.key_prefixes(
    MODEL_KEY_PREFIX
)


def build_jobs(universe: Universe, deployment: Deployment) -> list:
    # Its steps all train: their processes fork with sklearn, torch and MLflow already imported.
    # Lighter jobs would pay more for that import than they save.
    training_executor = deployment.executor("step_processes_for_training", worker_libraries(universe))
    return [
        dg.define_asset_job(
            MARKET_DATA_JOB,
            selection=dg.AssetSelection.assets(BARS, FEATURES),
            description="Bars and features of one symbol.",
        ),
        dg.define_asset_job(
            TRAINING_JOB,
            selection=TRAINING_SELECTION,
            description="Labels, target ranking, feature selection and every model family for one symbol x target.",
            executor_def=training_executor,
        ),
        dg.define_asset_job(
            LEADERBOARD_JOB,
            selection=dg.AssetSelection.assets(MODEL_LEADERBOARD),
            description="All models' metrics and the champions.",
        ),
        dg.define_asset_job(
            REGISTRY_JOB,
            selection=dg.AssetSelection.assets(MODEL_REGISTRY),
            description=(
                "Apply the promotion rule to the MLflow registry; with `rollback` config, move champions back to "
                "previous-champion."
            ),
        ),
        dg.define_asset_job(
            HOUSEKEEPING_JOB,
            selection=dg.AssetSelection.assets(CHECKPOINT_RETENTION, STORAGE_USAGE),
            description=(
                "Checkpoint retention (dry_run config lists the actions only), then storage usage against the quota."
            ),
        ),
        dg.define_asset_job(
            PREDICTIONS_JOB,
            selection=dg.AssetSelection.assets(PREDICTIONS),
            description="Champion predictions for one symbol.",
        ),
    ] + (
        [
            dg.define_asset_job(
                SEARCH_JOB,
                # With the searches' inputs, so that searching a cell brings them up to date first
                # (cache hits when they are current).
                selection=dg.AssetSelection.assets(*TARGET_ANALYSIS_ASSETS) | dg.AssetSelection.groups(SEARCH_GROUP),
                description=(
                    "Hyperparameter searches of the families that declare `search:`, for one symbol x target: "
                    "exploratory runs, dequeued after production retraining."
                ),
                tags=exploratory_tags(universe, SEARCH_JOB),
                executor_def=training_executor,
            )
        ]
        if searched_families(universe)
        else []
    )


def build_automation(universe: Universe, assets: list[dg.AssetsDefinition], jobs: list) -> tuple[list, list]:
    """(schedules, sensors): how the platform runs itself (README, "Automation")."""
    by_name = {job.name: job for job in jobs}
    schedules = [
        build_housekeeping_schedule(by_name[HOUSEKEEPING_JOB]),
        build_retrain_schedule(universe, by_name[TRAINING_JOB], assets),
        *([build_search_schedule(universe, by_name[SEARCH_JOB], assets)] if SEARCH_JOB in by_name else []),
    ]
    sensors = [
        build_new_bars_sensor(universe),
        build_champion_decay_sensor(universe, by_name[TRAINING_JOB], by_name[REGISTRY_JOB]),
        run_failure_alerts,
        dg.AutomationConditionSensorDefinition(
            "automation",
            target=dg.AssetSelection.all() - dg.AssetSelection.groups("housekeeping", SEARCH_GROUP),
            run_tags=production_tags(universe, "automation"),
            default_status=dg.DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=universe.automation.automation_sensor_interval_seconds,
            description=(
                "Evaluates every asset's automation condition: a new bars partition flows downstream with no "
                "hand-made runs. Stop it to switch declarative automation off."
            ),
        ),
    ]
    return schedules, sensors


def with_code_references(assets: list[dg.AssetsDefinition], git_url: str | None) -> list[dg.AssetsDefinition]:
    """Each asset's source file and line in the UI; with `git_url`, a link to that line at the
    commit that is running (or `main` where the commit is unknown)."""
    referenced = dg.with_source_code_references(assets)
    if git_url is None:
        return list(referenced)
    return list(
        dg.link_code_references_to_git(
            referenced,
            git_url=git_url,
            git_branch=code_revision().commit or "main",
            file_path_mapping=dg.AnchorBasedFilePathMapping(
                local_file_anchor=REPOSITORY_ROOT, file_anchor_path_in_repository=""
            ),
        )
    )


def build_definitions(universe: Universe, deployment: Deployment) -> dg.Definitions:
    assets = with_code_references(build_assets(universe), deployment.git_url)
    jobs = build_jobs(universe, deployment)
    schedules, sensors = build_automation(universe, assets, jobs)
    return dg.Definitions(
        assets=assets,
        asset_checks=build_leaderboard_checks(universe),
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=deployment.resources(universe),
        executor=deployment.executor(),
    )


defs = build_definitions(load_universe(), Deployment.from_environment())
