"""GPU slots leased to training steps across every process on the host.

A slot is (GPU, k) for k below `steps_per_gpu`; holding one is holding an exclusive `flock` on
its lock file through a descriptor the holder keeps open. The kernel drops the lock when that
descriptor closes, so a step that is SIGKILLed or OOM-killed frees its slot with no cleanup and no
stale-lock heuristics. The lock files stay; their text (who holds, since when) is for people
looking at the directory, never trusted by the code.

Caveat: a process forked while holding a lease shares the descriptor, and the slot stays held
until the fork exits too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from intelligence_assets.devices.inventory import VISIBLE_DEVICES_VARIABLE, Gpu, GpuInventory

logger = logging.getLogger("intelligence_assets.devices")

DEVICE_ORDER_VARIABLE = "CUDA_DEVICE_ORDER"
# CUDA's default order puts the fastest GPU first; PCI bus order is nvidia-smi's and NVML's, which
# is what GPU indices in the universe and in CUDA_VISIBLE_DEVICES mean.
PCI_BUS_ORDER = "PCI_BUS_ID"


class NoGpuToLease(RuntimeError):
    """`lease` was asked for a GPU on a host whose inventory has none: callers check first and
    train on the CPU."""


class GpuLeaseTimeout(TimeoutError):
    """No slot freed within the timeout; `slots` names each slot and its holder."""

    def __init__(self, message: str, slots: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.slots = slots


@dataclass(frozen=True)
class GpuSlot:
    """A leased slot: `gpu` is the step's alone while the lease lasts (with `steps_per_gpu` - 1
    other steps at most)."""

    gpu: Gpu
    slot: int
    holder: str
    steps_per_gpu: int = 1

    @property
    def environment(self) -> dict[str, str]:
        """What shows a process this GPU alone."""
        return {VISIBLE_DEVICES_VARIABLE: self.gpu.visible_id}

    def describe(self) -> str:
        return f"{self.gpu.describe()} slot {self.slot} of {self.steps_per_gpu}"


def lock_file_name(gpu: Gpu, slot: int) -> str:
    """The one place a slot's lock file is named. By NVML's UUID when known, so a GPU named by index
    in one run and by UUID in another is still one lock."""
    key = gpu.uuid or gpu.visible_id
    return f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}-slot-{slot}.lock"


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding `path`'s exclusive lock, or None if another holds it. Separate
    opens conflict even within one process, so threads cannot share a slot either."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


class GpuLeases:
    """Slots on `inventory`'s GPUs, `steps_per_gpu` each, shared through lock files in `directory`
    by every process that uses the same directory: one directory per host (or per group of GPUs)."""

    def __init__(
        self, directory: Path, inventory: GpuInventory, steps_per_gpu: int = 1, poll_seconds: float = 0.5
    ) -> None:
        if steps_per_gpu < 1:
            raise ValueError(f"steps_per_gpu must be at least 1, got {steps_per_gpu}")
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be positive, got {poll_seconds}")
        self.directory = Path(directory)
        self.inventory = inventory
        self.steps_per_gpu = steps_per_gpu
        self.poll_seconds = poll_seconds
        # Every GPU's slot 0 before any GPU's slot 1: steps spread over GPUs before they share one.
        self.slots: tuple[tuple[Gpu, int], ...] = tuple(
            (gpu, slot) for slot in range(steps_per_gpu) for gpu in inventory.gpus
        )

    def lock_path(self, gpu: Gpu, slot: int) -> Path:
        return self.directory / lock_file_name(gpu, slot)

    @contextlib.contextmanager
    def lease(
        self,
        holder: str,
        timeout: float | None = None,
        on_wait: Callable[[str], None] = logger.info,
    ) -> Iterator[GpuSlot]:
        """Hold a free slot for the block. When all are held, says so once through `on_wait` and
        polls every `poll_seconds` until one frees; after `timeout` seconds (None: no limit) raises
        GpuLeaseTimeout."""
        if not self.slots:
            raise NoGpuToLease(
                f"{holder} asked for a GPU, but {self.inventory.describe()}; check the inventory before leasing"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        waited = False
        while True:
            acquired = self._acquire_any()
            if acquired is not None:
                break
            if not waited:
                waited = True
                on_wait(
                    f"{holder} waits for a GPU: all {len(self.slots)} slot{'s' if len(self.slots) != 1 else ''} "
                    f"({len(self.inventory.gpus)} GPUs x {self.steps_per_gpu} steps each) are held"
                    f" ({self._holders_text()}); "
                    + ("no time limit" if timeout is None else f"giving up after {timeout:g}s")
                )
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                held = self.held()
                raise GpuLeaseTimeout(
                    f"{holder} got no GPU slot within {timeout:g}s: all {len(self.slots)} held "
                    f"({self._holders_text(held)}); lock files in {self.directory}",
                    held,
                )
            time.sleep(self.poll_seconds if deadline is None else min(self.poll_seconds, deadline - now))
        descriptor, gpu, slot = acquired
        try:
            _write_holder(descriptor, holder)
            leased = GpuSlot(gpu=gpu, slot=slot, holder=holder, steps_per_gpu=self.steps_per_gpu)
            yield leased
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(descriptor, 0)  # the text no longer names a holder
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            os.close(descriptor)

    def _acquire_any(self) -> tuple[int, Gpu, int] | None:
        for gpu, slot in self.slots:
            descriptor = _try_lock(self.lock_path(gpu, slot))
            if descriptor is not None:
                return descriptor, gpu, slot
        return None

    def held(self) -> list[dict[str, Any]]:
        """The slots held now, each with its GPU, slot, lock file and what its holder wrote
        (holder, pid, host, since). Tries each lock: a slot it can take is free and is let go at
        once; a lease trying that slot in the same instant passes to the next one."""
        if not self.directory.is_dir():
            return []
        held = []
        for gpu, slot in self.slots:
            path = self.lock_path(gpu, slot)
            if not path.exists():
                continue
            descriptor = _try_lock(path)
            if descriptor is not None:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
                os.close(descriptor)
                continue
            held.append({"gpu": gpu.visible_id, "slot": slot, "path": str(path), **_read_holder(path)})
        return held

    def _holders_text(self, held: list[dict[str, Any]] | None = None) -> str:
        held = self.held() if held is None else held
        return (
            "; ".join(
                f"GPU {entry['gpu']} slot {entry['slot']} by {entry.get('holder') or 'unknown'}"
                + (f" (pid {entry['pid']} on {entry.get('host')})" if entry.get("pid") else "")
                for entry in held
            )
            or "holders just let go"
        )


def _write_holder(descriptor: int, holder: str) -> None:
    text = json.dumps(
        {
            "holder": holder,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, (text + "\n").encode(), 0)


def _read_holder(path: Path) -> dict[str, Any]:
    """What the holder wrote; empty in the instant between its lock and its write."""
    try:
        found = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


@contextlib.contextmanager
def exposed(slot: GpuSlot, environ: MutableMapping[str, str] = os.environ) -> Iterator[GpuSlot]:
    """Show this process only the slot's GPU for the block, restoring the previous values after.
    CUDA reads CUDA_VISIBLE_DEVICES once, when it initialises: if torch already has, the setting
    would silently not apply, so that is an error (torch is looked up, never imported)."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_initialized():
        raise RuntimeError(
            f"CUDA was initialised in this process before {slot.holder} leased {slot.describe()}: "
            f"setting CUDA_VISIBLE_DEVICES={slot.gpu.visible_id} now would not take effect; lease before "
            "any CUDA call"
        )
    wanted = {**slot.environment, DEVICE_ORDER_VARIABLE: PCI_BUS_ORDER}
    previous = {name: environ.get(name) for name in wanted}
    environ.update(wanted)
    try:
        yield slot
    finally:
        for name, value in previous.items():
            if value is None:
                environ.pop(name, None)
            else:
                environ[name] = value


def in_kubernetes_pod(environ: Mapping[str, str] = os.environ) -> bool:
    """Inside a Kubernetes pod the device plugin already gives each step pod its own GPU, so
    callers skip leasing there."""
    return bool(environ.get("KUBERNETES_SERVICE_HOST"))
