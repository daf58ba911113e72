"""`make ui` sets the concurrency pools' limits from `automation:` in universe.yaml (the `gpu`
pool's, unless set there, from the host's GPUs and `gpus.steps_per_gpu`):
`python -m intelligence_assets.cli.pools` (the pools: `defs/pools.py`)."""

import dagster as dg

from intelligence_assets.config.universe import exit_on_configuration_error, load_universe
from intelligence_assets.defs.gpus import GpuPlacement
from intelligence_assets.defs.pools import configure_pools


def main() -> None:
    universe = load_universe()
    placement = GpuPlacement(universe)
    print(f"GPUs: {placement.inventory().describe()}; {universe.gpus.steps_per_gpu} step(s) per GPU")
    with dg.DagsterInstance.get() as instance:
        limits = configure_pools(instance, universe.automation, placement.gpu_slots())
    print("concurrency pools: " + ", ".join(f"{pool}={limit}" for pool, limit in limits.items()))


if __name__ == "__main__":
    exit_on_configuration_error(main)
