"""Step pods of the `k8s` deployment, without a cluster.

dagster-k8s's own step handler (the code `k8s_job_executor` runs for every step) builds the
Kubernetes Job for one CPU step and one GPU step of our training job; a recording batch API
stands in for the cluster's, so the Job body is exactly what would be submitted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import kubernetes_validate
import pytest
import yaml
from dagster._config import process_config
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import create_execution_plan
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext
from dagster._core.execution.context_creation_job import create_context_free_log_manager
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.init import InitExecutorContext
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext
from dagster._core.test_utils import create_run_for_test
from dagster._grpc.types import ExecuteStepArgs
from dagster_k8s.executor import K8sStepHandler
from kubernetes.client import ApiClient, V1Job

from intelligence_assets.config.deployment import S3_SECRET_NAME
from intelligence_assets.config.universe import load_universe
from intelligence_assets.definitions import TRAINING_JOB
from intelligence_assets.defs.pods import THREAD_VARIABLES, threads_for
from intelligence_assets.defs.resources.deployment import Deployment

CODE_IMAGE = "ghcr.io/intelligence-assets/intelligence-assets:0.1.0"
CPU_STEP = "models__lightgbm"
GPU_STEP = "models__torch_mlp"


class RecordingBatchApi:
    """Receives the Jobs the step handler submits, as the cluster's BatchV1Api would."""

    def __init__(self) -> None:
        self.jobs: list[V1Job] = []

    def create_namespaced_job(self, body: V1Job, namespace: str, **_request_options: object) -> V1Job:
        assert namespace == "intelligence"
        self.jobs.append(body)
        return body


@pytest.fixture(autouse=True)
def restore_library_log_levels():
    # Loading a kubeconfig sets the urllib3 logger to WARNING for the whole process.
    loggers = [logging.getLogger(name) for name in ("urllib3", "kubernetes", "kubernetes.client.rest")]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.fixture
def kubeconfig_file(tmp_path: Path) -> str:
    # The handler loads a kubeconfig at start; nothing ever connects to this address.
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                "users": [{"name": "test", "user": {"token": "unused"}}],
            }
        )
    )
    return str(path)


@pytest.fixture
def k8s_instance(kubeconfig_file: str):
    launcher = {
        "service_account_name": "dagster",
        "instance_config_map": "dagster-instance",
        "dagster_home": "/opt/dagster/dagster_home",
        "job_namespace": "intelligence",
        "load_incluster_config": False,
        "kubeconfig_file": kubeconfig_file,
    }
    with dg.instance_for_test(
        overrides={"run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher}}
    ) as instance:
        yield instance


def submitted_job(step_key: str, instance: dg.DagsterInstance, kubeconfig_file: str) -> V1Job:
    """The Job our `k8s` executor submits for one step of training_job."""
    deployment = Deployment(name="k8s", mlflow_tracking_uri="http://intelligence-mlflow:5000")
    executor_def = deployment.executor()
    config = process_config(executor_def.config_schema.config_type, {})
    assert config.success, config.errors
    mapped = executor_def.apply_config_mapping(config.value)
    assert mapped.success, mapped.errors
    executor_config = mapped.value["config"]  # the executor config after our `configured` mapping, defaults filled

    repository = ReconstructableRepository.for_module(
        "intelligence_assets.definitions", "defs", working_directory=str(Path.cwd())
    )
    job = repository.get_reconstructable_job(TRAINING_JOB)
    origin = job.get_python_origin()
    origin = origin._replace(repository_origin=origin.repository_origin._replace(container_image=CODE_IMAGE))
    run = create_run_for_test(instance, job_name=TRAINING_JOB, job_code_origin=origin)
    executor = executor_def.executor_creation_fn(
        InitExecutorContext(job=job, executor_def=executor_def, executor_config=executor_config, instance=instance)
    )
    plan = create_execution_plan(job)
    plan_context = PlanOrchestrationContext(
        plan_data=PlanData(
            job=job,
            dagster_run=run,
            instance=instance,
            execution_plan=plan,
            raise_on_error=True,
            retry_mode=RetryMode.DISABLED,
        ),
        log_manager=create_context_free_log_manager(instance, run),
        executor=executor,
        output_capture=None,
    )
    context = StepHandlerContext(
        instance=instance,
        plan_context=plan_context,
        steps=plan.steps,
        execute_step_args=ExecuteStepArgs(origin, run.run_id, [step_key]),
    )
    batch_api = RecordingBatchApi()
    handler = K8sStepHandler(
        image=None,
        container_context=executor._step_handler._executor_container_context,
        load_incluster_config=False,
        kubeconfig_file=kubeconfig_file,
        k8s_client_batch_api=batch_api,
    )
    list(handler.launch_step(context))
    assert len(batch_api.jobs) == 1
    job = batch_api.jobs[0]
    # What the API server would receive, checked against the Kubernetes schema (unknown fields fail).
    kubernetes_validate.validate(ApiClient().sanitize_for_serialization(job), "1.30.0", strict=True)
    return job


@pytest.fixture
def s3_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTELLIGENCE_S3_ENDPOINT", "intelligence-minio:9000")
    monkeypatch.setenv("INTELLIGENCE_S3_ACCESS_KEY", "from-secret")
    monkeypatch.setenv("INTELLIGENCE_S3_SECRET_KEY", "from-secret")


def test_every_job_steps_through_pods_on_the_k8s_deployment(s3_environment) -> None:
    # training_job brings its own executor (forked step processes on the embedded default); on
    # Kubernetes it must still be the pod executor, or GPU families would never reach a GPU node.
    from intelligence_assets.definitions import build_definitions

    deployment = Deployment(name="k8s", mlflow_tracking_uri="http://intelligence-mlflow:5000")
    definitions = build_definitions(load_universe(), deployment)
    jobs = [definitions.resolve_job_def(job.name) for job in definitions.jobs]
    assert TRAINING_JOB in {job.name for job in jobs}
    assert {job.name: job.executor_def.name for job in jobs} == {job.name: "k8s_step_pods" for job in jobs}


def step_threads(container) -> dict[str, str]:
    """The thread-pool sizes the step's container sets; Dagster's own variables must survive beside them."""
    env = {variable.name: variable.value for variable in container.env or []}
    assert "DAGSTER_RUN_JOB_NAME" in env, sorted(env)
    return {name: value for name, value in env.items() if name in THREAD_VARIABLES}


@pytest.mark.parametrize(("cpu", "threads"), [("1", 1), ("4", 4), ("1.5", 1), ("500m", 1), ("2500m", 2)])
def test_a_steps_thread_pools_get_the_whole_cores_it_requests(cpu: str, threads: int) -> None:
    assert threads_for(cpu) == threads


def test_cpu_step_requests_cpu_and_memory_and_no_gpu(k8s_instance, kubeconfig_file, s3_environment) -> None:
    settings = load_universe().kubernetes
    job = submitted_job(CPU_STEP, k8s_instance, kubeconfig_file)
    pod = job.spec.template.spec
    container = pod.containers[0]
    assert container.image == CODE_IMAGE
    assert container.resources.requests == {"cpu": settings.cpu_step.cpu, "memory": settings.cpu_step.memory}
    assert not (container.resources.limits or {}).get("nvidia.com/gpu")
    assert step_threads(container) == {name: str(threads_for(settings.cpu_step.cpu)) for name in THREAD_VARIABLES}
    assert not pod.tolerations and not pod.node_selector
    assert [source.secret_ref.name for source in container.env_from if source.secret_ref] == [S3_SECRET_NAME]
    labels = job.spec.template.metadata.labels
    assert (
        labels["dagster/op"] == CPU_STEP
        and labels["intelligence-assets/device"] == "cpu"
        and labels["intelligence-assets/family"] == "lightgbm"
    )
    assert "execute_step" in " ".join(container.args)


def test_gpu_step_gets_one_gpu_the_gpu_image_node_selector_and_tolerations(
    k8s_instance, kubeconfig_file, s3_environment
) -> None:
    settings = load_universe().kubernetes
    job = submitted_job(GPU_STEP, k8s_instance, kubeconfig_file)
    pod = job.spec.template.spec
    container = pod.containers[0]
    assert container.image == settings.gpu_image != CODE_IMAGE
    assert container.resources.limits == {"nvidia.com/gpu": str(settings.gpus_per_step)}
    assert container.resources.requests == {"cpu": settings.gpu_step.cpu, "memory": settings.gpu_step.memory}
    assert step_threads(container) == {name: str(threads_for(settings.gpu_step.cpu)) for name in THREAD_VARIABLES}
    assert pod.node_selector == settings.gpu_node_selector
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]
    assert [source.secret_ref.name for source in container.env_from if source.secret_ref] == [S3_SECRET_NAME]
    labels = job.spec.template.metadata.labels
    assert labels["dagster/op"] == GPU_STEP and labels["intelligence-assets/device"] == "gpu"


def test_no_credentials_travel_in_the_job_body(k8s_instance, kubeconfig_file, s3_environment) -> None:
    for step in (CPU_STEP, GPU_STEP):
        body = yaml.safe_dump(submitted_job(step, k8s_instance, kubeconfig_file).to_dict())
        assert "from-secret" not in body
