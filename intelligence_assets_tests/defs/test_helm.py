"""What we ship for Kubernetes, checked without a cluster: every manifest validates client-side
against the Kubernetes schema (kubernetes-validate, strict: unknown fields fail), the chart values
carry no credentials and configure a `k8s` deployment our definitions load with."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml

from intelligence_assets.config.deployment import ARTIFACT_CACHE_VARIABLE, S3_SECRET_NAME, S3_VARIABLES
from intelligence_assets.config.universe import REPOSITORY_ROOT
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.store.read_cache import DEFAULT_MAX_BYTES
from intelligence_assets_tests.support.chart import run_pod_environment

HELM = REPOSITORY_ROOT / "helm"
KUBERNETES_VERSION = "1.30.0"
VALUES_FILES = ["dagster-values.yaml", "minio-values.yaml"]
MANIFEST_FILES = ["metrics.yaml", "mlflow.yaml"]


def documents(name: str) -> list[dict]:
    return [document for document in yaml.safe_load_all((HELM / name).read_text()) if document]


def test_helm_folder_holds_exactly_the_files_this_test_knows() -> None:
    shipped = sorted(path.name for path in HELM.glob("*.yaml"))
    assert shipped == sorted(VALUES_FILES + MANIFEST_FILES)


@pytest.mark.parametrize("name", MANIFEST_FILES)
def test_manifests_validate_against_the_kubernetes_schema(name: str) -> None:
    kinds = []
    for document in documents(name):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        kinds.append(document["kind"])
    assert kinds == ["Deployment", "Service"]


def test_a_malformed_manifest_is_rejected() -> None:
    # The validator itself catches what we would get wrong.
    deployment = documents("mlflow.yaml")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["port"] = 5000
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def secret_references(value: object) -> list[str]:
    """Every Kubernetes secret a values or manifest tree names."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("secretKeyRef", "secretRef") and isinstance(item, dict):
                found.append(item["name"])
            elif key in ("envSecrets",):
                found += [entry["name"] if isinstance(entry, dict) else entry for entry in item]
            elif key in ("existingSecret", "postgresqlSecretName"):
                found.append(item)
            else:
                found += secret_references(item)
    elif isinstance(value, list):
        for item in value:
            found += secret_references(item)
    return found


@pytest.mark.parametrize("name", VALUES_FILES + MANIFEST_FILES)
def test_no_credentials_are_embedded(name: str) -> None:
    text = (HELM / name).read_text()
    for credential in ("ACCESS_KEY=", "SECRET_KEY=", "password:", "PASSWORD="):
        for line in text.splitlines():
            if credential.lower() in line.lower() and not line.strip().startswith("#"):
                assert re.search(r":\s*(\"\"|''|~)?\s*$", line) or "secretKeyRef" in line, f"{name}: {line.strip()}"
    assert not re.search(r"minioadmin|changeme", text, re.IGNORECASE)
    assert secret_references(documents(name)), f"{name} takes its credentials from no secret"


def test_chart_values_configure_the_k8s_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    values = documents("dagster-values.yaml")[0]
    (code_location,) = values["dagster-user-deployments"]["deployments"]
    assert code_location["dagsterApiGrpcArgs"] == ["-m", "intelligence_assets.definitions"]
    assert {"name": S3_SECRET_NAME} in code_location["envSecrets"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert {"name": S3_SECRET_NAME} in launcher["envSecrets"]
    # Run and step pods get the code location's variables (includeConfigInLaunchedRuns is off).
    code_env = {entry["name"]: entry["value"] for entry in code_location["env"]}
    assert run_pod_environment(values) == code_env
    assert not set(code_env) & {S3_VARIABLES["access_key"], S3_VARIABLES["secret_key"]}
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"] is True

    # Those variables, plus the secret's keys, give a `k8s` deployment whose definitions load.
    for name, value in code_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(S3_VARIABLES["access_key"], "from-the-secret")
    monkeypatch.setenv(S3_VARIABLES["secret_key"], "from-the-secret")
    deployment = Deployment.from_environment()
    assert deployment.name == "k8s"
    from intelligence_assets.config.universe import load_universe
    from intelligence_assets.definitions import build_definitions

    definitions = build_definitions(load_universe(), deployment)
    assert definitions.executor.name == "k8s_step_pods"
    assert definitions.resources["mlflow_tracking"].tracking_uri == "http://intelligence-mlflow:5000"


def test_every_pod_caches_artifact_reads_on_an_empty_dir_of_its_own() -> None:
    values = documents("dagster-values.yaml")[0]
    (code_location,) = values["dagster-user-deployments"]["deployments"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    cache = run_pod_environment(values)[ARTIFACT_CACHE_VARIABLE]
    # Run pods, and the step pods k8s_job_executor starts from them, inherit the launcher's volumes.
    for pod in (launcher, code_location):
        (mount,) = [mount for mount in pod["volumeMounts"] if mount["mountPath"] == cache]
        (volume,) = [volume for volume in pod["volumes"] if volume["name"] == mount["name"]]
        # Bigger than the cache's own bound: a pod past its emptyDir limit is evicted.
        assert volume["emptyDir"]["sizeLimit"] == "2Gi" and DEFAULT_MAX_BYTES <= 2**30
