"""The ML core: plain functions and small classes on polars/numpy, free of Dagster.

Modules: `features` (feature matrix from bars), `targets` (labels from target specs),
`splits` (purged, embargoed walk-forward), `metrics`, `ranking` (how predictable a target is),
`selection` (features per target), `families/` (model families behind one interface),
`synthetic` (bars with planted signals, for tests), `dataset` (aligning features and labels).
"""
