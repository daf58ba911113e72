"""Operational metrics for Prometheus, read from the Dagster instance at each scrape.

Everything comes from what the platform already records, so the exporter holds no state and any
number of replicas agree: runs by job and status (run storage), concurrency-pool slots (the
instance's pool table), step durations and cache outcomes (the event log's recent step successes
and materializations), the artifact store against its quota (the latest `storage_usage`
materialization), champions by family (the latest `model_registry` materialization) and, where
NVML sees a GPU on this host, its utilisation and memory (`gpus.py`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence

import dagster as dg
from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from intelligence_assets.defs.assets.housekeeping import STORAGE_USAGE
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.monitoring.gpus import GpuReader
from intelligence_assets.store.keys import MODELS

# Dagster's run states, as the UI names them: queue, running and finished.
RUN_STATUSES = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
)
# Steps and materializations read per scrape: recent enough to follow the work, bounded so a
# scrape stays a few queries however long the instance has lived.
RECENT_EVENTS = 2000
# The step key of a model asset `models/<family>` (Dagster joins key parts with "__").
MODEL_STEP_PREFIX = f"{MODELS}__"


def step_family(step_key: str) -> tuple[str, str]:
    """(step, family) labels of a step key: `models__lightgbm` -> ("models/lightgbm", "lightgbm")."""
    if step_key.startswith(MODEL_STEP_PREFIX):
        family = step_key.removeprefix(MODEL_STEP_PREFIX)
        return f"{MODELS}/{family}", family
    return step_key, ""


class PlatformCollector(Collector):
    """A Prometheus collector over one Dagster instance. `jobs`: the job names whose runs are
    counted (each a count query per status); `gpus`: a reader of local GPUs, or None."""

    def __init__(self, instance: dg.DagsterInstance, jobs: Sequence[str], gpus: GpuReader | None = None) -> None:
        self.instance = instance
        self.jobs = list(jobs)
        self.gpus = gpus

    def collect(self) -> Iterator[Metric]:
        yield from self.runs()
        yield from self.pools()
        yield from self.steps()
        yield from self.cache()
        yield from self.storage()
        yield from self.champions()
        if self.gpus is not None:
            yield from self.gpus.collect()

    def runs(self) -> Iterator[Metric]:
        # `dagster_job`: Prometheus gives every scraped series a `job` label of its own.
        runs = GaugeMetricFamily(
            "intelligence_runs", "Runs in the instance by Dagster job and status.", labels=["dagster_job", "status"]
        )
        for job in self.jobs:
            for status in RUN_STATUSES:
                count = self.instance.get_runs_count(dg.RunsFilter(job_name=job, statuses=[status]))
                runs.add_metric([job, status.value], count)
        yield runs

    def pools(self) -> Iterator[Metric]:
        limit = GaugeMetricFamily("intelligence_pool_slots", "Slots of a concurrency pool.", labels=["pool"])
        in_use = GaugeMetricFamily(
            "intelligence_pool_slots_in_use", "Slots of a concurrency pool held by running steps.", labels=["pool"]
        )
        pending = GaugeMetricFamily(
            "intelligence_pool_pending_steps", "Steps waiting for a slot of a concurrency pool.", labels=["pool"]
        )
        storage = self.instance.event_log_storage
        if storage.supports_global_concurrency_limits:
            for pool in sorted(storage.get_concurrency_keys()):
                info = storage.get_concurrency_info(pool)
                limit.add_metric([pool], info.slot_count)
                in_use.add_metric([pool], info.active_slot_count)
                pending.add_metric([pool], info.pending_step_count)
        yield from (limit, in_use, pending)

    def steps(self) -> Iterator[Metric]:
        durations: dict[tuple[str, str], list[float]] = defaultdict(list)
        for record in self.instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.STEP_SUCCESS), limit=RECENT_EVENTS
        ):
            event = record.event_log_entry.dagster_event
            if event is None or event.step_key is None:
                continue
            durations[step_family(event.step_key)].append(event.event_specific_data.duration_ms / 1000.0)
        summary = SummaryMetricFamily(
            "intelligence_step_duration_seconds",
            f"Durations of the last {RECENT_EVENTS} successful steps, by step and model family.",
            labels=["step", "family"],
        )
        for (step, family), seconds in sorted(durations.items()):
            summary.add_metric([step, family], count_value=len(seconds), sum_value=sum(seconds))
        yield summary

    def cache(self) -> Iterator[Metric]:
        outcomes: Counter[str] = Counter()
        for record in self.instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION), limit=RECENT_EVENTS
        ):
            materialization = record.asset_materialization
            cache = materialization.metadata.get("cache") if materialization else None
            if cache is not None:
                outcomes[str(cache.value)] += 1
        counts = GaugeMetricFamily(
            "intelligence_cache_outcomes",
            f"Cache outcomes of the last {RECENT_EVENTS} materializations (hit: reused from the store).",
            labels=["outcome"],
        )
        for outcome, count in sorted(outcomes.items()):
            counts.add_metric([outcome], count)
        yield counts
        total = sum(outcomes.values())
        if total:
            yield GaugeMetricFamily(
                "intelligence_cache_hit_ratio",
                "Share of the recent materializations that reused a stored artifact.",
                value=outcomes["hit"] / total,
            )

    def _latest_metadata(self, key: dg.AssetKey) -> dict:
        event = self.instance.get_latest_materialization_event(key)
        materialization = event.asset_materialization if event else None
        return {name: value.value for name, value in materialization.metadata.items()} if materialization else {}

    def storage(self) -> Iterator[Metric]:
        usage = self._latest_metadata(STORAGE_USAGE)
        if "total_bytes" in usage:
            yield GaugeMetricFamily(
                "intelligence_artifact_store_bytes",
                "Bytes in the artifact store at the last storage_usage run.",
                value=usage["total_bytes"],
            )
            yield GaugeMetricFamily(
                "intelligence_artifact_store_quota_bytes",
                "The artifact store's quota (retention.quota_bytes).",
                value=usage["quota_bytes"],
            )

    def champions(self) -> Iterator[Metric]:
        registry = self._latest_metadata(MODEL_REGISTRY)
        by_family = registry.get("champions_by_family")
        if isinstance(by_family, dict):
            champions = GaugeMetricFamily(
                "intelligence_champions",
                "Symbol x target cells by the family of their champion (none: no champion yet).",
                labels=["family"],
            )
            for family, cells in sorted(by_family.items()):
                champions.add_metric([family], cells)
            yield champions
