"""Declarative automation: every asset downstream of `bars` follows its inputs.

`eager()` requests a partition when one of its inputs was updated (or it is newly missing) and
none of its inputs is missing or still in progress, and never while it runs itself. The graph
is acyclic and a partition only reacts to its own inputs, so a new `bars` partition flows
through its symbol's features, labels, rankings, feature sets, models, then the leaderboard, the
registry and the predictions, once, and fresh partitions are left alone. The `automation` sensor
evaluates the conditions; stopping it (UI, Automation tab) switches all of this off.
"""

import dagster as dg

FOLLOWS_UPSTREAM = dg.AutomationCondition.eager()

# For assets that summarise many partitions (the leaderboard over every model): a symbol that
# failed must not hold back the others, so they run over what exists instead of waiting for
# every input partition; they still wait while any input is being computed.
FROM_WHAT_EXISTS = FOLLOWS_UPSTREAM.without(~dg.AutomationCondition.any_deps_missing()).with_label(
    "eager, over what exists"
)


def follows_only(updated_by: dg.AssetKey, required: list[dg.AssetKey]) -> dg.AutomationCondition:
    """Requested only when `updated_by` updates (never because the asset itself is newly missing
    or another input changed), and waiting while any of `required` is missing or any input is in
    progress: predictions follow the registry, which has then seen the models, even of a new
    symbol."""
    condition = dg.AutomationCondition
    return (
        condition.in_latest_time_window()
        & condition.any_deps_updated().allow(dg.AssetSelection.assets(updated_by)).since_last_handled()
        & ~condition.any_deps_missing().allow(dg.AssetSelection.assets(*required))
        & ~condition.any_deps_in_progress()
        & ~condition.in_progress()
    ).with_label(f"after {updated_by.to_user_string()}")
