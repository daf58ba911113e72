"""GPU slots shared by real processes through real lock files: no two holders on one slot, waiting
steps start when a slot frees, a killed holder's slot is free at once, and each step sees its GPU
alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from intelligence_assets.devices.inventory import Gpu, GpuInventory
from intelligence_assets.devices.leases import (
    GpuLeases,
    GpuLeaseTimeout,
    GpuSlot,
    NoGpuToLease,
    exposed,
    in_kubernetes_pod,
    lock_file_name,
)

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
POLL_SECONDS = 0.02

# A training step in miniature: waits for `go` (so all start together), leases, shows its GPU through
# `exposed`, holds the slot `hold` seconds (None: until killed) and prints one JSON line per event.
STEP = """
import json, os, sys, time
from pathlib import Path
from intelligence_assets.devices.inventory import Gpu, GpuInventory
from intelligence_assets.devices.leases import GpuLeases, exposed

args = json.loads(sys.argv[1])
gpus = tuple(Gpu(index=i, visible_id=str(i), name=f"GPU {i}") for i in range(args["gpus"]))
leases = GpuLeases(Path(args["directory"]), GpuInventory(gpus, "configured"), args["steps_per_gpu"], args["poll"])
while args["go"] and not os.path.exists(args["go"]):
    time.sleep(0.005)
with leases.lease(args["holder"]) as slot:
    start = time.monotonic()
    with exposed(slot):
        seen = {name: os.environ.get(name) for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
    after = {name: os.environ.get(name) for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
    print(json.dumps({"event": "leased", "gpu": slot.gpu.visible_id, "slot": slot.slot}), flush=True)
    if args["hold"] is None:
        while True:
            time.sleep(60)
    time.sleep(args["hold"])
    end = time.monotonic()
print(json.dumps({"event": "released", "gpu": slot.gpu.visible_id, "slot": slot.slot, "start": start,
                  "end": end, "seen": seen, "after": after}), flush=True)
"""


def inventory(gpus: int) -> GpuInventory:
    return GpuInventory(tuple(Gpu(index=i, visible_id=str(i), name=f"GPU {i}") for i in range(gpus)), "configured")


def start_step(
    directory: Path,
    holder: str,
    gpus: int,
    steps_per_gpu: int = 1,
    hold: float | None = 0.5,
    go: Path | None = None,
    environ: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    args = {
        "directory": str(directory),
        "holder": holder,
        "gpus": gpus,
        "steps_per_gpu": steps_per_gpu,
        "hold": hold,
        "go": str(go) if go else None,
        "poll": POLL_SECONDS,
    }
    env = {name: value for name, value in os.environ.items() if not name.startswith("CUDA_")}
    env.update(environ or {}, PYTHONPATH=str(REPOSITORY_ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", STEP, json.dumps(args)], stdout=subprocess.PIPE, text=True, env=env, cwd=REPOSITORY_ROOT
    )


def events(step: subprocess.Popen[str], timeout: float = 20) -> list[dict]:
    output, _ = step.communicate(timeout=timeout)
    assert step.returncode == 0, f"step exited {step.returncode}: {output}"
    return [json.loads(line) for line in output.splitlines()]


def wait_until_held_by(leases: GpuLeases, holder: str, pid: int, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in leases.held():
            if entry.get("holder") == holder and entry.get("pid") == pid:
                return entry
        time.sleep(0.02)
    raise AssertionError(f"{holder} (pid {pid}) never held a slot: {leases.held()}")


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[str]]]:
    """Steps a test starts; any still running at its end are killed."""
    steps: list[subprocess.Popen[str]] = []
    yield steps
    for step in steps:
        if step.poll() is None:
            step.kill()
            step.communicate()


def test_concurrent_steps_never_share_a_slot(tmp_path: Path, running: list) -> None:
    go = tmp_path / "go"
    running.extend(start_step(tmp_path / "locks", f"step {n}", gpus=2, steps_per_gpu=2, go=go) for n in range(8))
    time.sleep(0.3)  # the interpreters start; the leases begin together
    go.touch()
    holds = [event for step in running for event in events(step) if event["event"] == "released"]

    assert len(holds) == 8, "every step leased and finished"
    for gpu_slot in {(hold["gpu"], hold["slot"]) for hold in holds}:
        spans = sorted((hold["start"], hold["end"]) for hold in holds if (hold["gpu"], hold["slot"]) == gpu_slot)
        for (_, earlier_end), (later_start, _) in zip(spans, spans[1:], strict=False):
            assert later_start >= earlier_end, f"two steps held GPU {gpu_slot[0]} slot {gpu_slot[1]} at once"
    # Ends sort before starts at one instant: a slot handed over is not two holders.
    changes = sorted([(hold["start"], 1) for hold in holds] + [(hold["end"], -1) for hold in holds])
    peak = max(sum(change for _, change in changes[: n + 1]) for n in range(len(changes)))
    assert 2 <= peak <= 4
    assert {(hold["gpu"], hold["slot"]) for hold in holds} == {("0", 0), ("1", 0), ("0", 1), ("1", 1)}


def test_steps_spread_over_gpus_before_sharing_one(tmp_path: Path, running: list) -> None:
    leases = GpuLeases(tmp_path, inventory(2), steps_per_gpu=2, poll_seconds=POLL_SECONDS)
    first = start_step(tmp_path, "first", gpus=2, steps_per_gpu=2, hold=None)
    running.append(first)
    taken = wait_until_held_by(leases, "first", first.pid)
    with leases.lease("second") as second:
        assert second.gpu.visible_id != taken["gpu"]
        assert (second.slot, taken["slot"]) == (0, 0)
        with leases.lease("third") as third:
            assert third.slot == 1


def test_a_waiting_step_starts_when_the_slot_frees(tmp_path: Path, running: list) -> None:
    leases = GpuLeases(tmp_path, inventory(1), poll_seconds=POLL_SECONDS)
    holder = start_step(tmp_path, "A", gpus=1, hold=1.5)
    running.append(holder)
    wait_until_held_by(leases, "A", holder.pid)
    waits: list[str] = []
    with leases.lease("B", timeout=10, on_wait=waits.append) as slot:
        got = time.monotonic()
        assert (slot.gpu.visible_id, slot.slot, slot.holder) == ("0", 0, "B")
    released = next(event for event in events(holder) if event["event"] == "released")
    assert got >= released["end"], "B got the slot while A still held it"
    assert len(waits) == 1, waits
    assert "B waits for a GPU: all 1 slot (1 GPUs x 1 steps each) are held (GPU 0 slot 0 by A (pid" in waits[0]
    assert "giving up after 10s" in waits[0]


def test_a_killed_holders_slot_is_free_at_once(tmp_path: Path, running: list) -> None:
    leases = GpuLeases(tmp_path, inventory(1), poll_seconds=POLL_SECONDS)
    doomed = start_step(tmp_path, "doomed", gpus=1, hold=None)
    running.append(doomed)
    held = wait_until_held_by(leases, "doomed", doomed.pid)
    assert (held["gpu"], held["slot"]) == ("0", 0)
    with pytest.raises(GpuLeaseTimeout), leases.lease("too early", timeout=0.2, on_wait=lambda _: None):
        pass

    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    assert doomed.returncode == -signal.SIGKILL
    started = time.monotonic()
    with leases.lease("successor", timeout=2) as slot:
        assert time.monotonic() - started < 2
        assert slot.slot == 0
        assert [entry["holder"] for entry in leases.held()] == ["successor"]
    assert leases.held() == []


def test_each_step_sees_its_gpu_alone(tmp_path: Path, running: list) -> None:
    leases = GpuLeases(tmp_path, inventory(2), poll_seconds=POLL_SECONDS)
    with leases.lease("parent") as mine:
        assert mine.gpu.visible_id == "0"
        step = start_step(tmp_path, "child", gpus=2, hold=0, environ={"CUDA_VISIBLE_DEVICES": "0,1"})
        running.append(step)
        released = next(event for event in events(step) if event["event"] == "released")
    assert released["gpu"] == "1"
    assert released["seen"] == {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert released["after"] == {"CUDA_VISIBLE_DEVICES": "0,1", "CUDA_DEVICE_ORDER": None}


def test_exposed_restores_the_previous_environment() -> None:
    slot = GpuSlot(gpu=Gpu(index="GPU-abc", visible_id="GPU-abc", name="GPU GPU-abc"), slot=0, holder="step")
    environ = {"CUDA_VISIBLE_DEVICES": "0,1", "HOME": "/root"}
    with pytest.raises(KeyError), exposed(slot, environ):
        assert environ == {"CUDA_VISIBLE_DEVICES": "GPU-abc", "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "HOME": "/root"}
        raise KeyError("the step failed")
    assert environ == {"CUDA_VISIBLE_DEVICES": "0,1", "HOME": "/root"}
    assert slot.environment == {"CUDA_VISIBLE_DEVICES": "GPU-abc"}


def test_exposed_refuses_once_cuda_is_initialised(monkeypatch: pytest.MonkeyPatch) -> None:
    slot = GpuSlot(gpu=Gpu(index=1, visible_id="1", name="GPU 1"), slot=0, holder="step")
    environ = {"CUDA_VISIBLE_DEVICES": "0,1"}
    # Not a GPU host: a stand-in torch whose CUDA has initialised.
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=SimpleNamespace(is_initialized=lambda: True)))
    refused = "CUDA was initialised in this process before step leased GPU 1"
    with pytest.raises(RuntimeError, match=refused), exposed(slot, environ):
        pass
    assert environ == {"CUDA_VISIBLE_DEVICES": "0,1"}
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=SimpleNamespace(is_initialized=lambda: False)))
    with exposed(slot, environ):
        assert environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_a_timeout_names_the_slots_and_holders(tmp_path: Path) -> None:
    leases = GpuLeases(tmp_path / "new", inventory(2), poll_seconds=POLL_SECONDS)
    waits: list[str] = []
    with leases.lease("first"), leases.lease("second"):
        started = time.monotonic()
        with pytest.raises(GpuLeaseTimeout) as raised, leases.lease("third", timeout=0.3, on_wait=waits.append):
            pass
        assert 0.3 <= time.monotonic() - started < 2
    message = str(raised.value)
    assert isinstance(raised.value, TimeoutError)
    assert message.startswith("third got no GPU slot within 0.3s: all 2 held")
    assert f"GPU 0 slot 0 by first (pid {os.getpid()}" in message
    assert f"GPU 1 slot 0 by second (pid {os.getpid()}" in message
    assert [(slot["gpu"], slot["slot"], slot["holder"]) for slot in raised.value.slots] == [
        ("0", 0, "first"),
        ("1", 0, "second"),
    ]
    assert len(waits) == 1
    assert leases.held() == []


def test_the_lock_file_names_its_holder_while_held(tmp_path: Path) -> None:
    leases = GpuLeases(tmp_path, inventory(1))
    with leases.lease("run 1234 / models__xgboost") as slot:
        path = tmp_path / "gpu-0-slot-0.lock"
        assert path == leases.lock_path(slot.gpu, slot.slot)
        written = json.loads(path.read_text())
        assert written["holder"] == "run 1234 / models__xgboost"
        assert written["pid"] == os.getpid()
        assert slot.describe() == "GPU 0 slot 0 of 1"
    assert path.read_text() == ""


def test_lock_names_are_one_safe_file_per_gpu_and_slot() -> None:
    assert lock_file_name(Gpu(index="MIG-a/b c", visible_id="MIG-a/b c", name="?"), 1) == "gpu-MIG-a_b_c-slot-1.lock"
    by_uuid = Gpu(index=0, visible_id="0", name="NVIDIA H100 80GB HBM3", uuid="GPU-12ab")
    assert lock_file_name(by_uuid, 0) == "gpu-GPU-12ab-slot-0.lock"


def test_no_gpu_no_lease(tmp_path: Path) -> None:
    leases = GpuLeases(tmp_path, GpuInventory((), "none"))
    with pytest.raises(NoGpuToLease, match="no GPU visible"), leases.lease("step"):
        pass
    assert leases.held() == []


def test_kubernetes_pods_are_recognised() -> None:
    assert in_kubernetes_pod({"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert not in_kubernetes_pod({})
