"""MLflow glue, free of Dagster: experiment and registry naming, logging a trained model with its
flavour, the promotion rule and retention. Dagster reaches it through `MlflowTrackingResource`."""
