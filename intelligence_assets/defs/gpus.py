"""Which GPU a GPU step trains on.

Outside Kubernetes, a step of a GPU family leases a (GPU, slot) of its host for the whole step
(`devices/leases.py`: no other step process or run of the host holds it; a killed step frees it)
and sees only that GPU through CUDA_VISIBLE_DEVICES, so torch and xgboost use it without knowing.
The whole step, not each partition: once a library has initialised CUDA in the step's process,
the process keeps the GPU it saw first. In a Kubernetes pod the device plugin already gave the
pod one GPU (`nvidia.com/gpu` in `pods.py`): nothing is leased.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import dagster as dg

from intelligence_assets.config.deployment import DeploymentSettings
from intelligence_assets.config.universe import ConfigurationError, Universe
from intelligence_assets.devices.inventory import Gpu, GpuInventory, discover_gpus
from intelligence_assets.devices.leases import GpuLeases, exposed, in_kubernetes_pod
from intelligence_assets.tracking import names


@dataclass(frozen=True)
class StepDevice:
    """Where a step trains: a leased GPU slot, the pod's GPU, or the CPU."""

    gpu: Gpu | None = None
    slot: int | None = None
    reason: str = "CPU family"  # why the CPU, when it is

    def metadata(self) -> dict[str, str | int]:
        """What each partition's materialization shows."""
        if self.gpu is None:
            return {"device": "cpu", "device_reason": self.reason}
        described: dict[str, str | int] = {"device": "gpu", "gpu_index": str(self.gpu.index), "gpu_name": self.gpu.name}
        return described if self.slot is None else {**described, "gpu_slot": self.slot}

    def tags(self) -> dict[str, str]:
        """What the model's MLflow run is tagged with."""
        if self.gpu is None:
            return {}
        tags = {names.GPU_INDEX_TAG: str(self.gpu.index), names.GPU_NAME_TAG: self.gpu.name}
        return tags if self.slot is None else {**tags, names.GPU_SLOT_TAG: str(self.slot)}


@dataclass(frozen=True)
class GpuPlacement:
    """The universe's `gpus:` and where the host's slot locks live."""

    universe: Universe
    deployment: DeploymentSettings = field(default_factory=DeploymentSettings.from_environment)

    def inventory(self) -> GpuInventory:
        try:
            return discover_gpus(self.universe.gpus.devices)
        except ValueError as error:
            raise ConfigurationError(f"gpus.devices in the universe file: {error}") from None

    def gpu_slots(self) -> int:
        """GPU steps the host can run at once: its GPUs x steps_per_gpu (0 without a GPU)."""
        return len(self.inventory().gpus) * self.universe.gpus.steps_per_gpu

    @contextmanager
    def step_device(self, context: dg.AssetExecutionContext, family: str) -> Iterator[StepDevice]:
        """For the duration of a step of `family`: its GPU slot, leased and exposed, if it trains
        on a GPU and the host has one."""
        if not self.universe.trains_on_gpu(family):
            yield StepDevice()
            return
        if in_kubernetes_pod():
            pod_gpus = discover_gpus().gpus
            yield StepDevice(pod_gpus[0]) if pod_gpus else StepDevice(reason="no GPU visible in the pod")
            return
        inventory = self.inventory()
        if not inventory.gpus:
            # Said once per command (`make demo`'s header, `make ui`'s pool limits); each step's
            # partitions carry it as `device_reason`.
            context.log.debug(f"{family}: {inventory.describe()}")
            yield StepDevice(reason=inventory.describe())
            return
        leases = GpuLeases(self.deployment.gpu_leases, inventory, self.universe.gpus.steps_per_gpu)
        holder = f"{context.asset_key.to_user_string()} in run {context.run.run_id}"
        with leases.lease(holder, on_wait=context.log.info) as slot, exposed(slot):
            context.log.info(f"{family} trains on {slot.describe()}")
            yield StepDevice(slot.gpu, slot.slot)
