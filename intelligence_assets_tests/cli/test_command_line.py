"""The Dagster CLI against our code location, in subprocesses with a temporary DAGSTER_HOME."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import yaml
from dagster._config import process_config

from intelligence_assets.config.universe import DEFAULT_UNIVERSE_PATH, REPOSITORY_ROOT
from intelligence_assets.defs.assets.leaderboard import MODEL_LEADERBOARD
from intelligence_assets.defs.assets.market_data import FEATURES
from intelligence_assets.defs.assets.models import MODEL_KEY_PREFIX
from intelligence_assets.defs.assets.target_analysis import TARGET_RANKINGS
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import read_value
from intelligence_assets.store.keys import artifact_prefix
from intelligence_assets_tests.support.pipeline import local_resources, materialize_command, materialize_market_data

DAGSTER = str(Path(sys.executable).parent / "dagster")


def _environment(home: Path, universe_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "INTELLIGENCE_UNIVERSE": str(universe_path),
        "INTELLIGENCE_ARTIFACT_ROOT": str(home / "artifacts"),
    }


def test_definitions_validate_on_the_bundled_universe(tmp_path: Path) -> None:
    environment = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    environment.pop("INTELLIGENCE_UNIVERSE", None)
    completed = subprocess.run(
        [DAGSTER, "definitions", "validate", "-m", "intelligence_assets.definitions"],
        cwd=REPOSITORY_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_a_command_given_a_bad_universe_prints_one_line_per_problem_and_exits_2(tmp_path: Path) -> None:
    config = yaml.safe_load(DEFAULT_UNIVERSE_PATH.read_text())
    config["model_families"]["lightgbm"]["params"]["num_leafs"] = 7
    config["selection"].update(min_features=20, max_features=15)
    universe_path = tmp_path / "universe.yaml"
    universe_path.write_text(yaml.safe_dump(config))
    shutil.copy(REPOSITORY_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    completed = subprocess.run(
        [sys.executable, "-m", "intelligence_assets.cli.rollback", "--partition", "SP500|y_up_5b", "--reason", "test"],
        cwd=tmp_path,
        env=_environment(tmp_path, universe_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr, completed.stderr
    header, *problems = completed.stderr.splitlines()
    assert header == f"invalid universe file {universe_path.resolve()}:", completed.stderr
    assert [line.split(": ")[0].strip() for line in problems] == ["model_families.lightgbm.params", "selection"], (
        completed.stderr
    )
    assert "unknown parameter 'num_leafs'; closest: " in problems[0] and "num_leaves" in problems[0]
    assert "min_features (20) must not exceed max_features (15)" in problems[1]


def test_asset_materialize_command_for_symbol_and_symbol_target_partitions(
    tmp_path: Path, small_universe_path: Path, monkeypatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml places storage under it
    shutil.copy(REPOSITORY_ROOT / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("symbol", ["SIGNAL"])
    environment = _environment(home, small_universe_path)

    def materialize(selection: str, partition: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            materialize_command(selection, partition),
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = materialize("bars,features", "SIGNAL")
    assert first.returncode == 0, first.stdout + first.stderr
    second = materialize("labels,target_rankings", "SIGNAL|y_up_1b")
    assert second.returncode == 0, second.stdout + second.stderr
    store = LocalArtifactStore(home / "artifacts")
    assert read_value(store, artifact_prefix(FEATURES, "SIGNAL")).height > 0
    assert "passed" in read_value(store, artifact_prefix(TARGET_RANKINGS, "SIGNAL", "y_up_1b"))

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(run.is_success for run in runs)
        assert instance.get_latest_materialization_event(TARGET_RANKINGS) is not None

    unknown = materialize("bars", "NOT_A_SYMBOL")
    assert unknown.returncode != 0


def test_training_job_runs_a_symbols_range_with_steps_forked_from_a_preloaded_server(
    tmp_path: Path, small_universe_path: Path, monkeypatch
) -> None:
    """`dagster job execute` runs training_job through its own executor: one process per step,
    forked from a server that imported the definitions and the training libraries."""
    from intelligence_assets.config.universe import load_universe
    from intelligence_assets.definitions import TRAINING_JOB, build_definitions
    from intelligence_assets.defs.resources.deployment import Deployment

    universe = load_universe(small_universe_path)
    training = build_definitions(universe, Deployment(name="local")).resolve_job_def(TRAINING_JOB)
    executor_def = training.executor_def
    mapped = executor_def.apply_config_mapping(process_config(executor_def.config_schema.config_type, {}).value)
    preloaded = mapped.value["config"]["start_method"]["forkserver"]["preload_modules"]
    # The collector's pause first (`fork_server_preload`), then the definitions and libraries.
    assert preloaded[:2] == ["intelligence_assets.defs.fork_server_preload", "intelligence_assets.definitions"]
    assert {"torch", "sklearn.linear_model", "mlflow"} <= set(preloaded)

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    shutil.copy(REPOSITORY_ROOT / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("symbol", ["SIGNAL"])
        materialize_market_data(instance, universe, local_resources(home / "artifacts", universe), "SIGNAL")
    environment = _environment(home, small_universe_path)
    first, last = universe.target_names[0], universe.target_names[-1]
    tags = json.dumps(
        {
            "dagster/asset_partition_range_start": f"SIGNAL|{first}",
            "dagster/asset_partition_range_end": f"SIGNAL|{last}",
        }
    )
    training_run = subprocess.run(
        [DAGSTER, "job", "execute", "-m", "intelligence_assets.definitions", "-j", TRAINING_JOB, "--tags", tags],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert training_run.returncode == 0, training_run.stdout[-3000:] + training_run.stderr[-3000:]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = next(run for run in instance.get_runs() if run.job_name == TRAINING_JOB)
        assert run.is_success
        step_pids = {
            event.dagster_event.pid for event in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
        }
        # labels, target_rankings, feature_sets and every family: a process each
        assert len(step_pids) == 3 + len(universe.model_families)
        families = [key for key in instance.get_asset_keys() if key.path[0] == MODEL_KEY_PREFIX]
        for key in families:
            materialized = instance.fetch_materializations(key, limit=100).records
            assert {record.partition_key for record in materialized} == {
                f"SIGNAL|{target}" for target in universe.target_names
            }, key


def test_demo_runs_every_stage_on_its_workers_and_a_rerun_finds_nothing_to_do(
    tmp_path: Path, small_universe_path: Path, monkeypatch
) -> None:
    """`make demo`'s runner, as the README's first command runs it: workers forked from one
    server, every stage's runs on the instance, and nothing left stale afterwards."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml places storage under it
    shutil.copy(REPOSITORY_ROOT / "dagster.yaml", home / "dagster.yaml")
    environment = _environment(home, small_universe_path)

    def demo() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "intelligence_assets.cli.demo", "--workers", "2"],
            cwd=REPOSITORY_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )

    first = demo()
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # Whether GPU families get a GPU is said once, in the header, not once per GPU step.
    output = first.stdout + first.stderr
    assert output.count("GPUs: ") == 1 and output.count("no GPU visible") <= 1, output[-3000:]
    for line in (
        "market_data_job: 2 runs",
        "training_job: 2 runs",
        "leaderboard_job: 1 runs",
        "registry_job: 1 runs",
        "predictions_job: 2 runs",
    ):
        assert line in first.stdout, first.stdout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 8 and all(run.is_success for run in runs), [(run.job_name, run.status) for run in runs]
        # The two symbols' training ran in different processes of the pool, at the same time.
        training = [instance.get_run_record_by_id(run.run_id) for run in runs if run.job_name == "training_job"]
        first_end = min(record.end_time for record in training)
        assert max(record.start_time for record in training) < first_end
    assert read_value(LocalArtifactStore(home / "artifacts"), artifact_prefix(MODEL_LEADERBOARD)).height == 2 * 2 * 4

    rerun = demo()
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "Nothing to run: every partition is current." in rerun.stdout, rerun.stdout
