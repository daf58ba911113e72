"""Faults while working: an S3 endpoint that hangs and comes back within the retry budget costs
retries, not the run; a store that stays down fails the step after step retries; a data error
is not retried."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import dagster as dg

from intelligence_assets.config.universe import load_universe
from intelligence_assets.definitions import build_assets
from intelligence_assets.defs.assets.market_data import BARS, FEATURES
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.target_analysis import TARGET_ANALYSIS_ASSETS
from intelligence_assets.defs.partitions import register_symbols
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.store.keys import (
    CLAIM_FILE,
    MANIFEST_FILE,
    POINTER_FILE,
    artifact_prefix,
    claim_key,
    manifest_key,
    pointer_key,
)
from intelligence_assets.store.s3 import DEFAULT_RETRY_SECONDS, S3ArtifactStore, request_timeouts
from intelligence_assets_tests.conftest import fresh_home, home_environment, write_small_universe
from intelligence_assets_tests.support.pipeline import materialize_command
from intelligence_assets_tests.support.real_series import constant_price_bars
from intelligence_assets_tests.support.services import (
    LOOPBACK,
    OPEN_ACCESS_KEY,
    OPEN_SECRET_KEY,
    free_port,
    start_moto_server,
    stop_process,
    unique_bucket_name,
)

HANG_SECONDS = 35


def test_one_request_spends_a_fraction_of_the_retry_budget() -> None:
    timeouts = request_timeouts(DEFAULT_RETRY_SECONDS)
    assert DEFAULT_RETRY_SECONDS == 60 and timeouts.connect_timeout == 3 and timeouts.read_timeout == 15
    assert request_timeouts(8).read_timeout == 2  # a small budget keeps several attempts


def test_an_endpoint_hung_for_35s_costs_retries_not_the_call(tmp_path: Path) -> None:
    process, port = start_moto_server(tmp_path / "moto.log")
    try:
        store = S3ArtifactStore(f"{LOOPBACK}:{port}", unique_bucket_name("hang"), OPEN_ACCESS_KEY, OPEN_SECRET_KEY)
        store.put_bytes("probe/data.bin", b"before the hang")
        process.send_signal(signal.SIGSTOP)
        resume = threading.Timer(HANG_SECONDS, lambda: process.send_signal(signal.SIGCONT))
        resume.start()
        started = time.monotonic()
        try:
            assert store.get_bytes("probe/data.bin") == b"before the hang"
        finally:
            resume.cancel()
            process.send_signal(signal.SIGCONT)
        assert HANG_SECONDS - 1 <= time.monotonic() - started < DEFAULT_RETRY_SECONDS
    finally:
        stop_process(process)


def _features_run(
    tmp_path: Path, store_resource: ArtifactStoreResource | None = None, flat: bool = False
) -> dg.ExecuteInProcessResult:
    path = write_small_universe(tmp_path, families={"linear": {"params": {}}}, symbols=["SIGNAL"])
    if flat:
        constant_price_bars().write_parquet(tmp_path / "bars" / "SIGNAL.parquet")
    universe = load_universe(path)
    resources = Deployment(artifact_root=tmp_path / "artifacts").resources(universe)
    with dg.instance_for_test() as instance:
        register_symbols(instance, ["SIGNAL"])
        assets = build_assets(universe)
        assert dg.materialize(
            assets, selection=[BARS], partition_key="SIGNAL", instance=instance, resources=resources
        ).success
        if store_resource is not None:
            resources = {**resources, "artifact_store": store_resource}
        return dg.materialize(
            assets,
            selection=[FEATURES],
            partition_key="SIGNAL",
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )


def _retries(result: dg.ExecuteInProcessResult) -> int:
    return sum(event.event_type_value == "STEP_UP_FOR_RETRY" for event in result.all_events)


def test_a_store_that_stays_down_fails_the_step_after_step_retries(tmp_path: Path) -> None:
    down = ArtifactStoreResource(
        backend="s3",
        endpoint=f"{LOOPBACK}:{free_port()}",
        bucket=unique_bucket_name("down"),
        access_key=OPEN_ACCESS_KEY,
        secret_key=OPEN_SECRET_KEY,
        retry_seconds=0.5,
    )
    result = _features_run(tmp_path, down)
    assert not result.success
    assert _retries(result) == 3
    assert (
        "ArtifactStoreUnavailableError" in result.get_step_failure_events()[-1].step_failure_data.error.cause.cls_name
    )


def test_a_data_error_is_not_retried(tmp_path: Path) -> None:
    result = _features_run(tmp_path, flat=True)
    assert not result.success and _retries(result) == 0
    assert "TooFewUsableRowsError" in result.get_step_failure_events()[0].step_failure_data.error.cause.cls_name


def test_a_claim_has_one_winner_on_both_stores(tmp_path: Path, s3_endpoint) -> None:
    from intelligence_assets.store.artifact_store import LocalArtifactStore

    for store in (LocalArtifactStore(tmp_path), s3_endpoint.store()):
        claim = claim_key(artifact_prefix("cell"), "abc")
        assert store.create_if_absent(claim, b"first") is True
        assert store.create_if_absent(claim, b"second") is False
        assert store.get_bytes(claim) == b"first"


def test_two_runs_of_one_model_partition_at_once_leave_one_artifact_one_mlflow_run_and_one_version(
    tmp_path: Path, monkeypatch
) -> None:
    import subprocess

    from mlflow import MlflowClient

    from intelligence_assets.store.artifact_store import LocalArtifactStore
    from intelligence_assets.store.artifacts import ArtifactHandle, find_intact_manifest
    from intelligence_assets.tracking import names

    path = write_small_universe(
        tmp_path / "universe", families={"lightgbm": {"params": {"num_boost_round": 200}}}, symbols=["SIGNAL"]
    )
    home = fresh_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    universe = load_universe(path)
    resources = Deployment(artifact_root=home / "artifacts").resources(universe)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        register_symbols(instance, ["SIGNAL"])
        assets = build_assets(universe)
        assert dg.materialize(
            assets, selection=[BARS, FEATURES], partition_key="SIGNAL", instance=instance, resources=resources
        ).success
        upstream = dg.materialize(
            assets,
            selection=TARGET_ANALYSIS_ASSETS,
            partition_key=dg.MultiPartitionKey({"symbol": "SIGNAL", "target": "y_up_1b"}),
            instance=instance,
            resources=resources,
        )
        assert upstream.success
    environment = home_environment(home, path)
    command = materialize_command(model_key("lightgbm").to_user_string(), "SIGNAL|y_up_1b")
    runs = [
        subprocess.Popen(
            command, cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs), "\n".join(output[-3000:] for output in outputs)
    store = LocalArtifactStore(home / "artifacts")
    model = artifact_prefix(model_key("lightgbm"), "SIGNAL", "y_up_1b")
    handle = ArtifactHandle.current(store, model)
    assert find_intact_manifest(store, handle.prefix, handle.fingerprint)[1] == "intact"
    assert not store.exists(claim_key(handle.prefix, handle.fingerprint))
    # One computed artifact: the second run reused the first's.
    assert [key for key in store.list_keys(model) if key.endswith(MANIFEST_FILE)] == [
        manifest_key(model, handle.fingerprint)
    ]
    client = MlflowClient(resources["mlflow_tracking"].tracker().tracking_uri)
    experiment = client.get_experiment_by_name(names.experiment_name("y_up_1b"))
    tracked = client.search_runs(
        [experiment.experiment_id], f"tags.{names.FINGERPRINT_TAG} = '{handle.fingerprint}'", run_view_type=3
    )
    assert len(tracked) == 1 and tracked[0].info.status == "FINISHED" and tracked[0].info.lifecycle_stage == "active", [
        (r.info.run_id, r.info.status, r.info.lifecycle_stage) for r in tracked
    ]
    versions = client.search_model_versions(f"name = '{names.registered_model_name('SIGNAL', 'y_up_1b')}'")
    assert len(versions) <= 1 and all(version.run_id == tracked[0].info.run_id for version in versions)


def _pointers(store) -> dict[str, str]:
    return {key: store.get_json(key)["fingerprint"] for key in store.list_keys("") if key.endswith(f"/{POINTER_FILE}")}


def test_a_run_across_an_s3_hang_stores_exactly_what_a_clean_run_stores(tmp_path: Path, monkeypatch) -> None:
    """The minio deployment's endpoint stops answering for longer than one request's read timeout
    while a run writes: the run retries through it and leaves the same pointers and intact
    manifests as a clean run of the same partitions, and no claim behind."""
    from intelligence_assets.store.artifacts import find_intact_manifest

    process, port = start_moto_server(tmp_path / "moto.log")
    universe = load_universe(
        write_small_universe(tmp_path / "universe", families={"linear": {"params": {}}}, symbols=["SIGNAL"])
    )
    cell = dg.MultiPartitionKey({"symbol": "SIGNAL", "target": "y_up_1b"})
    monkeypatch.setenv("INTELLIGENCE_DEPLOYMENT", "minio")
    monkeypatch.setenv("INTELLIGENCE_S3_ENDPOINT", f"{LOOPBACK}:{port}")
    monkeypatch.setenv("INTELLIGENCE_S3_ACCESS_KEY", OPEN_ACCESS_KEY)
    monkeypatch.setenv("INTELLIGENCE_S3_SECRET_KEY", OPEN_SECRET_KEY)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))

    def run(bucket: str, hang: bool):
        monkeypatch.setenv("INTELLIGENCE_S3_BUCKET", bucket)
        deployment = Deployment.from_environment()
        store, resources = deployment.artifact_store(), deployment.resources(universe)
        assets = build_assets(universe)
        resumed = threading.Event()

        def hang_once_features_are_stored() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not store.exists(pointer_key(artifact_prefix(FEATURES, "SIGNAL"))):
                time.sleep(0.2)
            process.send_signal(signal.SIGSTOP)
            time.sleep(request_timeouts(DEFAULT_RETRY_SECONDS).read_timeout + 3)
            process.send_signal(signal.SIGCONT)
            resumed.set()

        with dg.instance_for_test() as instance:
            register_symbols(instance, ["SIGNAL"])
            if hang:
                threading.Thread(target=hang_once_features_are_stored, daemon=True).start()
            assert dg.materialize(
                assets, selection=[BARS, FEATURES], partition_key="SIGNAL", instance=instance, resources=resources
            ).success
            result = dg.materialize(
                assets, selection=TARGET_ANALYSIS_ASSETS, partition_key=cell, instance=instance, resources=resources
            )
            assert result.success
        if hang:  # the run was still writing when the endpoint came back: it went through the hang
            assert resumed.is_set(), "the run finished before the endpoint was paused"
        return store

    try:
        reference = _pointers(run(unique_bucket_name("clean"), hang=False))
        store = run(unique_bucket_name("hung"), hang=True)
        assert _pointers(store) == reference
        for key, fingerprint in reference.items():
            prefix = key.rsplit("/", 1)[0]
            assert find_intact_manifest(store, prefix, fingerprint)[1] == "intact"
        assert not [key for key in store.list_keys("") if key.endswith(CLAIM_FILE)]
    finally:
        process.send_signal(signal.SIGCONT)
        stop_process(process)
