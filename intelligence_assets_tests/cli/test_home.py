"""One command at a time on a DAGSTER_HOME: a second one exits at once naming the holder, and a
killed holder leaves no stale lock."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME

from intelligence_assets.cli.home import (
    HOME_IN_USE,
    LOCK_FILE,
    HomeInUseError,
    event_log_kept_open,
    exclusive_home,
)
from intelligence_assets_tests.conftest import fresh_home, home_environment, write_small_universe
from intelligence_assets_tests.support.pipeline import materialize_command
from intelligence_assets_tests.support.stored_state import StoredState, stored_state

pytestmark = pytest.mark.long_running

FAMILIES = {"linear": {"params": {}}, "lightgbm": {"params": {"num_boost_round": 80}}}


def _demo(home: Path, universe_path: Path, *arguments: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "intelligence_assets.cli.demo", "--workers", "1", *arguments],
        cwd=home,
        env=home_environment(home, universe_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def universe_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One universe for the module: the reference and every faulted home share its fingerprints."""
    return write_small_universe(tmp_path_factory.mktemp("universe"), families=FAMILIES)


@pytest.fixture(scope="module")
def reference(universe_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, StoredState]:
    """A clean `make demo` of the module's universe: what every faulted home must end up holding."""
    home = fresh_home(tmp_path_factory.mktemp("reference"))
    demo = _demo(home, universe_path)
    out, err = demo.communicate(timeout=600)
    assert demo.returncode == 0, out[-3000:] + err[-3000:]
    state = stored_state(home)
    assert state.problems == [] and state.aliases and state.finished_runs, state
    return home, state


def assert_same_as(reference: tuple[Path, StoredState], home: Path) -> None:
    state = stored_state(home)
    assert state.problems == [], state.problems
    assert state.comparable() == reference[1].comparable()


def _started_training_run(home: Path) -> str | None:
    """Read the run table directly, read-only: opening a DagsterInstance while make demo is still
    creating the home would race it and stamp the schema twice (what the home lock prevents)."""
    import sqlite3

    database = home / "history" / "runs.db"
    if not database.exists():
        return None
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            row = connection.execute(
                "SELECT run_id FROM runs WHERE pipeline_name = 'training_job' AND status = 'STARTED' LIMIT 1"
            ).fetchone()
    except sqlite3.OperationalError:  # the table is not created yet, or is being written
        return None
    return row[0] if row else None


def test_a_second_holder_is_refused_naming_the_first_and_a_dead_holder_leaves_no_lock(tmp_path: Path) -> None:
    with (
        exclusive_home(tmp_path, "first command"),
        pytest.raises(HomeInUseError, match=rf"{tmp_path} is in use by `first command` \(pid {os.getpid()}"),
        exclusive_home(tmp_path, "second command"),
    ):
        pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from intelligence_assets.cli.home import exclusive_home; import time\n"
            f"with exclusive_home({str(tmp_path)!r}, 'doomed'):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(HomeInUseError, match="doomed"), exclusive_home(tmp_path, "meanwhile"):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    with exclusive_home(tmp_path, "after the kill", wait_seconds=5):
        pass


def test_make_housekeeping_holds_the_home_for_its_dagster_command(tmp_path: Path) -> None:
    """`make housekeeping` runs `dagster job execute` through `python -m intelligence_assets.cli.home --hold`."""
    hold = [
        sys.executable,
        "-m",
        "intelligence_assets.cli.home",
        "--hold",
        "make housekeeping",
        "--",
        sys.executable,
        "-c",
    ]
    environment = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    with exclusive_home(tmp_path, "make demo"):
        refused = subprocess.run([*hold, "print('ran')"], env=environment, capture_output=True, text=True, timeout=60)
    assert refused.returncode == HOME_IN_USE and "ran" not in refused.stdout
    assert f"{tmp_path} is in use by `make demo` (pid {os.getpid()}" in refused.stderr
    # The command's exit status comes back, and while it runs the home is held under its name.
    script = (
        "from intelligence_assets.cli.home import exclusive_home\n"
        "try:\n"
        f"    with exclusive_home({str(tmp_path)!r}, 'probe'): pass\n"
        "except Exception as error:\n"
        "    print(error); raise SystemExit(7)"
    )
    held = subprocess.run([*hold, script], env=environment, capture_output=True, text=True, timeout=60)
    assert held.returncode == 7 and "in use by `make housekeeping`" in held.stdout, held.stdout + held.stderr


def test_two_demos_on_one_fresh_home_one_runs_the_other_exits_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, universe_path: Path, reference
) -> None:
    home = fresh_home(tmp_path)
    first = _demo(home, universe_path)
    lock = home / LOCK_FILE
    deadline = time.monotonic() + 60
    while not (lock.exists() and lock.stat().st_size):  # the first demo holds the home
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.2)
    second = _demo(home, universe_path)
    second_out, second_err = second.communicate(timeout=120)
    assert second.returncode == HOME_IN_USE, second_out + second_err
    assert f"{home} is in use by `make demo` (pid {first.pid}" in second_err
    first_out, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_out[-3000:] + first_err[-3000:]
    # The instance was created once: it opens, and holds the first demo's runs.
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs_count() > 0
    assert_same_as(reference, home)
    # On the initialised home, a demo told to wait for the holder runs after it and finds nothing to do.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from intelligence_assets.cli.home import exclusive_home; import time\n"
            f"with exclusive_home({str(home)!r}, 'make report'):\n"
            "    print('held', flush=True); time.sleep(4)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    waiting = _demo(home, universe_path, "--wait", "120")
    out, err = waiting.communicate(timeout=300)
    assert holder.wait(timeout=10) == 0
    assert waiting.returncode == 0 and "make report" in out + err and "Nothing to run" in out, out + err
    assert_same_as(reference, home)


def test_a_registry_run_waits_while_another_run_moves_aliases(universe_path: Path, reference) -> None:
    """model_registry decides from aliases another run may be moving (a rollback beside the
    automation's registry run): it computes only while it holds the registry's claim."""
    import threading

    from intelligence_assets.defs.assets.caching import ONE_WRITER_CLAIM
    from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
    from intelligence_assets.store.artifact_store import LocalArtifactStore
    from intelligence_assets.store.artifacts import claimed
    from intelligence_assets.store.keys import artifact_prefix, pointer_key

    home, _ = reference
    store = LocalArtifactStore(home / "artifacts")
    registry_prefix = artifact_prefix(MODEL_REGISTRY)
    before = store.get_json(pointer_key(registry_prefix))
    command = materialize_command(MODEL_REGISTRY.to_user_string())
    lines: list[str] = []
    with claimed(store, registry_prefix, ONE_WRITER_CLAIM, "rollback-in-test"):
        registry = subprocess.Popen(
            command,
            cwd=home,
            env=home_environment(home, universe_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        reader = threading.Thread(target=lambda: lines.extend(registry.stdout), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while not any("is being written by rollback-in-test" in line for line in lines):
            assert time.monotonic() < deadline and registry.poll() is None, "".join(lines)[-3000:]
            time.sleep(0.5)
        time.sleep(2)
        assert (
            registry.poll() is None and store.get_json(pointer_key(registry_prefix)) == before
        )  # nothing decided meanwhile
    assert registry.wait(timeout=300) == 0, "".join(lines)[-3000:]
    reader.join(timeout=10)
    assert store.get_json(pointer_key(registry_prefix)) != before  # decided once the claim was free
    assert_same_as(reference, home)  # and the same champions: "kept" instead of "promoted"


def _newest_forkserver_process(root: int) -> int:
    """The newest process forked by a forkserver among `root`'s descendants: with `pytest -n 3`,
    another test's workers run beside this one's, and killing one of those fails that test."""
    family, frontier = {root}, {root}
    while frontier:
        listed = subprocess.run(["pgrep", "-P", ",".join(map(str, frontier))], capture_output=True, text=True)
        frontier = {int(pid) for pid in listed.stdout.split()} - family
        family |= frontier
    parents = ",".join(map(str, family))
    found = subprocess.run(
        ["pgrep", "-n", "-f", "multiprocessing.forkserver", "-P", parents], capture_output=True, text=True
    )
    return int(found.stdout.split()[0])


def test_a_killed_worker_is_reported_its_run_failed_the_rest_finishes_and_a_rerun_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, universe_path: Path, reference
) -> None:
    home = fresh_home(tmp_path)
    demo = _demo(home, universe_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    deadline = time.monotonic() + 300
    victim = None
    # Wait for a training run to start, then SIGKILL the worker process running it.
    while victim is None:
        assert time.monotonic() < deadline and demo.poll() is None, demo.communicate()
        time.sleep(0.5)
        victim = _started_training_run(home)
    os.kill(_newest_forkserver_process(demo.pid), signal.SIGKILL)
    out, err = demo.communicate(timeout=600)
    assert demo.returncode == 1, out[-3000:] + err[-3000:]
    assert "Traceback" not in err and "BrokenProcessPool" not in err, err[-3000:]
    assert (
        "Interrupted: a worker process died during training_job" in out and "Run `make demo` again to resume" in out
    ), out[-3000:]
    # The rest went on in a fresh pool: the other symbol trained, and the leaderboard was printed.
    assert "Going on with a fresh pool" in out and "All trained models" in out, out[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert not instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        failed = instance.get_runs(
            filters=dg.RunsFilter(job_name="training_job", statuses=[dg.DagsterRunStatus.FAILURE])
        )
    assert failed and all(run.run_id[:8] in out or run.run_id in out for run in failed), out[-3000:]
    rerun = _demo(home, universe_path)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out[-3000:] + err[-3000:]
    assert_same_as(reference, home)  # nothing duplicated, orphaned or lost by the kill


def test_a_home_with_its_schema_version_stamped_twice_is_explained_and_repaired_keeping_its_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, universe_path: Path, reference
) -> None:
    import sqlite3

    # A home a finished demo left: a copy of the reference's (its embedded MLflow store still
    # names the reference's artifact folder, which the commands below do not write to).
    home = tmp_path / "home"
    shutil.copytree(reference[0], home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs_count()
    # What two processes creating the home at once leave behind: a second schema version row.
    with sqlite3.connect(home / "history" / "runs.db") as connection:
        connection.execute("INSERT INTO alembic_version VALUES ('f495c27d5019')")
    broken = _demo(home, universe_path)
    out, err = broken.communicate(timeout=300)
    assert (
        broken.returncode != 0 and "python -m intelligence_assets.cli.home --repair" in err and "Traceback" not in err
    ), out + err
    repair = subprocess.run(
        [sys.executable, "-m", "intelligence_assets.cli.home", "--repair"],
        env=home_environment(home, universe_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert repair.returncode == 0 and "removed ['f495c27d5019']" in repair.stdout, repair.stdout + repair.stderr
    again = _demo(home, universe_path)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0 and "Nothing to run" in out, out + err
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs_count() == runs  # the history is intact
    assert_same_as(reference, home)


def test_a_runs_event_log_stays_open_while_it_writes_and_every_event_is_committed(tmp_path: Path) -> None:
    instance = dg.DagsterInstance.local_temp(str(tmp_path))
    job = dg.define_asset_job("one_asset").resolve(
        asset_graph=dg.Definitions(assets=[_one_asset]).resolve_asset_graph()
    )
    run_id = str(uuid.uuid4())
    storage = instance.event_log_storage
    run_shard, index_shard = Path(storage.path_for_shard(run_id)), Path(storage.path_for_shard(INDEX_SHARD_NAME))
    with event_log_kept_open(instance, run_id):
        assert job.execute_in_process(instance=instance, run_id=run_id).success
        # Committed as each was written: a reader of its own sees every event the instance reads.
        with closing(sqlite3.connect(run_shard)) as reader:
            committed = reader.execute("SELECT COUNT(*) FROM event_logs").fetchone()[0]
        assert committed == len(instance.all_logs(run_id)) > 5
        # Not checkpointed after every write: both logs still hold the run's events.
        assert run_shard.with_name(run_shard.name + "-wal").exists()
        assert index_shard.with_name(index_shard.name + "-wal").exists()
    assert not run_shard.with_name(run_shard.name + "-wal").exists()  # the last close checkpoints
    assert instance.get_latest_materialization_event(dg.AssetKey("_one_asset")) is not None
    with event_log_kept_open(dg.DagsterInstance.ephemeral(), run_id):  # other storages: unchanged
        pass


@dg.asset
def _one_asset() -> int:
    return 1
