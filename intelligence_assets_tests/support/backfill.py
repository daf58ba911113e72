"""An asset backfill carried out by Dagster's own backfill daemon iterations over our code
location, each run launched and executed at once in this process: what `dagster-daemon` does
for a backfill launched from the UI, without waiting for its 30-second ticks.

Run as a module, in a fresh interpreter on the environment of a DAGSTER_HOME and a universe
(`home_environment`): the steps of a run fork from a server that imports our definitions, and
the first such server of a process keeps the environment it started with.

    python -m intelligence_assets_tests.support.backfill bars,features SIGNAL,NOISE
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.backfill import execute_backfill_iteration

from intelligence_assets.config.universe import REPOSITORY_ROOT

BACKFILL_ID = "backfill"
MAX_ITERATIONS = 20
# Before the backfill's final status, on the module's standard output (Dagster's code server logs there too).
STATUS_LINE = "backfill status: "


def write_instance_config(home: Path) -> None:
    """The embedded default's storage, with runs launched at once and executed in the launching
    process (Dagster's in-memory launcher) instead of queued for the daemon."""
    config = {
        "storage": {"sqlite": {"base_dir": str(home)}},
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
        "run_launcher": {
            "module": "dagster._core.launcher.sync_in_memory_run_launcher",
            "class": "SyncInMemoryRunLauncher",
        },
        "telemetry": {"enabled": False},
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def backfill(assets: list[dg.AssetKey], partitions: list[str]) -> BulkActionStatus:
    """Register `partitions` as symbols, backfill `assets` over them until the backfill ends;
    its final status."""
    code_location = ModuleTarget(
        module_name="intelligence_assets.definitions",
        attribute=None,
        working_directory=str(REPOSITORY_ROOT),
        location_name="intelligence_assets",
    )
    with (
        dg.DagsterInstance.get() as instance,
        create_test_daemon_workspace_context(code_location, instance) as workspace,
    ):
        instance.add_dynamic_partitions("symbol", partitions)
        instance.add_backfill(
            PartitionBackfill.from_asset_partitions(
                backfill_id=BACKFILL_ID,
                asset_graph=workspace.create_request_context().asset_graph,
                partition_names=partitions,
                asset_selection=assets,
                backfill_timestamp=time.time(),
                tags={},
                dynamic_partitions_store=instance,
                all_partitions=False,
                title=None,
                description=None,
                run_config=None,
            )
        )
        for _ in range(MAX_ITERATIONS):
            list(execute_backfill_iteration(workspace, logging.getLogger("backfill")))
            status = instance.get_backfill(BACKFILL_ID).status
            if status != BulkActionStatus.REQUESTED:
                return status
        return status


if __name__ == "__main__":
    assets, partitions = sys.argv[1], sys.argv[2]
    status = backfill([dg.AssetKey(key) for key in assets.split(",")], partitions.split(","))
    print(f"{STATUS_LINE}{status.value}")
