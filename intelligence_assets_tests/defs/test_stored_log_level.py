"""The instance configs store Dagster's events and INFO lines, not DEBUG lines: a partition's
detail lines are DEBUG because its metadata holds them, and each stored line is an event-log write."""

# No `from __future__ import annotations`: Dagster reads the `context` annotation at definition.
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from intelligence_assets.config.universe import REPOSITORY_ROOT
from intelligence_assets_tests.support.chart import dagster_values

INSTANCE_CONFIGS = [REPOSITORY_ROOT / "dagster.yaml", REPOSITORY_ROOT / "deploy" / "postgres" / "dagster.yaml"]


@dg.asset
def logs_at_two_levels(context: dg.AssetExecutionContext) -> int:
    context.log.info("a summary line")
    context.log.debug("a detail line")
    return 1


@pytest.mark.parametrize("config", INSTANCE_CONFIGS, ids=lambda path: str(path.relative_to(REPOSITORY_ROOT)))
def test_every_instance_config_stores_info_lines_not_debug_lines(config: Path) -> None:
    assert yaml.safe_load(config.read_text())["python_logs"] == {"python_log_level": "INFO"}
    assert dagster_values()["pythonLogs"] == {"pythonLogLevel": "INFO"}


def test_debug_lines_are_not_stored_and_dagsters_own_events_are(tmp_path: Path) -> None:
    shutil.copy(REPOSITORY_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.instance_for_test(
        temp_dir=str(tmp_path), overrides=yaml.safe_load((tmp_path / "dagster.yaml").read_text())
    ) as instance:
        result = dg.materialize([logs_at_two_levels], instance=instance)
        assert result.success
        records = instance.all_logs(result.run_id)
    messages = [record.user_message for record in records if record.dagster_event is None]
    events = {record.dagster_event.event_type for record in records if record.dagster_event is not None}
    assert "a summary line" in messages and "a detail line" not in messages
    # Dagster logs its own events at DEBUG; they are stored whatever the level.
    stored = dg.DagsterEventType
    assert {stored.STEP_START, stored.STEP_SUCCESS, stored.ASSET_MATERIALIZATION, stored.RUN_SUCCESS} <= events
