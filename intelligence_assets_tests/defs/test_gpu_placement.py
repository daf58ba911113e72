"""GPU steps placed on the host's GPUs (`defs/gpus.py`), on this machine's CPUs: the GPUs are
listed in the universe (`gpus.devices`), so the real leases run and each step sees only its GPU;
torch and xgboost then find no CUDA device and train on the CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest

from intelligence_assets.config.universe import REPOSITORY_ROOT, load_universe
from intelligence_assets.definitions import TRAINING_JOB, build_assets
from intelligence_assets.defs.assets.market_data import BARS, FEATURES
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.partitions import register_symbols
from intelligence_assets.tracking import names
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.pipeline import MODEL_SELECTION, local_resources, materialize_market_data

DAGSTER = str(Path(sys.executable).parent / "dagster")
CELL = "SIGNAL|y_up_1b"
# Three GPU families (torch's use a GPU by default; xgboost when told), one CPU family.
FAMILIES = {
    "linear": {"params": {}},
    "torch_mlp": {"params": {"max_epochs": 4, "hidden_sizes": [8]}},
    "torch_tcn": {"params": {"max_epochs": 2, "window": 8, "channels": 4, "levels": 1}},
    "xgboost": {"params": {"num_boost_round": 40}, "gpu": True},
}
GPU_FAMILIES = ("torch_mlp", "torch_tcn", "xgboost")


def _materializations(instance: dg.DagsterInstance, family: str) -> list[dg.AssetMaterialization]:
    records = instance.fetch_materializations(model_key(family), limit=10).records
    return [record.asset_materialization for record in records if "cache" in record.asset_materialization.metadata]


def test_a_gpu_step_leases_its_gpu_and_says_so_in_metadata_and_mlflow(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("INTELLIGENCE_GPU_LEASES", str(tmp_path / "leases"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    universe = load_universe(
        write_small_universe(tmp_path, families=FAMILIES, gpus={"devices": [1], "steps_per_gpu": 1})
    )
    resources = local_resources(tmp_path / "artifacts", universe)
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        register_symbols(instance, universe.symbols)
        assets = build_assets(universe)
        assert dg.materialize(
            assets,
            selection=dg.AssetSelection.assets(BARS, FEATURES),
            partition_key="SIGNAL",
            instance=instance,
            resources=resources,
        ).success
        cell = dg.MultiPartitionKey({"symbol": "SIGNAL", "target": "y_up_1b"})
        result = dg.materialize(
            assets,
            selection=MODEL_SELECTION,
            partition_key=cell,
            instance=instance,
            resources=resources,
        )
        assert result.success
        client = resources["mlflow_tracking"].tracker().client
        for family in GPU_FAMILIES:
            (materialization,) = _materializations(instance, family)
            metadata = {key: value.value for key, value in materialization.metadata.items()}
            assert (metadata["device"], metadata["gpu_index"], metadata["gpu_slot"]) == ("gpu", "1", 0), family
            run = client.get_run(metadata["mlflow_run_id"])
            assert run.data.tags[names.GPU_INDEX_TAG] == "1" and run.data.tags[names.GPU_SLOT_TAG] == "0"
        (linear,) = _materializations(instance, "linear")
        assert linear.metadata["device"].value == "cpu"
        assert names.GPU_INDEX_TAG not in client.get_run(linear.metadata["mlflow_run_id"].value).data.tags
    # The step's process saw only its GPU while it trained, and the setting is gone afterwards.
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert sorted(path.name for path in (tmp_path / "leases").iterdir()) == ["gpu-1-slot-0.lock"]


def test_on_a_host_without_a_gpu_gpu_families_train_on_the_cpu_and_say_why(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("INTELLIGENCE_GPU_LEASES", str(tmp_path / "leases"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the operator hides every GPU
    universe = load_universe(write_small_universe(tmp_path, families={"torch_mlp": FAMILIES["torch_mlp"]}))
    resources = local_resources(tmp_path / "artifacts", universe)
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        register_symbols(instance, universe.symbols)
        assets = build_assets(universe)
        for selection, partition in (
            (dg.AssetSelection.assets(BARS, FEATURES), "SIGNAL"),
            (
                MODEL_SELECTION,
                dg.MultiPartitionKey({"symbol": "SIGNAL", "target": "y_up_1b"}),
            ),
        ):
            result = dg.materialize(
                assets, selection=selection, partition_key=partition, instance=instance, resources=resources
            )
            assert result.success
        (materialization,) = _materializations(instance, "torch_mlp")
        assert materialization.metadata["device"].value == "cpu"
        assert "CUDA_VISIBLE_DEVICES hides every GPU" in materialization.metadata["device_reason"].value
    assert not (tmp_path / "leases").exists(), "nothing to lease without a GPU"


def _gpu_step_intervals(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float, str]]:
    """family -> (when its step had its GPU, when it stored its last output, the GPU index)."""
    leased: dict[str, float] = {}
    ended: dict[str, float] = {}
    gpus: dict[str, str] = {}
    for entry in instance.all_logs(run_id):
        step = entry.step_key or ""
        family = next((f for f in GPU_FAMILIES if step.endswith(f)), None)
        if family is None:
            continue
        if entry.dagster_event is None and " trains on GPU " in entry.user_message:
            leased[family] = entry.timestamp
            gpus[family] = entry.user_message.split(" trains on GPU ")[1].split(" ")[0]
        if (
            entry.dagster_event is not None
            and entry.dagster_event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
        ):
            ended[family] = max(ended.get(family, 0.0), entry.timestamp)
    return {family: (leased[family], ended[family], gpus[family]) for family in leased}


@pytest.mark.parametrize(("devices", "steps_per_gpu"), [([0], 1), ([0, 1], 1)])
def test_gpu_steps_in_separate_processes_never_share_a_slot(
    tmp_path: Path, devices: list[int], steps_per_gpu: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """training_job through its multiprocess executor (a process per step, two at once): with one
    slot no two GPU steps hold a GPU at the same time; with two GPUs, steps that overlap do so on
    different GPUs."""
    universe_path = write_small_universe(
        tmp_path, families=FAMILIES, gpus={"devices": devices, "steps_per_gpu": steps_per_gpu}
    )
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml places storage under it
    shutil.copy(REPOSITORY_ROOT / "dagster.yaml", home / "dagster.yaml")
    environment = {
        **{key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"},
        "DAGSTER_HOME": str(home),
        "INTELLIGENCE_UNIVERSE": str(universe_path),
        "INTELLIGENCE_ARTIFACT_ROOT": str(home / "artifacts"),
    }
    universe = load_universe(universe_path)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("symbol", ["SIGNAL"])
        materialize_market_data(instance, universe, local_resources(home / "artifacts", universe), "SIGNAL")
    tags = json.dumps({"dagster/partition": CELL})
    command = [DAGSTER, "job", "execute", "-m", "intelligence_assets.definitions", "-j", TRAINING_JOB, "--tags", tags]
    completed = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_id = next(run.run_id for run in instance.get_runs() if run.job_name == TRAINING_JOB)
        intervals = _gpu_step_intervals(instance, run_id)
    assert set(intervals) == set(GPU_FAMILIES)
    assert {gpu for _, _, gpu in intervals.values()} <= {str(device) for device in devices}
    families = sorted(intervals)
    for index, first in enumerate(families):
        for second in families[index + 1 :]:
            (start_a, end_a, gpu_a), (start_b, end_b, gpu_b) = intervals[first], intervals[second]
            overlap = start_a < end_b and start_b < end_a
            if overlap:
                assert gpu_a != gpu_b, (
                    f"{first} and {second} held GPU {gpu_a} at once: "
                    f"{datetime.fromtimestamp(start_a)}..{datetime.fromtimestamp(end_a)} and "
                    f"{datetime.fromtimestamp(start_b)}..{datetime.fromtimestamp(end_b)}"
                )


def test_in_a_kubernetes_pod_nothing_is_leased_and_the_pod_keeps_its_gpu_limit(tmp_path: Path, monkeypatch) -> None:
    from intelligence_assets.defs.pods import K8S_CONFIG_TAG

    monkeypatch.setenv("INTELLIGENCE_GPU_LEASES", str(tmp_path / "leases"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    universe = load_universe(
        write_small_universe(tmp_path, families={"torch_mlp": FAMILIES["torch_mlp"]}, gpus={"devices": [0, 1]})
    )
    resources = local_resources(tmp_path / "artifacts", universe)
    assets = build_assets(universe)
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        register_symbols(instance, universe.symbols)
        for selection, partition in (
            (dg.AssetSelection.assets(BARS, FEATURES), "SIGNAL"),
            (MODEL_SELECTION, dg.MultiPartitionKey({"symbol": "SIGNAL", "target": "y_up_1b"})),
        ):
            assert dg.materialize(
                assets, selection=selection, partition_key=partition, instance=instance, resources=resources
            ).success
    assert not (tmp_path / "leases").exists()
    model = next(asset for asset in assets if model_key("torch_mlp") in asset.keys)
    limits = json.loads(model.op.tags[K8S_CONFIG_TAG])["container_config"]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": str(universe.kubernetes.gpus_per_step)}
