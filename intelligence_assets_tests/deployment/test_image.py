"""The `k8s` deployment run from the built image: `make image-test` (skipped without INTELLIGENCE_IMAGE).

PostgreSQL, the S3 endpoint and the MLflow server listen on loopback. From the image:
- the code server, started as the Helm chart starts it (`dagster api grpc` with the chart's
  arguments and the user deployment's env), loaded over gRPC by a Dagster instance on the host;
- run pods and step pods exactly as dagster-k8s builds them: the host's instance launches runs
  with `K8sRunLauncher` (config from the chart's values), whose run pod runs `k8s_job_executor`,
  which submits a Job per step; a one-node stand-in for the Kubernetes API
  (`support/podman_cluster.py`) runs every Job's pod as a podman container.

The chart itself is not rendered (no `helm` here): the values it would turn into the instance
ConfigMap and pod env are read from helm/dagster-values.yaml, with the service addresses swapped
for the loopback ones (what a user sets per cluster).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import kubernetes
import pytest
import yaml
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from mlflow import MlflowClient

from intelligence_assets.config.code_revision import code_revision
from intelligence_assets.config.deployment import S3_SECRET_NAME
from intelligence_assets.config.universe import REPOSITORY_ROOT, UNIVERSE_PATH_VARIABLE, load_universe
from intelligence_assets.definitions import MARKET_DATA_JOB, TRAINING_JOB, build_assets
from intelligence_assets.defs.assets.market_data import BARS, FEATURES
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.target_analysis import FEATURE_SETS, LABELS, TARGET_RANKINGS
from intelligence_assets.defs.partitions import SYMBOL_DIMENSION, cell_key
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.keys import CLAIM_FILE, MANIFEST_FILE, artifact_prefix, manifest_key, pointer_key
from intelligence_assets.tracking import names
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.chart import dagster_values, run_pod_environment
from intelligence_assets_tests.support.mlflow_server import MlflowServer
from intelligence_assets_tests.support.pipeline import local_resources
from intelligence_assets_tests.support.podman_cluster import PODMAN_RUN_OPTIONS, PodmanCluster, podman_cluster
from intelligence_assets_tests.support.postgres import PostgresDatabase
from intelligence_assets_tests.support.services import LOOPBACK, S3Endpoint, free_port, unique_bucket_name

IMAGE = os.environ.get("INTELLIGENCE_IMAGE")
pytestmark = pytest.mark.skipif(
    not IMAGE, reason="needs the built image: `make image-test` builds it and runs these (INTELLIGENCE_IMAGE)"
)

VALUES = dagster_values()
NAMESPACE = "intelligence"
INSTANCE_CONFIG_MAP = "dagster-instance"
UNIVERSE_CONFIG_MAP = "intelligence-universe"
UNIVERSE_MOUNT = "/etc/intelligence/universe.yaml"
DAGSTER_HOME_IN_PODS = "/opt/dagster/dagster_home"
SYMBOL = "SIGNAL"
TARGET = "y_up_1b"
# The cell whose torch step is killed mid-run: a target of its own, so nothing of it is stored yet.
KILLED_TARGET = "y_volatility_5b"
FAMILIES = {"linear": {"params": {}}, "torch_mlp": {"params": {"max_epochs": 4, "hidden_sizes": [16]}}}
RUN_TIMEOUT_SECONDS = 420


def user_deployment() -> dict:
    return VALUES["dagster-user-deployments"]["deployments"][0]


def loopback_settings(s3: S3Endpoint, bucket: str, mlflow: MlflowServer) -> dict[str, str]:
    """The values a user sets per cluster: where S3 and MLflow are, which bucket."""
    return {
        "INTELLIGENCE_S3_ENDPOINT": s3.endpoint,
        "INTELLIGENCE_S3_BUCKET": bucket,
        "INTELLIGENCE_MLFLOW_TRACKING_URI": mlflow.url,
        UNIVERSE_PATH_VARIABLE: UNIVERSE_MOUNT,
    }


def launcher_environment(settings: dict[str, str]) -> list[str]:
    """The chart's runLauncher envVars ("NAME=value") with the per-cluster settings applied."""
    return [f"{name}={value}" for name, value in {**run_pod_environment(VALUES), **settings}.items()]


def instance_config(postgres: PostgresDatabase, settings: dict[str, str], kubeconfig: Path | None) -> dict:
    """What the chart's instance ConfigMap holds for our values: PostgreSQL storage (password
    from the chart's secret, as DAGSTER_PG_PASSWORD) and K8sRunLauncher with the runLauncher
    config. `kubeconfig`: for the host; pods use in-cluster config."""
    launcher = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    postgresql = VALUES["postgresql"]
    connection = {"kubeconfig_file": str(kubeconfig), "load_incluster_config": False} if kubeconfig else {}
    return {
        "run_launcher": {
            "module": "dagster_k8s",
            "class": "K8sRunLauncher",
            "config": {
                **connection,
                "job_namespace": NAMESPACE,
                "service_account_name": "dagster",
                "instance_config_map": INSTANCE_CONFIG_MAP,
                "postgres_password_secret": VALUES["global"]["postgresqlSecretName"],
                "dagster_home": DAGSTER_HOME_IN_PODS,
                "image_pull_policy": launcher["imagePullPolicy"],
                "env_vars": launcher_environment(settings),
                "env_secrets": [secret["name"] for secret in launcher["envSecrets"]],
                "resources": launcher["resources"],
                # The universe, as a user supplies theirs: a ConfigMap mounted into every pod.
                "volume_mounts": [{"name": "universe", "mount_path": UNIVERSE_MOUNT, "sub_path": "universe.yaml"}],
                "volumes": [{"name": "universe", "config_map": {"name": UNIVERSE_CONFIG_MAP}}],
            },
        },
        "storage": {
            "postgres": {
                "postgres_db": {
                    "username": postgres.user,
                    "password": {"env": "DAGSTER_PG_PASSWORD"},
                    "hostname": postgres.host,
                    "db_name": postgres.db_name,
                    "port": postgres.port,
                    "scheme": postgresql["postgresqlScheme"],
                }
            }
        },
        # The chart's daemon dequeues runs (QueuedRunCoordinator); here `dagster job launch` hands
        # each run straight to the run launcher, which is what the daemon would call.
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "DefaultRunCoordinator"},
        "telemetry": {"enabled": False},
    }


def podman(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *arguments], capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_database: PostgresDatabase,
    s3_endpoint: S3Endpoint,
    mlflow_server: MlflowServer,
) -> Iterator[dict]:
    directory = tmp_path_factory.mktemp("image")
    universe_path = write_small_universe(
        directory,
        families=FAMILIES,
        symbols=[SYMBOL],
        targets=[
            {"name": TARGET, "kind": "direction", "horizon": 1},
            {"name": KILLED_TARGET, "kind": "forward_volatility", "horizon": 5},
        ],
    )
    universe = load_universe(universe_path)
    bucket = unique_bucket_name("image")
    client = s3_endpoint.client()
    client.make_bucket(bucket)
    bars_prefix = dict(item.split("=", 1) for item in launcher_environment({}))["INTELLIGENCE_BARS_PREFIX"]
    client.fput_object(bucket, f"{bars_prefix}/{SYMBOL}.parquet", str(universe.bars_directory / f"{SYMBOL}.parquet"))
    settings = loopback_settings(s3_endpoint, bucket, mlflow_server)

    with podman_cluster() as cluster, pytest.MonkeyPatch.context() as patch:
        # For the host's instance in this process, as `environment` below is for its commands.
        patch.setenv("DAGSTER_PG_PASSWORD", postgres_database.password)
        home = directory / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text(
            yaml.safe_dump(instance_config(postgres_database, settings, cluster.kubeconfig(NAMESPACE)))
        )
        cluster.config_maps[INSTANCE_CONFIG_MAP] = {
            "dagster.yaml": yaml.safe_dump(instance_config(postgres_database, settings, None))
        }
        cluster.config_maps[UNIVERSE_CONFIG_MAP] = {"universe.yaml": universe_path.read_text()}
        cluster.secrets[VALUES["global"]["postgresqlSecretName"]] = {"postgresql-password": postgres_database.password}
        cluster.secrets[S3_SECRET_NAME] = {
            "INTELLIGENCE_S3_ACCESS_KEY": s3_endpoint.access_key,
            "INTELLIGENCE_S3_SECRET_KEY": s3_endpoint.secret_key,
        }
        code_server, port = start_code_server(cluster, settings, universe_path)
        try:
            workspace = directory / "workspace.yaml"
            workspace.write_text(
                yaml.safe_dump(
                    {"load_from": [{"grpc_server": {"host": LOOPBACK, "port": port, "location_name": "intelligence"}}]}
                )
            )
            environment = {
                **os.environ,
                "DAGSTER_HOME": str(home),
                "DAGSTER_PG_PASSWORD": postgres_database.password,
            }
            yield {
                "cluster": cluster,
                "universe": universe,
                "environment": environment,
                "workspace": workspace,
                "store": s3_endpoint.store(bucket=bucket),
                "mlflow": MlflowClient(mlflow_server.url),
                "directory": directory,
            }
        finally:
            podman("rm", "--force", code_server, check=False)


def start_code_server(cluster: PodmanCluster, settings: dict[str, str], universe_path: Path) -> tuple[str, int]:
    """The user deployment's container as the chart starts it: `dagster api grpc -h 0.0.0.0 -p
    <port>` plus `dagsterApiGrpcArgs`, the deployment's env and envSecrets, DAGSTER_CURRENT_IMAGE."""
    values = user_deployment()
    port = free_port()
    name = f"code-server-{port}"
    environment = {variable["name"]: variable["value"] for variable in values["env"]}
    for secret in values["envSecrets"]:
        environment.update(cluster.secrets[secret["name"]])
    environment.update(settings)
    environment["DAGSTER_CURRENT_IMAGE"] = IMAGE
    command = ["run", "--detach", "--name", name, "--network", "host", *PODMAN_RUN_OPTIONS]
    for variable, value in environment.items():
        command += ["--env", f"{variable}={value}"]
    command += ["--volume", f"{universe_path}:{UNIVERSE_MOUNT}:ro"]
    command += [IMAGE, "dagster", "api", "grpc", "-h", "0.0.0.0", "-p", str(port), *values["dagsterApiGrpcArgs"]]
    podman(*command)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ping = subprocess.run(
            [sys.executable, "-m", "dagster", "api", "grpc-health-check", "--port", str(port), "--host", LOOPBACK],
            capture_output=True,
        )
        if ping.returncode == 0:
            return name, port
        if podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip() != "true":
            break
        time.sleep(1)
    logs = podman("logs", name, check=False)
    raise AssertionError(f"the code server did not serve on {port}:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")


def launch(deployment: dict, job: str, partition: str) -> str:
    """`dagster job launch` from the host against the code server: the instance's K8sRunLauncher
    submits the run pod's Job. Returns the run id."""
    run_id = str(uuid.uuid4())
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "job",
            "launch",
            "-w",
            str(deployment["workspace"]),
            "-j",
            job,
            "--run-id",
            run_id,
            "--tags",
            json.dumps({"dagster/partition": partition}),
        ],
        env=deployment["environment"],
        check=True,
        capture_output=True,
        text=True,
    )
    return run_id


def run_status(deployment: dict, run_id: str) -> str:
    with host_instance(deployment) as instance:
        return instance.get_run_by_id(run_id).status.value


def host_instance(deployment: dict) -> dg.DagsterInstance:
    """The instance on the host, from its DAGSTER_HOME (PostgreSQL; K8sRunLauncher)."""
    return dg.DagsterInstance.from_config(deployment["environment"]["DAGSTER_HOME"])


def run_events(deployment: dict, run_id: str) -> str:
    """The run's event log as the UI shows it: what failed, and why."""
    lines = []
    with host_instance(deployment) as instance:
        for entry in instance.all_logs(run_id):
            error = entry.error_info or getattr(
                entry.dagster_event and entry.dagster_event.event_specific_data, "error", None
            )
            lines.append(
                f"{entry.dagster_event_type} {entry.step_key} {entry.message} {error.to_string() if error else ''}"
            )
    return "\n".join(lines)[-6000:]


def wait_for_run(deployment: dict, run_id: str) -> str:
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        status = run_status(deployment, run_id)
        if status in {"SUCCESS", "FAILURE", "CANCELED"}:
            return status
        time.sleep(3)
    raise AssertionError(f"run {run_id} still {status} after {RUN_TIMEOUT_SECONDS}s; pods: {pod_report(deployment)}")


def pod_report(deployment: dict) -> str:
    cluster: PodmanCluster = deployment["cluster"]
    with cluster.lock:
        pods = list(cluster.pods.values())
    return "\n\n".join(
        f"--- {pod.name} ({cluster.container_state(pod)[0]})\n{cluster.logs(pod)[-2500:]}" for pod in pods
    )


def register_symbol(deployment: dict) -> None:
    code = f"import dagster as dg; dg.DagsterInstance.get().add_dynamic_partitions({SYMBOL_DIMENSION!r}, [{SYMBOL!r}])"
    subprocess.run([sys.executable, "-c", code], env=deployment["environment"], check=True)


def pointers(store, keys_and_partitions) -> dict[str, str]:
    found = {}
    for asset, symbol, target in keys_and_partitions:
        prefix = artifact_prefix(asset, symbol, target)
        found[prefix] = json.loads(store.get_bytes(pointer_key(prefix)))["fingerprint"]
    return found


CELL_ASSETS = [
    (BARS, SYMBOL, None),
    (FEATURES, SYMBOL, None),
    (LABELS, SYMBOL, TARGET),
    (TARGET_RANKINGS, SYMBOL, TARGET),
    (FEATURE_SETS, SYMBOL, TARGET),
    *((model_key(family), SYMBOL, TARGET) for family in FAMILIES),
]


def test_the_image_holds_the_commit_of_this_checkout() -> None:
    """`make image` bakes the checkout's commit in even when every other layer comes from the
    build cache (a new commit that changed no code): podman once kept the previous commit."""
    environment = json.loads(podman("image", "inspect", "--format", "{{json .Config.Env}}", IMAGE).stdout)
    baked = dict(entry.split("=", 1) for entry in environment)
    assert baked.get("INTELLIGENCE_GIT_COMMIT") == code_revision().commit, baked


def test_the_code_server_serves_the_definitions_to_the_hosts_instance(deployment: dict) -> None:
    with (
        host_instance(deployment) as instance,
        WorkspaceProcessContext(instance, WorkspaceFileTarget([str(deployment["workspace"])])) as process,
    ):
        location = process.create_request_context().get_code_location("intelligence")
        (repository,) = location.get_repositories().values()
        jobs = {job.name for job in repository.get_all_jobs()}
        assert {MARKET_DATA_JOB, TRAINING_JOB} <= jobs
        # What run pods are started from: the image the code server says it runs in.
        assert location.container_image == IMAGE


def test_run_and_step_pods_materialize_a_cpu_and_a_torch_cell_as_a_local_run_does(deployment: dict) -> None:
    register_symbol(deployment)
    market = launch(deployment, MARKET_DATA_JOB, SYMBOL)
    assert wait_for_run(deployment, market) == "SUCCESS", run_events(deployment, market) + pod_report(deployment)
    training = launch(deployment, TRAINING_JOB, cell_key(SYMBOL, TARGET))
    assert wait_for_run(deployment, training) == "SUCCESS", run_events(deployment, training) + pod_report(deployment)

    cluster: PodmanCluster = deployment["cluster"]
    assert not cluster.unknown_requests, cluster.unknown_requests
    step_jobs = [name for (_, name) in cluster.jobs if name.startswith("dagster-step-")]
    run_jobs = [name for (_, name) in cluster.jobs if name.startswith("dagster-run-")]
    assert len(run_jobs) == 2
    assert len(step_jobs) == 2 + 3 + len(FAMILIES), sorted(step_jobs)

    # Same keys and fingerprints as a run of the same code and universe on this host.
    in_pods = pointers(deployment["store"], CELL_ASSETS)
    local = local_run(deployment)
    assert in_pods == local

    client: MlflowClient = deployment["mlflow"]
    name = names.registered_model_name(SYMBOL, TARGET)
    versions = client.search_model_versions(f"name='{name}'")
    assert sorted(version.tags[names.FAMILY_TAG] for version in versions) == sorted(FAMILIES)

    # The instance on PostgreSQL recorded each materialization, with the fingerprint the store holds.
    recorded = {}
    with host_instance(deployment) as instance:
        for run_id in (market, training):
            for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
                materialization = entry.asset_materialization
                symbol_and_target = str(materialization.partition).split("|")
                prefix = artifact_prefix(materialization.asset_key, *symbol_and_target)
                recorded[prefix] = materialization.metadata["fingerprint"].value
    assert recorded == in_pods

    # Which code: the commit `make image` baked into the image (it has no .git), this checkout's.
    store = deployment["store"]
    for prefix, fingerprint in in_pods.items():
        provenance = json.loads(store.get_bytes(manifest_key(prefix, fingerprint)))["provenance"]
        assert provenance["code_commit"] == code_revision().commit, prefix


def local_run(deployment: dict) -> dict[str, str]:
    """The pointers a run on this host writes for the same universe (the embedded default)."""
    universe = deployment["universe"]
    root = deployment["directory"] / "local"
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SYMBOL_DIMENSION, [SYMBOL])
        assets = build_assets(universe)
        resources = local_resources(root, universe)
        assert dg.materialize(
            assets, selection=[BARS, FEATURES], partition_key=SYMBOL, instance=instance, resources=resources
        ).success
        cell = dg.MultiPartitionKey({"symbol": SYMBOL, "target": TARGET})
        training = [LABELS, TARGET_RANKINGS, FEATURE_SETS, *(model_key(family) for family in FAMILIES)]
        assert dg.materialize(
            assets, selection=training, partition_key=cell, instance=instance, resources=resources
        ).success
    return pointers(LocalArtifactStore(root), CELL_ASSETS)


def test_a_step_pod_killed_after_its_commit_is_retried_from_the_store(deployment: dict) -> None:
    """SIGKILL the torch step's container between its artifact's commit and the end of its MLflow
    record (the pointer is published last): k8s_job_executor sees the Job fail, the step's retry
    policy starts a new pod, and that pod reuses the stored artifact (a cache hit: nothing trained
    again) and leaves one MLflow run and one version."""
    register_symbol(deployment)
    if run_status_of_partition(deployment, SYMBOL) != "SUCCESS":
        assert wait_for_run(deployment, launch(deployment, MARKET_DATA_JOB, SYMBOL)) == "SUCCESS"
    store, cluster = deployment["store"], deployment["cluster"]
    torch = artifact_prefix(model_key("torch_mlp"), SYMBOL, KILLED_TARGET)
    run = launch(deployment, TRAINING_JOB, cell_key(SYMBOL, KILLED_TARGET))

    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    committed: list[str] = []
    while not committed:
        assert time.monotonic() < deadline, run_events(deployment, run) + pod_report(deployment)
        committed = [key for key in store.list_keys(torch) if key.endswith(f"/{MANIFEST_FILE}")]
        time.sleep(0.05)
    (killed,) = torch_pods(cluster, run)
    cluster.kill_pod(killed)
    assert not store.exists(pointer_key(torch)), "the step published its pointer before it could be killed"
    # The artifact's files and manifest (the killed writer's claim is released by the next one).
    stored_at_kill = {key: store.get_bytes(key) for key in store.list_keys(torch) if not key.endswith(f"/{CLAIM_FILE}")}

    assert wait_for_run(deployment, run) == "SUCCESS", run_events(deployment, run) + pod_report(deployment)
    assert len(torch_pods(cluster, run)) == 2  # the killed pod and its retry

    # Nothing trained again: the artifact committed before the kill is the one now served.
    assert {key: store.get_bytes(key) for key in stored_at_kill} == stored_at_kill
    (manifest,) = committed
    fingerprint = manifest.removeprefix(f"{torch}/").split("/")[0]
    assert json.loads(store.get_bytes(pointer_key(torch)))["fingerprint"] == fingerprint
    with host_instance(deployment) as instance:
        (materialization,) = [
            entry.asset_materialization
            for entry in instance.all_logs(run, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
            if entry.asset_materialization.asset_key == model_key("torch_mlp")
        ]
    assert materialization.metadata["cache"].value == "hit"
    client: MlflowClient = deployment["mlflow"]
    versions = client.search_model_versions(f"name='{names.registered_model_name(SYMBOL, KILLED_TARGET)}'")
    assert sorted(version.tags[names.FAMILY_TAG] for version in versions) == sorted(FAMILIES)
    torch_runs = client.search_runs(
        [experiment.experiment_id for experiment in client.search_experiments()],
        filter_string=f"tags.{names.FINGERPRINT_TAG} = '{fingerprint}'",
    )
    assert [tracked.info.status for tracked in torch_runs] == ["FINISHED"]


def torch_pods(cluster: PodmanCluster, run_id: str) -> list:
    with cluster.lock:
        return [
            pod
            for pod in cluster.pods.values()
            if pod.labels.get("dagster/op") == "models__torch_mlp" and pod.labels.get("dagster/run-id") == run_id
        ]


def run_status_of_partition(deployment: dict, partition: str) -> str | None:
    with host_instance(deployment) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": partition}), limit=1)
    return runs[0].status.value if runs else None


def test_the_exporter_of_helm_metrics_yaml_serves_the_instance_to_prometheus(deployment: dict) -> None:
    """The exporter's pod as helm/metrics.yaml describes it (command, env from the PostgreSQL
    secret, the instance ConfigMap), run from the image: its /metrics page counts this instance's runs."""
    register_symbol(deployment)
    if run_status_of_partition(deployment, SYMBOL) != "SUCCESS":
        assert wait_for_run(deployment, launch(deployment, MARKET_DATA_JOB, SYMBOL)) == "SUCCESS"
    manifest = next(
        document
        for document in yaml.safe_load_all((REPOSITORY_ROOT / "helm" / "metrics.yaml").read_text())
        if document and document["kind"] == "Deployment"
    )
    template = manifest["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    port = int(template["metadata"]["annotations"]["prometheus.io/port"])
    cluster: PodmanCluster = deployment["cluster"]
    cluster.images[container["image"]] = IMAGE  # the release tag names the image built here
    # The stand-in runs Jobs; the Deployment's pod template is the pod.
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "intelligence-metrics"},
        "spec": {"template": template},
    }
    with kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig(NAMESPACE))) as client:
        kubernetes.client.BatchV1Api(client).create_namespaced_job(NAMESPACE, job)

    deadline = time.monotonic() + 120
    page = ""
    while 'dagster_job="market_data_job",status="SUCCESS"' not in page:
        assert time.monotonic() < deadline, pod_report(deployment)
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as response:
                page = response.read().decode()
        except OSError:
            time.sleep(1)
    successes = [
        float(line.rsplit(" ", 1)[1])
        for line in page.splitlines()
        if line.startswith('intelligence_runs{dagster_job="market_data_job",status="SUCCESS"}')
    ]
    assert successes and successes[0] >= 1
    assert "intelligence_step_duration_seconds_count" in page
