"""Checkpoint retention: which model versions, runs and artifacts to archive or delete, and doing it safely.

Three steps, kept apart so that each can be tested and reviewed on its own:

* `gather_retention_snapshot` (`snapshot`) reads the state (MLflow registry and runs, artifact-store listing);
* `plan_retention` (`plan`) is a pure function of that snapshot, the settings and a clock: the same inputs
  always give the same actions in the same order, so a dry run shows exactly what would happen;
* `apply_retention` (`apply`) performs the actions, re-checking the live state before each one, so that
  applying a plan twice (or a stale plan) changes nothing the second time.

Retention never touches a version that holds an alias (`champion`, `previous-champion`,
`challenger`) nor one of the `keep_top` best versions of its registered model by `score`.
Archiving writes and verifies one tar.gz before deleting any original, and the version is tagged
`archived=true` only after the originals are gone, so a crash at any point either leaves the
originals in place or leaves a verified archive that the next run finds by its checksum.
"""

from __future__ import annotations

from intelligence_assets.tracking.retention.apply import ActionOutcome, RetentionError, RetentionReport, apply_retention
from intelligence_assets.tracking.retention.plan import (
    RetentionAction,
    RetentionActionKind,
    RetentionSettings,
    plan_retention,
)
from intelligence_assets.tracking.retention.snapshot import (
    ArtifactDirectory,
    RetentionSnapshot,
    RunState,
    VersionState,
    archive_key,
    gather_retention_snapshot,
)

__all__ = [
    "ActionOutcome",
    "ArtifactDirectory",
    "RetentionAction",
    "RetentionActionKind",
    "RetentionError",
    "RetentionReport",
    "RetentionSettings",
    "RetentionSnapshot",
    "RunState",
    "VersionState",
    "apply_retention",
    "archive_key",
    "gather_retention_snapshot",
    "plan_retention",
]
