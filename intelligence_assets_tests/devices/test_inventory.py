"""Which GPUs a host offers, from each source in turn. NVML is the host's: where its answers would
change what a test expects, the test expects what this host gives."""

from __future__ import annotations

import pytest

from intelligence_assets.devices.inventory import Gpu, GpuInventory, discover_gpus, parse_visible_devices, read_nvml

NVML_ANSWERS = read_nvml()[0] is not None


def test_configured_gpus_come_first() -> None:
    inventory = discover_gpus(configured=[0, "2"], environ={}, device_count=lambda: 8)
    assert inventory.source == "configured"
    assert [gpu.index for gpu in inventory.gpus] == [0, 2]
    assert [gpu.visible_id for gpu in inventory.gpus] == ["0", "2"]
    if not NVML_ANSWERS:
        assert [gpu.name for gpu in inventory.gpus] == ["GPU 0", "GPU 2"]
        assert inventory.describe() == "2 GPUs (configured): GPU 0, GPU 2"


def test_configured_uuids_are_kept_as_given() -> None:
    uuids = ["GPU-00000000-aaaa", "GPU-00000000-bbbb"]
    inventory = discover_gpus(configured=uuids, environ={})
    assert [gpu.index for gpu in inventory.gpus] == uuids
    assert [gpu.visible_id for gpu in inventory.gpus] == uuids
    assert [gpu.name for gpu in inventory.gpus] == [f"GPU {uuid}" for uuid in uuids]


def test_an_empty_gpus_list_means_the_cpu() -> None:
    inventory = discover_gpus(configured=[], environ={}, device_count=lambda: 4)
    assert (inventory.gpus, inventory.source) == ((), "configured")
    assert inventory.describe().startswith("no GPU visible (the universe's gpus: list is empty")
    assert inventory.describe().endswith("GPU families train on the CPU")


@pytest.mark.parametrize("configured", [[0, 0], [-1], [True], ["  "]])
def test_bad_configured_entries_are_refused(configured: list) -> None:
    with pytest.raises(ValueError, match="gpus"):
        discover_gpus(configured=configured, environ={})


def test_operator_visible_devices_by_index() -> None:
    inventory = discover_gpus(environ={"CUDA_VISIBLE_DEVICES": "3, 1"}, device_count=lambda: 8)
    assert inventory.source == "CUDA_VISIBLE_DEVICES"
    assert [(gpu.index, gpu.visible_id) for gpu in inventory.gpus] == [(3, "3"), (1, "1")]


def test_operator_visible_devices_by_uuid() -> None:
    value = "GPU-8e1f2c3d-0000-0000-0000-000000000001,MIG-5c2a0000-0000-0000-0000-000000000002"
    inventory = discover_gpus(environ={"CUDA_VISIBLE_DEVICES": value})
    assert inventory.source == "CUDA_VISIBLE_DEVICES"
    assert [gpu.visible_id for gpu in inventory.gpus] == value.split(",")
    assert [gpu.index for gpu in inventory.gpus] == value.split(",")


@pytest.mark.parametrize("value", ["", "-1", " -1 "])
def test_operator_hiding_every_gpu(value: str) -> None:
    inventory = discover_gpus(environ={"CUDA_VISIBLE_DEVICES": value}, device_count=lambda: 8)
    assert (inventory.gpus, inventory.source) == ((), "CUDA_VISIBLE_DEVICES")
    assert (
        inventory.describe() == "no GPU visible (CUDA_VISIBLE_DEVICES hides every GPU): GPU families train on the CPU"
    )


def test_cuda_stops_reading_at_a_negative_entry() -> None:
    assert parse_visible_devices("0,-1,1") == [0]
    assert parse_visible_devices("2,2,0") == [2, 0]


def test_configured_gpus_must_be_among_the_operators() -> None:
    operator = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert [gpu.index for gpu in discover_gpus(configured=[1], environ=operator).gpus] == [1]
    with pytest.raises(ValueError) as raised:
        discover_gpus(configured=[1, 2], environ=operator)
    assert "gpus: 2 not among" in str(raised.value)
    assert "CUDA_VISIBLE_DEVICES='0,1'" in str(raised.value)
    assert "[1, 2]" in str(raised.value)
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES=''"):
        discover_gpus(configured=[0], environ={"CUDA_VISIBLE_DEVICES": ""})


def test_nvml_then_the_device_count() -> None:
    inventory = discover_gpus(environ={}, device_count=lambda: 3)
    if NVML_ANSWERS:
        assert inventory.source == "nvml"
        return
    assert inventory.source == "torch"
    assert [(gpu.index, gpu.visible_id, gpu.name) for gpu in inventory.gpus] == [
        (0, "0", "GPU 0"),
        (1, "1", "GPU 1"),
        (2, "2", "GPU 2"),
    ]
    assert inventory.describe().startswith("3 GPUs (torch; NVML")


def test_nothing_to_ask() -> None:
    inventory = discover_gpus(environ={})
    if NVML_ANSWERS:
        assert inventory.source == "nvml"
        return
    assert (inventory.gpus, inventory.source) == ((), "none")
    line = inventory.describe()
    assert line.startswith("no GPU visible (no gpus: list, no CUDA_VISIBLE_DEVICES, no NVML, no device count; NVML")
    assert line.endswith("GPU families train on the CPU")


def test_a_known_gpu_is_described_by_name_and_memory() -> None:
    gpus = (
        Gpu(index=0, visible_id="0", name="NVIDIA H100 80GB HBM3", memory_bytes=80 * 2**30),
        Gpu(index=1, visible_id="1", name="GPU 1"),
    )
    assert GpuInventory(gpus, "nvml").describe() == "2 GPUs (nvml): GPU 0 (NVIDIA H100 80GB HBM3, 80 GiB), GPU 1"
    with pytest.raises(ValueError, match="not one of"):
        GpuInventory(gpus, "guess")
