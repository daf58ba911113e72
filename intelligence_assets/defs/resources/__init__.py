"""Dagster resources: the artifact store, the IO manager over it, and MLflow tracking."""
