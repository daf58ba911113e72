"""The metrics exporter scraped by a real Prometheus server (Debian's `prometheus`) on loopback:
a successful and a failed run of `market_data_job`, read back through Prometheus's query API."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from intelligence_assets.config.universe import REPOSITORY_ROOT, UNIVERSE_PATH_VARIABLE, load_universe
from intelligence_assets.definitions import MARKET_DATA_JOB
from intelligence_assets.defs.partitions import SYMBOL_DIMENSION
from intelligence_assets.monitoring.exporter import step_family
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.services import LOOPBACK, free_port, stop_process, wait_until_serving

PROMETHEUS = shutil.which("prometheus")
MISSING = "MISSING"  # in the universe, without a bars file: its run fails
SCRAPE_SECONDS = 1


def test_model_steps_are_labelled_by_family() -> None:
    assert step_family("models__torch_mlp") == ("models/torch_mlp", "torch_mlp")
    assert step_family("features") == ("features", "")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A local deployment (SQLite instance, local artifact store) with one good and one broken
    symbol, its pool limits set, and a run of each symbol's market data."""
    directory = tmp_path_factory.mktemp("metrics")
    universe_path = write_small_universe(directory, families={"linear": {"params": {}}})
    universe = load_universe(universe_path)
    config = universe_path.read_text().replace("symbols:\n", f"symbols:\n- {MISSING}\n", 1)
    universe_path.write_text(config)
    dagster_home = directory / "home"
    dagster_home.mkdir()
    shutil.copy(REPOSITORY_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        UNIVERSE_PATH_VARIABLE: str(universe_path),
        "INTELLIGENCE_ARTIFACT_ROOT": str(directory / "artifacts"),
    }
    symbol = universe.symbols[0]
    code = (
        "import dagster as dg; "
        f"dg.DagsterInstance.get().add_dynamic_partitions({SYMBOL_DIMENSION!r}, [{symbol!r}, {MISSING!r}])"
    )
    subprocess.run([sys.executable, "-c", code], env=environment, check=True)
    subprocess.run([sys.executable, "-m", "intelligence_assets.cli.pools"], env=environment, check=True)
    outcomes = {}
    for partition in (symbol, MISSING):
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "dagster",
                "job",
                "execute",
                "-m",
                "intelligence_assets.definitions",
                "-j",
                MARKET_DATA_JOB,
                "--tags",
                json.dumps({"dagster/partition": partition}),
            ],
            env=environment,
            capture_output=True,
            text=True,
        )
        outcomes[partition] = run.returncode
    assert outcomes[symbol] == 0 and outcomes[MISSING] != 0, outcomes
    yield environment


@pytest.fixture(scope="module")
def prometheus(home: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The exporter (`python -m intelligence_assets.cli.metrics`) and a Prometheus server
    scraping it every second; yields Prometheus's base URL."""
    if PROMETHEUS is None:
        pytest.fail("Debian's prometheus is not installed (apt-get install prometheus; make test installs it)")
    directory = tmp_path_factory.mktemp("prometheus")
    exporter_port, prometheus_port = free_port(), free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "intelligence_assets.cli.metrics", "--host", LOOPBACK, "--port", str(exporter_port)],
        env=home,
        stdout=(directory / "exporter.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    config = directory / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": f"{SCRAPE_SECONDS}s"},
                "scrape_configs": [
                    {"job_name": "intelligence", "static_configs": [{"targets": [f"{LOOPBACK}:{exporter_port}"]}]}
                ],
            }
        )
    )
    server = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={LOOPBACK}:{prometheus_port}",
        ],
        stdout=(directory / "prometheus.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://{LOOPBACK}:{prometheus_port}"
    try:
        assert wait_until_serving(exporter, lambda: answers(f"http://{LOOPBACK}:{exporter_port}/metrics"), 120), (
            directory / "exporter.log"
        ).read_text()[-3000:]
        assert wait_until_serving(server, lambda: answers(f"{url}/-/ready"), 60), (
            directory / "prometheus.log"
        ).read_text()[-3000:]
        yield url
    finally:
        stop_process(server)
        stop_process(exporter)


def query(prometheus: str, expression: str, timeout_seconds: float = 60) -> dict[tuple, float]:
    """Prometheus's instant query; waits for the first scrapes to land. {label values: value}."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        with urllib.request.urlopen(
            f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expression})}", timeout=5
        ) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result = body["data"]["result"]
        if result or time.monotonic() > deadline:
            return {
                tuple(
                    sorted((k, v) for k, v in sample["metric"].items() if k not in {"__name__", "job", "instance"})
                ): float(sample["value"][1])
                for sample in result
            }
        time.sleep(SCRAPE_SECONDS)


def test_prometheus_reads_runs_pools_steps_and_cache_outcomes(prometheus: str) -> None:
    runs = query(prometheus, 'intelligence_runs{dagster_job="market_data_job"}')
    by_status = {dict(labels)["status"]: value for labels, value in runs.items()}
    assert by_status["SUCCESS"] == 1 and by_status["FAILURE"] == 1, by_status
    assert by_status["QUEUED"] == 0 and by_status["STARTED"] == 0

    pools = {dict(labels)["pool"]: value for labels, value in query(prometheus, "intelligence_pool_slots").items()}
    assert {"cpu", "gpu"} <= set(pools), pools
    in_use = query(prometheus, "intelligence_pool_slots_in_use")
    assert all(value == 0 for value in in_use.values())  # nothing runs now

    # The good symbol's bars and features succeeded; the broken symbol's bars step did not.
    steps = {
        dict(labels)["step"]: value
        for labels, value in query(prometheus, "intelligence_step_duration_seconds_count").items()
    }
    assert steps == {"bars": 1, "features": 1}, steps
    seconds = query(prometheus, "intelligence_step_duration_seconds_sum")
    assert all(value > 0 for value in seconds.values())

    outcomes = {
        dict(labels)["outcome"]: value for labels, value in query(prometheus, "intelligence_cache_outcomes").items()
    }
    assert outcomes == {"miss": 2}, outcomes  # a first run computes its bars and features
    assert query(prometheus, "intelligence_cache_hit_ratio") == {(): 0.0}
    assert query(prometheus, "intelligence_gpus_visible") == {(): 0.0}  # no NVIDIA driver here


def test_every_metric_the_docs_name_is_exported() -> None:
    # The README points to the list in docs/kubernetes.md ("Metrics").
    docs = (REPOSITORY_ROOT / "docs" / "kubernetes.md").read_text()
    named = set(re.findall(r"`(intelligence_[a-z_]+)`", docs))
    assert len(named) >= 7, f"docs/kubernetes.md names too few metrics: {named}"
    source = "".join(path.read_text() for path in (REPOSITORY_ROOT / "intelligence_assets" / "monitoring").glob("*.py"))
    assert {name for name in named if f'"{name}"' not in source} == set()
