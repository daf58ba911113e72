"""Concurrency pools: GPU training steps share the `gpu` pool (limit: GPUs available), heavy CPU
steps the `cpu` pool, hyperparameter searches the `search` pool (so exploratory work never takes
a production step's slot). Dagster keeps the limits in the instance; `make ui` sets them from
`automation:` in universe.yaml (`python -m intelligence_assets.cli.pools`)."""

import dagster as dg

from intelligence_assets.config.universe import AutomationSettings

GPU_POOL = "gpu"
CPU_POOL = "cpu"
SEARCH_POOL = "search"


def pool_limits(settings: AutomationSettings, gpu_slots: int = 1) -> dict[str, int]:
    """`gpu_slots`: what the host's GPUs allow (GPUs x steps per GPU), where the universe sets no limit."""
    gpu = settings.gpu_slots if settings.gpu_slots is not None else max(1, gpu_slots)
    return {GPU_POOL: gpu, CPU_POOL: settings.cpu_slots, SEARCH_POOL: settings.search_slots}


def configure_pools(instance: dg.DagsterInstance, settings: AutomationSettings, gpu_slots: int = 1) -> dict[str, int]:
    limits = pool_limits(settings, gpu_slots)
    for pool, limit in limits.items():
        instance.event_log_storage.set_concurrency_slots(pool, limit)
    return limits
