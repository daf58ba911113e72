"""GPU readings for the exporter, through NVML (nvidia-ml-py): no CUDA toolkit needed, only the
driver's libnvidia-ml, which the NVIDIA container toolkit mounts into GPU pods."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric


class GpuReader:
    """Utilisation and memory of the GPUs NVML sees on this host; `available()` is False where
    there is no NVIDIA driver (or no nvidia-ml-py)."""

    def __init__(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:
            self._nvml = None
        else:
            self._nvml = pynvml

    def available(self) -> bool:
        return self._nvml is not None

    def collect(self) -> Iterable[Metric]:
        visible = GaugeMetricFamily("intelligence_gpus_visible", "GPUs NVML sees on the exporter's host.")
        if self._nvml is None:
            visible.add_metric([], 0)
            return [visible]
        nvml = self._nvml
        count = nvml.nvmlDeviceGetCount()
        visible.add_metric([], count)
        utilisation = GaugeMetricFamily(
            "intelligence_gpu_utilisation_ratio", "Share of the last sample period a kernel ran.", labels=["gpu"]
        )
        used = GaugeMetricFamily("intelligence_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"])
        total = GaugeMetricFamily("intelligence_gpu_memory_total_bytes", "GPU memory.", labels=["gpu"])
        for index in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            utilisation.add_metric([str(index)], nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
            used.add_metric([str(index)], memory.used)
            total.add_metric([str(index)], memory.total)
        return [visible, utilisation, used, total]
