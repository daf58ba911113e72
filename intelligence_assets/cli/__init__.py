"""Commands behind the Makefile: `make demo`, `make report`, `make rollback`, the pool limits of
`make ui`, and holding or repairing a DAGSTER_HOME."""
