"""The README's numbers come from the code: each one it states is read here from the README and
compared with what the shipped configuration and Definitions actually do."""

from __future__ import annotations

import re

import pytest
import yaml

from intelligence_assets.cli.home import HOME_IN_USE
from intelligence_assets.config.universe import REPOSITORY_ROOT, load_universe
from intelligence_assets.store.s3 import DEFAULT_RETRY_SECONDS

README = (REPOSITORY_ROOT / "README.md").read_text()
SHIPPED_INSTANCE = yaml.safe_load((REPOSITORY_ROOT / "dagster.yaml").read_text())


def stated(pattern: str) -> tuple[str, ...]:
    """The groups of the one README passage matching `pattern` (whitespace-insensitive)."""
    found = re.findall(pattern.replace(" ", r"\s+"), README)
    assert found, f"the README no longer says {pattern!r}: update this test with it"
    return tuple(found[0]) if isinstance(found[0], tuple) else (found[0],)


@pytest.fixture(scope="module")
def definitions():
    from intelligence_assets.definitions import defs

    return defs


def test_the_bundled_universe_is_as_large_as_the_readme_says() -> None:
    symbols, targets, families = map(int, stated(r"(\d+) symbols × (\d+) targets × (\d+) families"))
    universe = load_universe()
    assert (symbols, targets, families) == (len(universe.symbols), len(universe.targets), len(universe.model_families))


def test_schedules_and_sensors_run_when_the_readme_says(definitions) -> None:
    universe = load_universe()
    (interval,) = stated(r"`new_bars` \| sensor, every (\d+) s")
    assert int(interval) == definitions.get_sensor_def("new_bars").minimum_interval_seconds
    (automation_interval,) = stated(r"`automation` \| automation-condition sensor, every (\d+) s")
    assert (
        int(automation_interval)
        == definitions.get_sensor_def("automation").minimum_interval_seconds
        == universe.automation.automation_sensor_interval_seconds
    )
    (cron_hour,) = stated(r"\(weekly, Monday (\d\d):00 UTC\)")
    assert (
        definitions.get_schedule_def("periodic_retrain").cron_schedule
        == universe.automation.retrain_cron
        == f"0 {int(cron_hour)} * * 1"
    )
    (max_age,) = stated(r"`retrain_max_age_days` \((\d+)\)")
    assert float(max_age) == universe.automation.retrain_max_age_days
    (housekeeping_hour,) = stated(r"`daily_housekeeping` \| schedule, (\d\d):00 UTC")
    assert definitions.get_schedule_def("daily_housekeeping").cron_schedule == f"0 {int(housekeeping_hour)} * * *"


def test_only_the_schedule_the_readme_names_is_off_by_default(tmp_path) -> None:
    from intelligence_assets.definitions import build_definitions
    from intelligence_assets.defs.resources.deployment import Deployment
    from intelligence_assets_tests.conftest import write_small_universe

    (off,) = stated(r"every schedule and sensor but `(\w+)` is on by default")
    # The search schedule exists once a family searches.
    universe = load_universe(
        write_small_universe(tmp_path, families={"lightgbm": {"params": {}, "search": {"trials": 2}}})
    )
    definitions = build_definitions(universe, Deployment(artifact_root=REPOSITORY_ROOT / "nonexistent"))
    stopped = [
        definition.name
        for definition in [*definitions.schedules, *definitions.sensors]
        if definition.default_status.value == "STOPPED"
    ]
    assert stopped == [off]


def test_queue_priorities_and_retries_are_the_shipped_ones() -> None:
    universe = load_universe()
    (runs,) = stated(r"The run queue allows (\d+) runs at once")
    assert int(runs) == SHIPPED_INSTANCE["run_coordinator"]["config"]["max_concurrent_runs"]
    production, exploratory = stated(r"production \((-?\d+)\) before exploratory \(([−-]\d+)\)")
    assert (int(production), int(exploratory.replace("−", "-"))) == (
        universe.automation.production_priority,
        universe.automation.exploratory_priority,
    )
    for seconds in re.findall(r"retried for (?:up\s+to\s+)?(\d+) s", README):
        assert int(seconds) == DEFAULT_RETRY_SECONDS
    (poll,) = stated(r"fails\s+within (\d+)–\d+ s \(run monitoring")
    assert int(poll) == SHIPPED_INSTANCE["run_monitoring"]["poll_interval_seconds"]
    (in_use,) = stated(r"exit status (\d):\*\* another command holds")
    assert int(in_use) == HOME_IN_USE


def test_step_retries_are_what_the_readme_says(definitions) -> None:
    (retries,) = stated(r"after (\d+) step retries")
    assets = [assets_def for assets_def in definitions.resolve_asset_graph().assets_defs if assets_def.is_executable]
    policies = {
        assets_def.op.retry_policy.max_retries for assets_def in assets if assets_def.op.retry_policy is not None
    }
    assert policies == {int(retries)}


def test_the_readme_stays_a_manual_of_at_most_20_kb() -> None:
    """History and rationale belong in benchmarks/README.md and docs/design.md."""
    size = len(README.encode())
    assert size <= 20_000, f"README.md is {size} bytes: move history or rationale to docs/ (at most 20,000)"
