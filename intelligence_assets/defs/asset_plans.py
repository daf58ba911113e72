"""The assets `make demo` and the retrain schedule plan: the declaration each asset module makes
beside its asset (`defs/assets/planning.py`). An asset not listed here is left to its own job or
schedule (housekeeping)."""

from intelligence_assets.defs.assets.hyperparameter_search import planned_search_config
from intelligence_assets.defs.assets.leaderboard import planned_leaderboard_config
from intelligence_assets.defs.assets.market_data import planned_bars_config, planned_features_config
from intelligence_assets.defs.assets.models import planned_model_config
from intelligence_assets.defs.assets.planning import AssetPlans
from intelligence_assets.defs.assets.predictions import planned_predictions_config
from intelligence_assets.defs.assets.registry import PLANNED_REGISTRY
from intelligence_assets.defs.assets.target_analysis import (
    planned_labels_config,
    planned_ranking_config,
    planned_selection_config,
)

ASSET_PLANS = AssetPlans(
    (
        planned_bars_config,
        planned_features_config,
        planned_labels_config,
        planned_ranking_config,
        planned_selection_config,
        planned_search_config,
        planned_model_config,
        planned_leaderboard_config,
        PLANNED_REGISTRY,
        planned_predictions_config,
    )
)
