"""Alerts: a run failure becomes a structured log line and a row in the alerts table, through a
notifier resource that a deployment can swap (a webhook, a pager) without touching the sensor."""

import json
import logging
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import polars as pl

from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.store.artifact_store import ArtifactStore

ALERTS_PREFIX = "alerts"
ALERT_LOGGER = "intelligence_assets.alerts"


class AlertNotifier(dg.ConfigurableResource):
    """Writes each alert as one JSON log line (logger `intelligence_assets.alerts`) and as one
    object `alerts/<day>/<id>.json` in the artifact store; `alerts_table` reads them back.
    Subclass and override `deliver` to also page or post somewhere."""

    artifact_store: dg.ResourceDependency[ArtifactStoreResource]

    def notify(self, alert_id: str, kind: str, summary: str, details: dict[str, Any]) -> dict[str, Any]:
        now = datetime.now(UTC)
        alert = {"id": alert_id, "kind": kind, "at": now.isoformat(timespec="seconds"), "summary": summary, **details}
        logging.getLogger(ALERT_LOGGER).error(json.dumps(alert, sort_keys=True, default=str))
        # Keyed by id: notifying twice for the same failure overwrites, never duplicates.
        self.artifact_store.store().put_json(f"{ALERTS_PREFIX}/{now.date().isoformat()}/{alert_id}.json", alert)
        self.deliver(alert)
        return alert

    def deliver(self, alert: dict[str, Any]) -> None:
        """Extra delivery for subclasses; the default records only."""


def alerts_table(store: ArtifactStore) -> pl.DataFrame:
    rows = [store.get_json(key) for key in store.list_keys(ALERTS_PREFIX) if key.endswith(".json")]
    schema = {
        "id": pl.String,
        "kind": pl.String,
        "at": pl.String,
        "summary": pl.String,
        "job": pl.String,
        "run_id": pl.String,
        "error": pl.String,
    }
    return pl.DataFrame([{name: row.get(name) for name in schema} for row in rows], schema=schema).sort("at")


@dg.run_failure_sensor(
    name="run_failure_alerts",
    monitor_all_code_locations=False,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Every failed run becomes an alert: a structured log line and a row under alerts/ in the artifact store."
    ),
)
def run_failure_alerts(context: dg.RunFailureSensorContext, alert_notifier: AlertNotifier) -> None:
    run = context.dagster_run
    error = context.failure_event.message or ""
    steps = [event.step_key for event in context.get_step_failure_events()]
    alert_notifier.notify(
        alert_id=f"run-failure-{run.run_id}",
        kind="run_failure",
        summary=f"{run.job_name} run {run.run_id} failed" + (f" in {', '.join(steps)}" if steps else ""),
        details={
            "job": run.job_name,
            "run_id": run.run_id,
            "error": error[:2000],
            "steps": steps,
            "tags": dict(run.tags),
        },
    )
