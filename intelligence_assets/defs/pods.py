"""What a step asks Kubernetes for in the `k8s` deployment.

The `dagster-k8s/config` op tag is read by dagster-k8s's `k8s_job_executor` when it builds the
step's Job (one pod per step); every other executor ignores it, so the same definitions serve all
deployments. GPU training steps get a `nvidia.com/gpu` limit, the GPU node selector, tolerations
and image; heavy CPU steps request CPU and memory. Values come from `kubernetes:` in universe.yaml.
"""

from __future__ import annotations

from typing import Any

from intelligence_assets.config.universe import KubernetesSettings

K8S_CONFIG_TAG = "dagster-k8s/config"
LABEL_PREFIX = "intelligence-assets"
# OpenMP and BLAS size their thread pools to the node's cores, not to the pod's CPU request: on a
# shared node a step's idle threads then spin on cores other pods are using (measured on 2 cores:
# target ranking 2-3x slower with two processes' default pools than with one thread each).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def threads_for(cpu: str) -> int:
    """Whole cores in a Kubernetes CPU quantity ("4", "1.5", "500m"), at least one."""
    cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return max(1, int(cores))


def step_pod_tags(settings: KubernetesSettings, gpu: bool, labels: dict[str, str]) -> dict[str, Any]:
    resources = settings.gpu_step if gpu else settings.cpu_step
    container: dict[str, Any] = {
        "resources": {"requests": {"cpu": resources.cpu, "memory": resources.memory}},
        "env": [{"name": name, "value": str(threads_for(resources.cpu))} for name in THREAD_VARIABLES],
    }
    pod_labels = {
        f"{LABEL_PREFIX}/device": "gpu" if gpu else "cpu",
        **{f"{LABEL_PREFIX}/{k}": v for k, v in labels.items()},
    }
    config: dict[str, Any] = {"container_config": container, "pod_template_spec_metadata": {"labels": pod_labels}}
    if gpu:
        # The GPU count is a limit: Kubernetes schedules extended resources by limits.
        container["resources"]["limits"] = {"nvidia.com/gpu": str(settings.gpus_per_step)}
        if settings.gpu_image:
            container["image"] = settings.gpu_image
        config["pod_spec_config"] = {
            "node_selector": dict(settings.gpu_node_selector),
            "tolerations": [toleration.model_dump(exclude_none=True) for toleration in settings.gpu_tolerations],
        }
    return {K8S_CONFIG_TAG: config}
