"""`dagster-webserver` on loopback over our definitions, for the tests that look at the Dagster UI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from intelligence_assets.config.universe import REPOSITORY_ROOT
from intelligence_assets_tests.support.services import stop_process

WEBSERVER = str(Path(sys.executable).parent / "dagster-webserver")
# DefaultRunCoordinator (Dagster's default is now the queue): a run launched from the UI starts
# at once, with no daemon.
INSTANCE_YAML = (
    "storage:\n  sqlite:\n    base_dir: {home}\n"
    "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n"
    "telemetry:\n  enabled: false\n"
)


def write_instance_yaml(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(INSTANCE_YAML.format(home=home))


@contextmanager
def dagster_webserver(port: int, environment: dict[str, str], log_path: Path) -> Iterator[str]:
    """The webserver on 127.0.0.1:`port` with `environment` (DAGSTER_HOME, INTELLIGENCE_*) over
    `intelligence_assets.definitions`; yields its URL once it answers, stops it on exit."""
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [WEBSERVER, "-h", "127.0.0.1", "-p", str(port), "-m", "intelligence_assets.definitions"],
            cwd=REPOSITORY_ROOT,
            env={**os.environ, **environment},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(f"{url}/server_info", timeout=2)
                    break
                except OSError:
                    assert server.poll() is None, log_path.read_text(errors="replace")[-3000:]
                    time.sleep(1)
            else:
                raise AssertionError("dagster-webserver did not answer within 120 s")
            yield url
        finally:
            stop_process(server)
