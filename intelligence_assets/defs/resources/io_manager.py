"""The IO manager: publishes committed artifacts and loads inputs (layout in `store/keys.py`).

Assets commit their artifact's files and manifest themselves (`defs/assets/caching.py`), so that
whatever follows storage inside the step (MLflow tracking) can rely on the model being safe in
the store; the IO manager then moves the partition's pointer, which is what downstream reads.

Prefix per asset partition: `<asset key path>/<symbol>/<target>` for symbol x target partitions,
`<asset key path>/<symbol>` for symbol partitions, `<asset key path>` when unpartitioned; this
module turns Dagster's asset key and partition key into the store's (`partition_prefix`).
Inputs load as `ArtifactHandle`s: the asset decides whether it needs the data at all.
"""

import dagster as dg

from intelligence_assets.defs.partitions import SYMBOL_DIMENSION, TARGET_DIMENSION
from intelligence_assets.defs.resources.artifact_store import ArtifactStoreResource
from intelligence_assets.store import keys
from intelligence_assets.store.artifact_store import ArtifactNotFoundError
from intelligence_assets.store.artifacts import ArtifactHandle, StoredArtifact, StoredArtifacts, point_to

# The Dagster type of an input to an asset with a BackfillPolicy (see `HandleOrRange`).
HANDLE_OR_RANGE = dg.DagsterType(
    name="ArtifactHandleOrRange",
    description="One ArtifactHandle in a single-partition run; a dict of them keyed by partition in a ranged run.",
    type_check_fn=lambda _, value: (
        isinstance(value, ArtifactHandle)
        or (isinstance(value, dict) and all(isinstance(h, ArtifactHandle) for h in value.values()))
    ),
)


def partition_parts(partition_key: str | dg.MultiPartitionKey | None) -> tuple[str, ...]:
    """A partition key as the store's layout names it: (symbol, target), (symbol), or nothing.
    A `symbol` x `target` key must be parsed first (see `parse_partition_key`)."""
    if partition_key is None:
        return ()
    if isinstance(partition_key, dg.MultiPartitionKey):
        dimensions = partition_key.keys_by_dimension
        return dimensions[SYMBOL_DIMENSION], dimensions[TARGET_DIMENSION]
    return (str(partition_key),)


def partition_prefix(asset_key: dg.AssetKey, partition_key: str | dg.MultiPartitionKey | None) -> str:
    """The store prefix (`store.keys.artifact_prefix`) of an asset partition as Dagster names it."""
    return keys.artifact_prefix(asset_key, *partition_parts(partition_key))


def parse_partition_key(
    partitions_def: dg.PartitionsDefinition | None, key: str | None
) -> str | dg.MultiPartitionKey | None:
    if (
        key is not None
        and isinstance(partitions_def, dg.MultiPartitionsDefinition)
        and not isinstance(key, dg.MultiPartitionKey)
    ):
        return partitions_def.get_partition_key_from_str(key)
    return key


class ArtifactIOManager(dg.ConfigurableIOManager):
    """Stores every asset in the artifact store.

    An input spanning many upstream partitions (an unpartitioned leaderboard over all models,
    or an input with metadata `as_mapping: True`) loads as a dict of handles keyed by partition.
    """

    artifact_store: dg.ResourceDependency[ArtifactStoreResource]

    def handle_output(self, context: dg.OutputContext, obj: StoredArtifact | StoredArtifacts) -> None:
        store = self.artifact_store.store()
        if isinstance(obj, StoredArtifacts):  # a ranged run: one pointer per partition
            expected = {str(key) for key in context.asset_partition_keys}
            if set(obj.by_partition) != expected:
                raise ValueError(
                    f"{context.asset_key.to_user_string()}: a ranged run returned partitions "
                    f"{sorted(obj.by_partition)[:5]}..., expected {sorted(expected)[:5]}..."
                )
            for key, artifact in obj.by_partition.items():
                point_to(
                    store,
                    partition_prefix(context.asset_key, parse_partition_key(context.asset_partitions_def, key)),
                    artifact.manifest,
                )
            location = store.uri(keys.artifact_prefix(context.asset_key))
        elif isinstance(obj, StoredArtifact):
            partition = (
                parse_partition_key(context.asset_partitions_def, context.partition_key)
                if context.has_partition_key
                else None
            )
            prefix = partition_prefix(context.asset_key, partition)
            point_to(store, prefix, obj.manifest)
            location = store.uri(keys.fingerprint_directory(prefix, obj.manifest.fingerprint))
        else:
            raise TypeError(
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; assets return StoredArtifact "
                "(see defs/assets/caching.py)"
            )
        context.add_output_metadata(
            {
                "artifact": dg.MetadataValue.url(location)
                if location.startswith("http")
                else dg.MetadataValue.path(location)
            }
        )

    def load_input(self, context: dg.InputContext) -> ArtifactHandle | dict[str, ArtifactHandle]:
        store = self.artifact_store.store()
        asset_key = context.asset_key
        if not context.has_asset_partitions:
            return ArtifactHandle.current(store, partition_prefix(asset_key, None))
        keys = context.asset_partition_keys
        parsed = [parse_partition_key(context.asset_partitions_def, key) for key in keys]
        wants_mapping = (context.definition_metadata or {}).get("as_mapping") or not context.has_partition_key
        if not wants_mapping:
            if len(parsed) != 1:
                raise ValueError(
                    f"{asset_key.to_user_string()}: expected one upstream partition, got {len(parsed)}; mark the "
                    "input as_mapping"
                )
            return ArtifactHandle.current(store, partition_prefix(asset_key, parsed[0]))
        # Partitions never materialized (a symbol registered but not run yet) are left out.
        handles = {}
        for key, partition in zip(keys, parsed, strict=True):
            try:
                handles[str(key)] = ArtifactHandle.current(store, partition_prefix(asset_key, partition))
            except ArtifactNotFoundError:
                context.log.warning(f"{asset_key.to_user_string()} partition {key} is not materialized; leaving it out")
        return handles
