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
