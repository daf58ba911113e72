"""The work of one asset partition, without Dagster: train a cell (one symbol x target for one
model family), build and log its MLflow record, apply the promotion rule to the registry, and
the day's housekeeping (retention, storage usage).

Everything here takes plain values (tables, store handles, a `ModelTracker`, a `log` callable)
and returns plain results, so it runs and is tested without an asset context. The assets in
`intelligence_assets.defs.assets` read their inputs, call one function of this package and turn
its result into Dagster outputs, checks and metadata.
"""

from collections.abc import Callable

# Where a cell's progress lines go: the asset passes `context.log.info` (or `.warning`).
Log = Callable[[str], None]


def ignore(message: str) -> None:
    """A `log` that drops every line."""
