"""Roll champions back: `python -m intelligence_assets.cli.rollback --partition SP500|y_up_5b --reason "..."`.

Runs `registry_job` with rollback config on the instance in DAGSTER_HOME (so the alias move is a
`model_registry` materialization with its reason, visible in the UI), then `predictions_job` for
the affected symbols so that they serve the restored champions. The same as launching
`registry_job` from the UI's launchpad with:

    ops: {model_registry: {config: {rollback: ["SP500|y_up_5b"], reason: "..."}}}
"""

from __future__ import annotations

import argparse

import dagster as dg

from intelligence_assets.cli.home import holding_home
from intelligence_assets.config.universe import exit_on_configuration_error


def roll_back(
    partitions: list[str], reason: str, instance: dg.DagsterInstance, defs: dg.Definitions | None = None
) -> list[dg.ExecuteInProcessResult]:
    """`defs`: the code location's Definitions (by default this deployment's)."""
    from intelligence_assets.definitions import PREDICTIONS_JOB, REGISTRY_JOB

    if defs is None:
        from intelligence_assets.definitions import defs

    registry = defs.resolve_job_def(REGISTRY_JOB).execute_in_process(
        instance=instance,
        run_config={"ops": {"model_registry": {"config": {"rollback": partitions, "reason": reason}}}},
        tags={"intelligence/rollback": ",".join(partitions)},
        raise_on_error=False,
    )
    if not registry.success:
        return [registry]
    results = [registry]
    for symbol in sorted({partition.split("|")[0] for partition in partitions}):
        results.append(
            defs.resolve_job_def(PREDICTIONS_JOB).execute_in_process(
                instance=instance, partition_key=symbol, raise_on_error=False
            )
        )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Move `champion` back to `previous-champion` for symbol x target partitions."
    )
    parser.add_argument("--partition", action="append", required=True, help="SYMBOL|target; repeat for several")
    parser.add_argument(
        "--reason", required=True, help="recorded on the rolled-back version and in the materialization"
    )
    args = parser.parse_args(argv)
    with holding_home("make rollback"):
        results = roll_back(args.partition, args.reason, dg.DagsterInstance.get())
    for result in results:
        status = "succeeded" if result.success else "FAILED"
        print(f"{result.job_def.name} run {result.run_id}: {status}")
        if not result.success:
            for event in result.get_step_failure_events():
                error = event.step_failure_data.error
                print(
                    f"  {event.step_key}: "
                    f"{(error.cause.message if error and error.cause else error.message if error else '').strip()}"
                )
            raise SystemExit(1)
    registry = results[0].asset_materializations_for_node("model_registry")[0]
    print(registry.metadata["changes"].value)


if __name__ == "__main__":
    exit_on_configuration_error(main)
