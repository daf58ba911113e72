"""Everything Dagster loads: resources, partitions, checks, executors, one module per asset
stage (`assets/`) and how the platform runs itself (`automation/`). `intelligence_assets.definitions`
assembles them."""
