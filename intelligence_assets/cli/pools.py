"""`make ui` sets the concurrency pools' limits from `automation:` in universe.yaml:
`python -m intelligence_assets.cli.pools` (the pools: `defs/pools.py`)."""

import dagster as dg

from intelligence_assets.config.universe import exit_on_configuration_error, load_universe
from intelligence_assets.defs.pools import configure_pools


def main() -> None:
    with dg.DagsterInstance.get() as instance:
        limits = configure_pools(instance, load_universe().automation)
    print("concurrency pools: " + ", ".join(f"{pool}={limit}" for pool, limit in limits.items()))


if __name__ == "__main__":
    exit_on_configuration_error(main)
