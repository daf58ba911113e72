"""Thin Dagster assets, one module per stage: load inputs, call the ML core, return outputs with metadata."""
