"""Dagster resources: the artifact store and the IO manager over it."""
