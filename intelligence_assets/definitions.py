"""The one Definitions object: assets, checks, jobs and resources for this deployment."""

import warnings

import dagster as dg

# Deliberate uses of beta/preview APIs (data versions on outputs, partitioned check specs, the
# multi-to-single partition mapping): acknowledged once here instead of on every load.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

from intelligence_assets.assets.housekeeping import HOUSEKEEPING_JOB, build_housekeeping_assets, build_housekeeping_schedule
from intelligence_assets.assets.leaderboard import build_leaderboard_asset
from intelligence_assets.assets.market_data import build_market_data_assets
from intelligence_assets.assets.models import build_model_assets
from intelligence_assets.assets.predictions import build_predictions_asset
from intelligence_assets.assets.registry import build_registry_asset
from intelligence_assets.assets.target_analysis import build_target_analysis_assets
from intelligence_assets.deployment import DeploymentSettings
from intelligence_assets.universe import Universe, load_universe


def build_assets(universe: Universe) -> list[dg.AssetsDefinition]:
    return [
        *build_market_data_assets(universe),
        *build_target_analysis_assets(universe),
        *build_model_assets(universe),
        build_leaderboard_asset(universe),
        build_registry_asset(universe),
        build_predictions_asset(universe),
        *build_housekeeping_assets(universe),
    ]


# One job per partitioning: a run covers one partition of every asset in its stage.
MARKET_DATA_JOB = "market_data_job"
TRAINING_JOB = "training_job"
LEADERBOARD_JOB = "leaderboard_job"
REGISTRY_JOB = "registry_job"
PREDICTIONS_JOB = "predictions_job"


def build_jobs() -> list:
    return [
        dg.define_asset_job(MARKET_DATA_JOB, selection=dg.AssetSelection.assets("bars", "features"), description="Bars and features of one symbol."),
        dg.define_asset_job(
            TRAINING_JOB,
            selection=dg.AssetSelection.assets("labels", "target_rankings", "feature_sets") | dg.AssetSelection.key_prefixes("models"),
            description="Labels, target ranking, feature selection and every model family for one symbol x target.",
        ),
        dg.define_asset_job(LEADERBOARD_JOB, selection=dg.AssetSelection.assets("model_leaderboard"), description="All models' metrics and the champions."),
        dg.define_asset_job(
            REGISTRY_JOB,
            selection=dg.AssetSelection.assets("model_registry"),
            description="Apply the promotion rule to the MLflow registry; with `rollback` config, move champions back to previous-champion.",
        ),
        dg.define_asset_job(
            HOUSEKEEPING_JOB,
            selection=dg.AssetSelection.assets("checkpoint_retention", "storage_usage"),
            description="Checkpoint retention (dry_run config lists the actions only), then storage usage against the quota.",
        ),
        dg.define_asset_job(PREDICTIONS_JOB, selection=dg.AssetSelection.assets("predictions"), description="Champion predictions for one symbol."),
    ]


def build_definitions(universe: Universe, deployment: DeploymentSettings) -> dg.Definitions:
    jobs = build_jobs()
    housekeeping = next(job for job in jobs if job.name == HOUSEKEEPING_JOB)
    return dg.Definitions(assets=build_assets(universe), jobs=jobs, schedules=[build_housekeeping_schedule(housekeeping)], resources=deployment.resources(universe))


defs = build_definitions(load_universe(), DeploymentSettings.from_environment())
