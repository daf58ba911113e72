"""The Prometheus exporter: `python -m intelligence_assets.cli.metrics [--host 0.0.0.0] [--port 9108]`.

Reads the instance of DAGSTER_HOME at every scrape (see `monitoring/exporter.py` for the metrics);
the Helm manifest `helm/metrics.yaml` runs it beside the chart with scrape annotations.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

import dagster as dg
from prometheus_client import start_http_server
from prometheus_client.registry import CollectorRegistry

from intelligence_assets.definitions import defs
from intelligence_assets.monitoring.exporter import GpuReader, PlatformCollector

DEFAULT_PORT = 9108
logger = logging.getLogger("intelligence_assets.metrics")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default: {DEFAULT_PORT})")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    instance = dg.DagsterInstance.get()
    jobs = sorted(job.name for job in defs.resolve_all_job_defs())
    gpus = GpuReader()
    registry = CollectorRegistry()
    registry.register(PlatformCollector(instance, jobs, gpus))
    server, thread = start_http_server(arguments.port, addr=arguments.host, registry=registry)
    logger.info(
        "serving metrics on http://%s:%d/metrics for %d jobs of %s; GPUs: %s",
        arguments.host,
        arguments.port,
        len(jobs),
        instance.root_directory if instance.is_persistent else "an ephemeral instance",
        "NVML" if gpus.available() else "none visible",
    )
    stopped = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stopped.set())
    stopped.wait()
    server.shutdown()
    thread.join()


if __name__ == "__main__":
    main()
