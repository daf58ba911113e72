"""What operators watch: the Prometheus exporter (`exporter.py`), started by `cli/metrics.py`."""
