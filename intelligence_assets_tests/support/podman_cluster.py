"""A one-node Kubernetes stand-in on loopback: the API calls dagster-k8s makes, each Job run as a
podman container.

dagster-k8s's K8sRunLauncher and k8s_job_executor build their Jobs with their own code and submit
them through the Kubernetes Python client; this server answers those calls (create, read and
delete Jobs; list, read, log and delete their pods; an empty event list) and runs each Job's pod
the way a kubelet would: the container's image, command, args, env (values, Secret and
ConfigMap references, the downward API's pod name and namespace), `envFrom`, ConfigMap and Secret
volumes (with `subPath`), CPU and memory limits, and a service-account mount with a token and the
CA of this server, so code inside a pod reaches "the cluster" through in-cluster config as it
would on Kubernetes. Pods use the host's network: the services they need listen on loopback.

What it does not do: scheduling (one node, no node selectors or tolerations), GPUs (a pod asking
for `nvidia.com/gpu` runs without one, and an image named in `images` stands in for another),
restarts, and every API not listed above (answered 404 and recorded in `unknown_requests`).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK = "127.0.0.1"
SERVICE_ACCOUNT_DIRECTORY = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN = "podman-cluster-token"
# Limits podman may not raise in unprivileged sandboxes; crun cannot manage cgroup v1 hosts.
PODMAN_RUN_OPTIONS = ["--runtime", "runc", "--ulimit", "nofile=10000:10000", "--ulimit", "nproc=10000:10000"]
MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def memory_bytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(quantity))
    if not match or (match.group(2) and match.group(2) not in MEMORY_UNITS):
        raise ValueError(f"unsupported memory quantity {quantity!r}")
    return int(float(match.group(1)) * MEMORY_UNITS.get(match.group(2), 1))


def cpu_cores(quantity: str) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A CA-signed-by-itself certificate for 127.0.0.1 (the client checks the IP SAN)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "podman-cluster")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certificate_path, key_path = directory / "ca.crt", directory / "server.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return certificate_path, key_path


@dataclass
class Pod:
    name: str
    namespace: str
    job: str
    uid: str
    spec: dict
    labels: dict
    started: str
    error: str | None = None  # why the pod could not start (an image not present, a missing Secret)


@dataclass
class PodmanCluster:
    """The cluster's state: Secrets and ConfigMaps seeded by the test, Jobs and pods as submitted."""

    directory: Path
    images: dict[str, str] = field(default_factory=dict)  # image a Job names -> local image run instead
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    jobs: dict[tuple[str, str], dict] = field(default_factory=dict)
    pods: dict[tuple[str, str], Pod] = field(default_factory=dict)
    unknown_requests: list[str] = field(default_factory=list)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    @property
    def ca_certificate(self) -> Path:
        return self.directory / "ca.crt"

    def kubeconfig(self, namespace: str) -> Path:
        """A kubeconfig for clients outside the pods (the host's run launcher, kubectl); pods see it
        at the same path."""
        path = self.directory / "kubeconfig.json"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "podman",
                    "clusters": [
                        {
                            "name": "podman",
                            "cluster": {"server": self.server, "certificate-authority": str(self.ca_certificate)},
                        }
                    ],
                    "contexts": [
                        {"name": "podman", "context": {"cluster": "podman", "user": "test", "namespace": namespace}}
                    ],
                    "users": [{"name": "test", "user": {"token": TOKEN}}],
                }
            )
        )
        return path

    # --- pods -------------------------------------------------------------------------------

    def container_state(self, pod: Pod) -> tuple[str, int | None]:
        """('Pending' | 'Running' | 'Succeeded' | 'Failed', exit code)."""
        if pod.error:
            return "Failed", None
        inspected = subprocess.run(
            ["podman", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", pod.name],
            capture_output=True,
            text=True,
        )
        if inspected.returncode != 0:
            return "Failed", None
        status, code = inspected.stdout.split()
        if status in {"created", "configured", "initialized"}:
            return "Pending", None
        if status == "running":
            return "Running", None
        return ("Succeeded" if int(code) == 0 else "Failed"), int(code)

    def pod_json(self, pod: Pod) -> dict:
        phase, code = self.container_state(pod)
        container = pod.spec["containers"][0]
        state: dict[str, Any]
        if phase == "Running":
            state = {"running": {"startedAt": pod.started}}
        elif phase in {"Succeeded", "Failed"}:
            reason = pod.error or ("Completed" if phase == "Succeeded" else "Error")
            state = {"terminated": {"exitCode": code if code is not None else 1, "reason": reason}}
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid, "labels": pod.labels},
            "spec": pod.spec,
            "status": {
                "phase": phase,
                "startTime": pod.started,
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container["image"],
                        "imageID": container["image"],
                        "ready": phase == "Running",
                        "restartCount": 0,
                        "state": state,
                    }
                ],
            },
        }

    def job_json(self, namespace: str, name: str) -> dict | None:
        job = self.jobs.get((namespace, name))
        if job is None:
            return None
        phases = [self.container_state(pod)[0] for pod in self.pods.values() if pod.job == name]
        status: dict[str, Any] = {"startTime": job["metadata"]["creationTimestamp"]}
        for phase, counter in (("Running", "active"), ("Pending", "active"), ("Succeeded", "succeeded")):
            if phase in phases:
                status[counter] = status.get(counter, 0) + phases.count(phase)
        if "Failed" in phases:
            status["failed"] = phases.count("Failed")
        if "succeeded" in status:
            status["completionTime"] = _now()
        return {**job, "status": status}

    def _value_from(self, source: dict, pod: Pod) -> str | None:
        if "secretKeyRef" in source:
            reference = source["secretKeyRef"]
            return self._lookup(self.secrets, "Secret", reference["name"], reference["key"], reference.get("optional"))
        if "configMapKeyRef" in source:
            reference = source["configMapKeyRef"]
            return self._lookup(
                self.config_maps, "ConfigMap", reference["name"], reference["key"], reference.get("optional")
            )
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            fields = {"metadata.name": pod.name, "metadata.namespace": pod.namespace, "metadata.uid": pod.uid}
            fields.update({"status.podIP": LOOPBACK, "spec.nodeName": "podman"})
            return fields[path]
        raise ValueError(f"unsupported env valueFrom {source}")

    @staticmethod
    def _lookup(store: dict, kind: str, name: str, key: str, optional: bool | None) -> str | None:
        if name not in store or key not in store[name]:
            if optional:
                return None
            raise LookupError(f"{kind} {name} has no key {key}")
        return store[name][key]

    def podman_command(self, pod: Pod) -> list[str]:
        spec = pod.spec
        if len(spec["containers"]) != 1 or spec.get("initContainers"):
            raise ValueError("one container per pod, no init containers")
        container = spec["containers"][0]
        image = self.images.get(container["image"], container["image"])
        command = ["podman", "run", "--detach", "--name", pod.name, "--hostname", pod.name, "--network", "host"]
        command += PODMAN_RUN_OPTIONS
        command += ["--label", f"podman-cluster-job={pod.job}"]
        environment: dict[str, str] = {
            "KUBERNETES_SERVICE_HOST": LOOPBACK,
            "KUBERNETES_SERVICE_PORT": str(self.port),
        }
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                store, kind, reference = self.config_maps, "ConfigMap", source["configMapRef"]
            else:
                store, kind, reference = self.secrets, "Secret", source["secretRef"]
            if reference["name"] not in store:
                if reference.get("optional"):
                    continue
                raise LookupError(f"{kind} {reference['name']} not found")
            environment.update(store[reference["name"]])
        for variable in container.get("env") or []:
            value = (
                variable.get("value") if "valueFrom" not in variable else self._value_from(variable["valueFrom"], pod)
            )
            if value is not None:
                environment[variable["name"]] = value
        for name, value in environment.items():
            command += ["--env", f"{name}={value}"]

        pod_directory = Path(tempfile.mkdtemp(prefix=f"{pod.name}-", dir=self.directory))
        pod_directory.chmod(0o755)  # the image runs as a non-root user
        service_account = pod_directory / "serviceaccount"
        service_account.mkdir()
        (service_account / "token").write_text(TOKEN)
        (service_account / "namespace").write_text(pod.namespace)
        shutil.copy(self.ca_certificate, service_account / "ca.crt")
        command += ["--volume", f"{service_account}:{SERVICE_ACCOUNT_DIRECTORY}:ro"]
        # A launcher outside the cluster (the host's instance) hands its instance config, kubeconfig
        # path included, to the run pod; the pod finds that file at the same path.
        command += ["--volume", f"{self.directory}:{self.directory}:ro"]
        volumes = {volume["name"]: volume for volume in spec.get("volumes") or []}
        for mount in container.get("volumeMounts") or []:
            source = self._volume_directory(volumes[mount["name"]], pod_directory)
            if mount.get("subPath"):
                source = source / mount["subPath"]
            command += ["--volume", f"{source}:{mount['mountPath']}:{'ro' if mount.get('readOnly') else 'rw'}"]

        limits = (container.get("resources") or {}).get("limits") or {}
        if "cpu" in limits:
            command += ["--cpus", str(cpu_cores(limits["cpu"]))]
        if "memory" in limits:
            command += ["--memory", str(memory_bytes(limits["memory"]))]
        if container.get("workingDir"):
            command += ["--workdir", container["workingDir"]]
        if container.get("command"):
            command += ["--entrypoint", json.dumps(container["command"])]
        return [*command, image, *(container.get("args") or [])]

    def _volume_directory(self, volume: dict, pod_directory: Path) -> Path:
        directory = pod_directory / "volumes" / volume["name"]
        directory.mkdir(parents=True)
        if "configMap" in volume or "secret" in volume:
            kind, store, reference = (
                ("ConfigMap", self.config_maps, volume["configMap"])
                if "configMap" in volume
                else ("Secret", self.secrets, {**volume["secret"], "name": volume["secret"]["secretName"]})
            )
            if reference["name"] not in store:
                raise LookupError(f"{kind} {reference['name']} not found")
            data = store[reference["name"]]
            items = reference.get("items") or [{"key": key, "path": key} for key in data]
            for item in items:
                target = directory / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(data[item["key"]])
                target.chmod(0o644)
            directory.chmod(0o755)
        elif "emptyDir" in volume:
            directory.chmod(0o777)
        else:
            raise ValueError(f"unsupported volume {volume}")
        return directory

    def start_pod(self, namespace: str, job: dict) -> None:
        name = job["metadata"]["name"]
        template = job["spec"]["template"]
        labels = {
            **(template.get("metadata") or {}).get("labels", {}),
            "job-name": name,
            "controller-uid": job["metadata"]["uid"],
        }
        pod = Pod(
            name=f"{name}-{uuid.uuid4().hex[:5]}",
            namespace=namespace,
            job=name,
            uid=str(uuid.uuid4()),
            spec=template["spec"],
            labels=labels,
            started=_now(),
        )
        self.pods[(namespace, pod.name)] = pod
        try:
            command = self.podman_command(pod)
        except (LookupError, ValueError) as error:
            pod.error = f"CreateContainerConfigError: {error}"
            return
        started = subprocess.run(command, capture_output=True, text=True)
        if started.returncode != 0:
            pod.error = f"podman run failed: {started.stderr.strip()[-500:]}"

    def delete_pod(self, pod: Pod) -> None:
        subprocess.run(["podman", "rm", "--force", "--time", "5", pod.name], capture_output=True)
        self.pods.pop((pod.namespace, pod.name), None)

    def logs(self, pod: Pod) -> str:
        if pod.error:
            return pod.error
        result = subprocess.run(["podman", "logs", pod.name], capture_output=True, text=True)
        return result.stdout + result.stderr

    def pods_of_job(self, job: str) -> list[Pod]:
        return [pod for pod in self.pods.values() if pod.job == job]

    def kill_pod(self, pod: Pod) -> None:
        """SIGKILL the pod's container, as a node failure or the OOM killer would."""
        subprocess.run(["podman", "kill", "--signal", "KILL", pod.name], capture_output=True, check=True)

    def shutdown_pods(self) -> None:
        for pod in list(self.pods.values()):
            self.delete_pod(pod)


def _selector_matches(selector: str | None, labels: dict) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    cluster: PodmanCluster

    def log_message(self, format: str, *args: object) -> None:
        return

    def _reply(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self, what: str) -> None:
        self._reply(
            404,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": "NotFound",
                "code": 404,
                "message": what,
            },
        )

    def _route(self, method: str) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._reply(401, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 401})
            return
        url = urlparse(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        cluster = self.cluster
        with cluster.lock:
            # /apis/batch/v1/namespaces/{ns}/jobs[/{name}[/status]]
            if (
                parts[:3] == ["apis", "batch", "v1"]
                and len(parts) >= 5
                and parts[3] == "namespaces"
                and parts[5:6] == ["jobs"]
            ):
                namespace = parts[4]
                if len(parts) == 6 and method == "POST":
                    job = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    job["metadata"].update(
                        {"namespace": namespace, "uid": str(uuid.uuid4()), "creationTimestamp": _now()}
                    )
                    cluster.jobs[(namespace, job["metadata"]["name"])] = job
                    cluster.start_pod(namespace, job)
                    self._reply(201, job)
                    return
                if len(parts) == 6 and method == "GET":
                    items = [
                        cluster.job_json(ns, name)
                        for (ns, name), job in cluster.jobs.items()
                        if ns == namespace
                        and _selector_matches(query.get("labelSelector"), job["metadata"].get("labels") or {})
                    ]
                    self._reply(200, {"kind": "JobList", "apiVersion": "batch/v1", "metadata": {}, "items": items})
                    return
                name = parts[6]
                job = cluster.job_json(namespace, name)
                if job is None:
                    self._not_found(f'jobs.batch "{name}" not found')
                    return
                if method == "GET":
                    self._reply(200, job)
                    return
                if method == "DELETE":
                    for pod in cluster.pods_of_job(name):
                        cluster.delete_pod(pod)
                    cluster.jobs.pop((namespace, name))
                    self._reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
                    return
            # /api/v1/namespaces/{ns}/pods[/{name}[/log]], /api/v1/namespaces/{ns}/events
            if parts[:2] == ["api", "v1"] and len(parts) >= 5 and parts[2] == "namespaces":
                namespace, kind = parts[3], parts[4]
                if kind == "events" and method == "GET":
                    self._reply(200, {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []})
                    return
                if kind == "pods" and len(parts) == 5 and method == "GET":
                    items = [
                        cluster.pod_json(pod)
                        for pod in cluster.pods.values()
                        if pod.namespace == namespace and _selector_matches(query.get("labelSelector"), pod.labels)
                    ]
                    self._reply(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
                    return
                if kind == "pods" and len(parts) >= 6:
                    pod = cluster.pods.get((namespace, parts[5]))
                    if pod is None:
                        self._not_found(f'pods "{parts[5]}" not found')
                        return
                    if len(parts) == 7 and parts[6] == "log" and method == "GET":
                        self._reply(200, cluster.logs(pod), "text/plain")
                        return
                    if len(parts) == 6 and method == "GET":
                        self._reply(200, cluster.pod_json(pod))
                        return
                    if len(parts) == 6 and method == "DELETE":
                        cluster.delete_pod(pod)
                        self._reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
                        return
            cluster.unknown_requests.append(f"{method} {self.path}")
        self._not_found(f"{method} {url.path} is not served by this stand-in")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")


@contextmanager
def podman_cluster(images: dict[str, str] | None = None) -> Iterator[PodmanCluster]:
    """Serve the stand-in on a free loopback port (HTTPS) until the block ends; then remove every
    pod it started."""
    directory = Path(tempfile.mkdtemp(prefix="podman-cluster-"))
    directory.chmod(0o755)
    certificate, key = _self_signed_certificate(directory)
    cluster = PodmanCluster(directory=directory, images=dict(images or {}))
    handler = type("Handler", (_Handler,), {"cluster": cluster})
    server = ThreadingHTTPServer((LOOPBACK, 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    cluster.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield cluster
    finally:
        server.shutdown()
        server.server_close()
        cluster.shutdown_pods()
        shutil.rmtree(directory, ignore_errors=True)
