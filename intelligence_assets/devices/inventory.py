"""The GPUs this host may train on, and where that knowledge came from.

Read once per process from, in order: the universe's `gpus:` list, the operator's
CUDA_VISIBLE_DEVICES, NVML (the driver's library, no CUDA toolkit), a device count the caller
passes (torch's, in production), else none. Never imports torch: importing it is slow, and a CUDA
context made here would pin CUDA_VISIBLE_DEVICES before a step could lease its GPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

SOURCES = ("configured", "CUDA_VISIBLE_DEVICES", "nvml", "torch", "none")
VISIBLE_DEVICES_VARIABLE = "CUDA_VISIBLE_DEVICES"
# Values of CUDA_VISIBLE_DEVICES that hide every GPU.
NO_DEVICES = ("", "-1")


@dataclass(frozen=True)
class Gpu:
    """One GPU a step may lease. `index` is the host's CUDA index (as nvidia-smi numbers it) or,
    where the operator named it so, its UUID; `visible_id` is what goes into CUDA_VISIBLE_DEVICES to
    show a process this GPU alone. `uuid` (from NVML, when it answers) names the GPU whichever way it
    was configured, so two runs naming one GPU by index and by UUID still share its lock."""

    index: int | str
    visible_id: str
    name: str
    memory_bytes: int | None = None
    uuid: str | None = None

    def describe(self) -> str:
        details = [] if self.name == unknown_name(self.visible_id) else [self.name]
        if self.memory_bytes is not None:
            details.append(f"{self.memory_bytes / 2**30:.0f} GiB")
        return f"GPU {self.index}" + (f" ({', '.join(details)})" if details else "")


@dataclass(frozen=True)
class GpuInventory:
    """The GPUs found and which source gave them (one of SOURCES). `note` says why an earlier
    source was passed over (NVML's error, say), for the log line that explains CPU training."""

    gpus: tuple[Gpu, ...]
    source: str
    note: str = ""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"GPU inventory source {self.source!r} is not one of {', '.join(SOURCES)}")

    def __len__(self) -> int:
        return len(self.gpus)

    def describe(self) -> str:
        """One line for logs."""
        note = f"; {self.note}" if self.note else ""
        if not self.gpus:
            return f"no GPU visible ({NONE_REASONS[self.source]}{note}): GPU families train on the CPU"
        count = f"{len(self.gpus)} GPU{'s' if len(self.gpus) != 1 else ''}"
        return f"{count} ({self.source}{note}): {', '.join(gpu.describe() for gpu in self.gpus)}"


NONE_REASONS = {
    "configured": "the universe's gpus: list is empty",
    "CUDA_VISIBLE_DEVICES": "CUDA_VISIBLE_DEVICES hides every GPU",
    "nvml": "nvml found none",
    "torch": "torch found none",
    "none": "no gpus: list, no CUDA_VISIBLE_DEVICES, no NVML, no device count",
}


def unknown_name(visible_id: str) -> str:
    return f"GPU {visible_id}"


@dataclass(frozen=True)
class _NvmlReading:
    index: int
    uuid: str
    name: str
    memory_bytes: int


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes.
    return value.decode() if isinstance(value, bytes) else value


def read_nvml() -> tuple[tuple[_NvmlReading, ...] | None, str]:
    """Every GPU NVML sees (NVML ignores CUDA_VISIBLE_DEVICES: these are host indices), or None
    and the reason where there is no driver, no nvidia-ml-py or NVML fails."""
    try:
        import pynvml
    except ImportError as error:
        return None, f"nvidia-ml-py missing: {error}"
    try:
        pynvml.nvmlInit()
    except Exception as error:  # NVMLError and its many subclasses, OSError from ctypes
        return None, f"NVML unavailable: {error}"
    try:
        readings = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            readings.append(
                _NvmlReading(
                    index=index,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                )
            )
        return tuple(readings), ""
    except Exception as error:
        return None, f"NVML failed: {error}"
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _entry(value: int | str, where: str) -> int | str:
    """A configured or visible device as CUDA reads it: a host index, or a GPU/MIG UUID."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{where}: GPU {value!r} is neither an index nor a UUID")
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if index < 0:
            raise ValueError(f"{where}: GPU index {index} is negative")
        return index
    if not text:
        raise ValueError(f"{where}: a GPU entry is empty")
    return text


def parse_visible_devices(value: str) -> list[int | str]:
    """The entries of CUDA_VISIBLE_DEVICES as CUDA reads them: "" or "-1" hide every GPU, and CUDA
    stops at the first negative index, ignoring what follows."""
    entries: list[int | str] = []
    for raw in value.split(","):
        text = raw.strip()
        if not text or text.startswith("-"):
            break
        entry = _entry(text, VISIBLE_DEVICES_VARIABLE)
        if entry not in entries:
            entries.append(entry)
    return entries


def _matching(entry: int | str, readings: Sequence[_NvmlReading] | None) -> _NvmlReading | None:
    if not readings:
        return None
    if isinstance(entry, int):
        return next((reading for reading in readings if reading.index == entry), None)
    # CUDA accepts any unique prefix of a UUID.
    found = [reading for reading in readings if reading.uuid.startswith(entry)]
    return found[0] if len(found) == 1 else None


def _gpu(entry: int | str, readings: Sequence[_NvmlReading] | None) -> Gpu:
    visible_id = str(entry)
    reading = _matching(entry, readings)
    if reading is None:
        return Gpu(index=entry, visible_id=visible_id, name=unknown_name(visible_id))
    return Gpu(
        index=entry, visible_id=visible_id, name=reading.name, memory_bytes=reading.memory_bytes, uuid=reading.uuid
    )


def discover_gpus(
    configured: Sequence[int | str] | None = None,
    environ: Mapping[str, str] = os.environ,
    device_count: Callable[[], int] | None = None,
) -> GpuInventory:
    """The GPUs steps may lease on this host. `configured` is the universe's `gpus:` list (indices
    or UUIDs; empty means train on the CPU); when the operator also set CUDA_VISIBLE_DEVICES, it
    must pick from those GPUs. `device_count` is asked only where nothing before it answers: pass
    torch.cuda.device_count only in a process that will not train, since asking CUDA fixes that
    process's CUDA_VISIBLE_DEVICES for good."""
    readings, nvml_note = read_nvml()
    operator_value = environ.get(VISIBLE_DEVICES_VARIABLE)
    operator_entries = None if operator_value is None else parse_visible_devices(operator_value)

    if configured is not None:
        if isinstance(configured, str | bytes):
            raise ValueError(f"gpus: expected a list of GPU indices or UUIDs, got the string {configured!r}")
        entries = [_entry(value, "gpus") for value in configured]
        repeated = sorted({str(entry) for entry in entries if entries.count(entry) > 1})
        if repeated:
            raise ValueError(f"gpus: {', '.join(repeated)} listed more than once")
        if operator_entries is not None:
            _check_subset(entries, operator_entries, operator_value or "", readings)
        return GpuInventory(tuple(_gpu(entry, readings) for entry in entries), "configured")

    if operator_entries is not None:
        return GpuInventory(tuple(_gpu(entry, readings) for entry in operator_entries), "CUDA_VISIBLE_DEVICES")

    if readings is not None:
        return GpuInventory(tuple(_gpu(reading.index, readings) for reading in readings), "nvml")

    if device_count is not None:
        count = device_count()
        return GpuInventory(tuple(_gpu(index, None) for index in range(count)), "torch", note=nvml_note)

    return GpuInventory((), "none", note=nvml_note)


def _check_subset(
    configured: Sequence[int | str],
    visible: Sequence[int | str],
    operator_value: str,
    readings: Sequence[_NvmlReading] | None,
) -> None:
    """A configured GPU outside the operator's CUDA_VISIBLE_DEVICES would hand steps a GPU the
    operator kept from this deployment. Entries compare by NVML's UUID where it answers, so an
    index and its GPU's UUID are the same GPU."""

    def identity(entry: int | str) -> str:
        reading = _matching(entry, readings)
        return reading.uuid if reading is not None else str(entry)

    allowed = {identity(entry) for entry in visible}
    outside = [str(entry) for entry in configured if identity(entry) not in allowed]
    if outside:
        raise ValueError(
            f"gpus: {', '.join(outside)} not among the GPUs the operator's "
            f"CUDA_VISIBLE_DEVICES={operator_value!r} makes visible; the universe's gpus: list "
            f"[{', '.join(str(entry) for entry in configured)}] must pick from them"
        )
