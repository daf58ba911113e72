"""The IO manager: asset values to and from the ArtifactStore.

Layout: `<asset key path>/<symbol>/<target>/` for symbol x target partitions,
`<asset key path>/<symbol>/` for symbol partitions, `<asset key path>/` when unpartitioned.
Inside, one of: `data.parquet` (polars tables), `result.json` (small dict results) or
`summary.json` + `model/` (a TrainedModel, model files in their native format).
"""

import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from intelligence_assets.ml.trained_model import SUMMARY_FILE, TrainedModel
from intelligence_assets.resources.artifact_store import ArtifactNotFoundError, ArtifactStore
from intelligence_assets.resources.artifact_store_resource import ArtifactStoreResource

TABLE_FILE = "data.parquet"
RESULT_FILE = "result.json"


def partition_path(partition_key: str | dg.MultiPartitionKey | None) -> list[str]:
    if partition_key is None:
        return []
    if isinstance(partition_key, dg.MultiPartitionKey):
        # Symbol first: the layout reads like the question "which symbol, which target".
        dimensions = partition_key.keys_by_dimension
        return [dimensions["symbol"], dimensions["target"]]
    return [str(partition_key)]


def artifact_prefix(asset_key: dg.AssetKey, partition_key: str | dg.MultiPartitionKey | None) -> str:
    return "/".join([*asset_key.path, *partition_path(partition_key)])


def write_value(store: ArtifactStore, prefix: str, value: Any) -> str:
    """Store a value under prefix; returns the key of its main object."""
    if isinstance(value, pl.DataFrame):
        store.put_table(f"{prefix}/{TABLE_FILE}", value)
        return f"{prefix}/{TABLE_FILE}"
    if isinstance(value, TrainedModel):
        with tempfile.TemporaryDirectory() as scratch:
            value.save(Path(scratch))
            # The summary goes last: its presence marks a complete model artifact.
            for file in sorted(Path(scratch).rglob("*")):
                if file.is_file() and file.name != SUMMARY_FILE:
                    store.put_bytes(f"{prefix}/{file.relative_to(scratch).as_posix()}", file.read_bytes())
            store.put_bytes(f"{prefix}/{SUMMARY_FILE}", (Path(scratch) / SUMMARY_FILE).read_bytes())
        return f"{prefix}/{SUMMARY_FILE}"
    if isinstance(value, dict):
        store.put_json(f"{prefix}/{RESULT_FILE}", value)
        return f"{prefix}/{RESULT_FILE}"
    raise TypeError(f"cannot store {type(value).__name__} at {prefix}: expected polars.DataFrame, dict or TrainedModel")


def read_value(store: ArtifactStore, prefix: str) -> Any:
    if store.exists(f"{prefix}/{TABLE_FILE}"):
        return store.get_table(f"{prefix}/{TABLE_FILE}")
    if store.exists(f"{prefix}/{SUMMARY_FILE}"):
        with tempfile.TemporaryDirectory() as scratch:
            store.get_directory(prefix, Path(scratch))
            return TrainedModel.load(Path(scratch))
    if store.exists(f"{prefix}/{RESULT_FILE}"):
        return store.get_json(f"{prefix}/{RESULT_FILE}")
    raise ArtifactNotFoundError(f"nothing stored at {store.uri(prefix)}; materialize it first")


class ArtifactIOManager(dg.ConfigurableIOManager):
    """Stores every asset in the artifact store.

    An input spanning many upstream partitions (an unpartitioned leaderboard over all models,
    or an input with metadata `as_mapping: True`) loads as a dict keyed by partition key.
    """

    artifact_store: dg.ResourceDependency[ArtifactStoreResource]

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        store = self.artifact_store.store()
        partition = context.partition_key if context.has_partition_key else None
        if context.has_partition_key and isinstance(context.asset_partitions_def, dg.MultiPartitionsDefinition):
            partition = context.asset_partitions_def.get_partition_key_from_str(context.partition_key)
        prefix = artifact_prefix(context.asset_key, partition)
        key = write_value(store, prefix, obj)
        context.add_output_metadata({"artifact": dg.MetadataValue.url(store.uri(key)) if store.uri(key).startswith("http") else dg.MetadataValue.path(store.uri(key))})

    def load_input(self, context: dg.InputContext) -> Any:
        store = self.artifact_store.store()
        asset_key = context.asset_key
        if not context.has_asset_partitions:
            return read_value(store, artifact_prefix(asset_key, None))
        partitions_def = context.asset_partitions_def
        keys = context.asset_partition_keys
        parsed = [partitions_def.get_partition_key_from_str(k) if isinstance(partitions_def, dg.MultiPartitionsDefinition) else k for k in keys]
        wants_mapping = (context.definition_metadata or {}).get("as_mapping") or not context.has_partition_key
        if not wants_mapping:
            if len(parsed) != 1:
                raise ValueError(f"{asset_key.to_user_string()}: expected one upstream partition, got {len(parsed)}; mark the input as_mapping")
            return read_value(store, artifact_prefix(asset_key, parsed[0]))
        # Many upstream partitions (a leaderboard over all models): a dict keyed by partition;
        # partitions never materialized (a symbol added but not run yet) are left out.
        values = {}
        for key, partition in zip(keys, parsed):
            try:
                values[key] = read_value(store, artifact_prefix(asset_key, partition))
            except ArtifactNotFoundError:
                context.log.warning(f"{asset_key.to_user_string()} partition {key} is not materialized; leaving it out")
        return values
