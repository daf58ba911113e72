"""Where bytes live and how they are cached: the artifact store's backends, the key layout,
manifests, fingerprints, claims and the bars files. Dagster-free."""
