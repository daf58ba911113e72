"""How the planner judges `models/<family>` and `model_registry` (see `planning.py`).

These declarations belong beside their assets, in `models.py` and `registry.py`; they sit here
only until those modules take them. `definitions.py` imports this module with the assets.
"""

from typing import Any

import dagster as dg

from intelligence_assets.defs.assets.models import MODEL_KEY_PREFIX, model_config
from intelligence_assets.defs.assets.planning import PlanningContext, always_computed, plans
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY


@plans(dg.AssetKey([MODEL_KEY_PREFIX]))
def planned_model_config(context: PlanningContext) -> dict[str, Any]:
    family = context.asset_key.path[-1]
    return model_config(context.universe, family, context.symbol, context.target)


# The registry's state lives in MLflow, and only model_registry materializations (promotion,
# rollback) move its aliases: it needs a run when the leaderboard does, when it never ran, or
# when its code changed (its table may have changed shape).
always_computed(MODEL_REGISTRY)
