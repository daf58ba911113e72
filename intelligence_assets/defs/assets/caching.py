"""Cache-aware materialization.

An asset partition's fingerprint hashes its code version, its resolved config, its partition key
and the data versions of its inputs. When the store already holds an intact artifact under that
fingerprint, the asset returns it without computing (metadata `cache: hit`); otherwise it
computes and stores (`cache: miss`). The fingerprint is also the partition's data version, so a
recompute that Dagster shows as needed is exactly one the store cannot answer.

Inputs arrive as `ArtifactHandle`s: a hit reads one small pointer per input, never the data.

The artifact is committed (files, then manifest) inside the step, before `after_commit` runs, so
a follow-up that can fail on its own (MLflow tracking) never loses a computed result: a retry
finds the committed artifact as a hit and only repeats the follow-up.
"""

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import polars as pl
from dagster._core.events import DagsterEventBatchMetadata, generate_event_batch_id
from dagster_shared.serdes import deserialize_value, serialize_value
from pydantic import BaseModel

from intelligence_assets.config.code_revision import CodeRevision, code_revision
from intelligence_assets.config.deployment import DeploymentSettings
from intelligence_assets.defs.assets.lineage import (
    UpstreamPartition,
    lineage_metadata,
    partition_record_tags,
    upstream_partitions,
    upstream_partitions_of_range,
)
from intelligence_assets.defs.assets.metadata import column_schema
from intelligence_assets.defs.resources.io_manager import parse_partition_key, partition_prefix
from intelligence_assets.store.artifact_store import ArtifactStore
from intelligence_assets.store.artifacts import (
    ArtifactHandle,
    Manifest,
    StoredArtifact,
    StoredArtifacts,
    claimed,
    commit_artifact,
    content_digest,
    encode_value,
    find_intact_manifest,
    point_to,
)
from intelligence_assets.store.keys import failure_key, fingerprint_directory
from intelligence_assets.store.s3 import ArtifactStoreUnavailableError
from intelligence_assets.tracking.tracker import TrackingError

Inputs = Mapping[str, ArtifactHandle | Mapping[str, ArtifactHandle]]
# Where an always-computed asset's claim lives, beside its fingerprints: `claim_key(prefix, ONE_WRITER_CLAIM)`.
ONE_WRITER_CLAIM = "one-writer"
# Runs after the artifact is committed, on hits and misses alike: (the committed artifact, its
# manifest, the computed value or None on a hit) -> extra materialization metadata.
AfterCommit = Callable[[ArtifactHandle, Manifest, Any], Mapping[str, Any]]


@dataclass
class Computed:
    """What an asset computed: the value, its UI metadata and its check outcomes. `state`: for
    an always-computed asset, the part of the value its data version hashes (default: all of it),
    so that a pass that changes nothing (the registry's "kept") is not a new version."""

    value: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    checks: list[dg.AssetCheckResult] = field(default_factory=list)
    state: Any = None


def resolved(config: Any) -> Any:
    """Config as plain JSON values (pydantic models dumped), for hashing and provenance."""
    if isinstance(config, BaseModel):
        return config.model_dump(mode="json")
    if isinstance(config, Mapping):
        return {str(k): resolved(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [resolved(v) for v in config]
    return config


def input_versions(inputs: Inputs) -> dict[str, str]:
    versions = {}
    for name, value in inputs.items():
        if isinstance(value, ArtifactHandle):
            versions[name] = value.data_version
        else:
            versions.update({f"{name}[{key}]": handle.data_version for key, handle in value.items()})
    return dict(sorted(versions.items()))


def fingerprint_of(code_version: str, config: Any, partition_key: str | None, versions: Mapping[str, str]) -> str:
    payload = {
        "code_version": code_version,
        "config": resolved(config),
        "partition": partition_key,
        "inputs": dict(sorted(versions.items())),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


# Metadata is stored with the artifact so a cache hit shows the same numbers in the UI.
def _plain_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    plain = {}
    for name, value in metadata.items():
        if isinstance(value, dg.MarkdownMetadataValue):
            plain[name] = {"__markdown__": value.value}
        elif isinstance(value, dg.JsonMetadataValue):
            plain[name] = {"__json__": value.value}
        elif isinstance(value, dg.PathMetadataValue):
            plain[name] = {"__path__": value.value}
        elif isinstance(value, (dg.TableMetadataValue, dg.TableSchemaMetadataValue)):
            plain[name] = {"__dagster__": serialize_value(value)}
        elif isinstance(value, dg.MetadataValue):
            plain[name] = value.value
        elif value is not None:
            plain[name] = value
    return plain


def stored_metadata_values(plain: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata as stored in a manifest, back to the values Dagster shows."""
    values = {}
    for name, value in plain.items():
        if isinstance(value, dict) and "__markdown__" in value:
            values[name] = dg.MetadataValue.md(value["__markdown__"])
        elif isinstance(value, dict) and "__json__" in value:
            values[name] = dg.MetadataValue.json(value["__json__"])
        elif isinstance(value, dict) and "__path__" in value:
            values[name] = dg.MetadataValue.path(value["__path__"])
        elif isinstance(value, dict) and "__dagster__" in value:
            values[name] = deserialize_value(value["__dagster__"])
        else:
            values[name] = value
    return values


def _plain_check(check: dg.AssetCheckResult, blocking: bool) -> dict[str, Any]:
    return {
        "check_name": check.check_name,
        "blocking": blocking,
        "passed": check.passed,
        "severity": check.severity.value,
        "description": check.description,
        "metadata": _plain_metadata(check.metadata or {}),
    }


def _replayed_check(asset_key: dg.AssetKey, plain: Mapping[str, Any]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=plain["check_name"],
        passed=plain["passed"],
        severity=dg.AssetCheckSeverity(plain["severity"]),
        description=plain["description"],
        metadata=stored_metadata_values(plain["metadata"]),
    )


@dataclass
class PartitionWork:
    """One partition's share of an asset: its inputs, resolved config and how to compute it."""

    inputs: Inputs
    config: Any
    compute: Callable[[], Computed]
    data_version: str | None = None
    after_commit: AfterCommit | None = None


@dataclass
class PartitionResult:
    """One partition's committed (or found) artifact, its UI metadata and check outcomes, and the
    upstream partitions it was made from."""

    artifact: StoredArtifact
    metadata: dict[str, Any]
    checks: list[dg.AssetCheckResult]
    upstream: list[UpstreamPartition]
    code_version: str


def materialize_cached(
    context: dg.AssetExecutionContext,
    store: ArtifactStore,
    inputs: Inputs,
    config: Any,
    compute: Callable[[], Computed],
    data_version: str | None = None,
    after_commit: AfterCommit | None = None,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Yield the asset's output (new or cached) and its check results.

    `data_version` overrides the data version (bars: the content hash of the stored bars);
    by default it is the fingerprint.
    """
    partition_key = context.partition_key if context.has_partition_key else None
    try:
        result = _cached_or_computed(
            context, store, partition_key, PartitionWork(inputs, config, compute, data_version), after_commit
        )
    except TRANSIENT_ERRORS as error:
        retry_if_transient(context, [error])
        raise
    tags = partition_record_tags(result.upstream, result.code_version, result.artifact.manifest.data_version)
    yield from _outputs(context, result.artifact, result.metadata, result.checks, tags)


def materialize_partitions(
    context: dg.AssetExecutionContext, store: ArtifactStore, work_for: Callable[[str], PartitionWork]
) -> Iterator[dg.Output | dg.AssetCheckResult | dg.AssetCheckEvaluation | dg.DagsterEvent]:
    """For assets with a BackfillPolicy: a run over one partition behaves as `materialize_cached`;
    a ranged run (a backfill chunk, one symbol's training run, or declarative automation catching
    up many partitions) caches, computes and commits each partition on its own, so one bad
    partition's failure leaves the ones before it stored, and a retry finds those as cache hits.

    Dagster takes one data version per output, so after a ranged output each partition logs its
    own materialization, with its fingerprint as data version and the exact upstream partitions
    it read (`lineage.py`): that one is the partition's latest, which the UI shows and Dagster's
    staleness reads. An `AssetCheckResult` names no partition, so in a ranged run
    each partition's check outcomes are logged as `AssetCheckEvaluation`s of that partition; for
    that the asset's checks must be optional outputs (a `multi_asset` with `can_subset=True`, as
    `models/<family>` and `bars`).

    A partition whose blocking check fails is a failed partition of the range (`bars` of a broken
    file): its artifact is committed and made current flagged as blocked, as a single-partition
    run leaves it, but it is not recorded as materialized, so neither a backfill nor
    declarative automation runs anything below it. Dagster enforces blocking only for check
    results a step returns, and a ranged step returns none.
    """
    if context.has_partition_key:
        try:
            work = work_for(context.partition_key)
            yield from materialize_cached(
                context, store, work.inputs, work.config, work.compute, work.data_version, work.after_commit
            )
        except dg.RetryRequested:
            raise
        except Exception as error:
            record_failure(context, store, context.partition_key, f"{type(error).__name__}: {error}")
            raise
        return
    results: dict[str, PartitionResult] = {}
    errors: list[Exception] = []
    failures: dict[str, str] = {}
    optional_checks = all(
        not context.op_def.outs[name].is_required for name in context.assets_def.check_specs_by_output_name
    )
    blocking = {spec.name: spec.blocking for spec in context.assets_def.check_specs}
    upstream_by_key = upstream_partitions_of_range(context, context.partition_keys)
    for key in context.partition_keys:
        # One partition's failure (its bars, its data, its model) is its own: the others still
        # commit, and the step fails afterwards naming exactly the partitions that failed.
        try:
            work = work_for(key)
            result = _cached_or_computed(context, store, key, work, work.after_commit, upstream_by_key[key])
        except Exception as error:
            errors.append(error)
            failures[key] = f"{type(error).__name__}: {error}"
            context.log.error(f"{context.asset_key.to_user_string()} {key} failed: {failures[key]}")
            record_failure(context, store, key, failures[key])
            continue
        if result.checks and not optional_checks:
            raise RuntimeError(
                f"{context.asset_key.to_user_string()} returned check results in a ranged run; its checks must be "
                "optional outputs (a multi_asset with can_subset=True)"
            )
        for check in result.checks:
            yield _evaluation_of(check, context.asset_key, key, blocking)
        blocked = _failed_blocking_checks(result.checks, blocking)
        if blocked:
            failures[key] = "blocking checks failed: " + "; ".join(
                f"{check.check_name}: {check.description}" for check in blocked
            )
            context.log.error(f"{context.asset_key.to_user_string()} {key} failed: {failures[key]}")
            # Current but flagged, as a single-partition run leaves it: no later run builds on it.
            point_to(store, _prefix(context, key), result.artifact.manifest)
            record_failure(context, store, key, failures[key])
            continue
        results[key] = result
    artifacts = {key: result.artifact for key, result in results.items()}
    hits = sum(artifact.is_cache_hit for artifact in artifacts.values())
    checked = ", ".join(spec.name for spec in context.assets_def.check_specs)
    context.log.info(
        f"{context.asset_key.to_user_string()}: {len(artifacts)} partitions in one run ({hits} cache hits, "
        f"{len(artifacts) - hits} computed"
        + (f", {len(failures)} failed" if failures else "")
        + ")"
        + (f"; checks ({checked}) reported per partition, not as the step's own output" if checked else "")
    )
    if failures:
        # Yielded, not logged: Dagster drops what a step logged after its last yield when it fails.
        yield from _publish_partial(context, store, results)
        retry_if_transient(context, errors)
        raise PartitionsFailed(context.asset_key.to_user_string(), failures, succeeded=len(artifacts))
    yield dg.Output(
        StoredArtifacts(artifacts),
        output_name=_output_name(context),
        metadata={"partitions_in_run": len(artifacts), "partition_record": RANGE_RECORD_NOTE},
    )
    yield from _record_partitions(context, store, results)


# On the record Dagster logs for each partition of a ranged output.
RANGE_RECORD_NOTE = (
    "written for the whole range: the partition's own materialization, with its fingerprint as data version, "
    "its metadata and the upstream partitions it read, is logged right after this one"
)


class PartitionsFailed(dg.Failure):
    """Some partitions of a ranged step failed; the others are committed, published and recorded
    as materializations. `failed` maps each failed partition key to its error."""

    def __init__(self, asset: str, failed: dict[str, str], succeeded: int) -> None:
        shown = "; ".join(f"{key}: {reason}" for key, reason in list(failed.items())[:10])
        more = f" (and {len(failed) - 10} more)" if len(failed) > 10 else ""
        super().__init__(
            description=f"{asset}: {len(failed)} partition(s) failed, {succeeded} materialized: {shown}{more}",
            metadata={FAILED_PARTITIONS: dg.MetadataValue.json(failed)},
        )
        self.failed = failed


# The metadata entry of a `PartitionsFailed` step failure: partition key -> error.
FAILED_PARTITIONS = "failed_partitions"


# Failures that waiting may fix: the store or the tracker did not answer within its own retry
# budget. Data and code errors fail at once: a retry would only repeat them.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (ArtifactStoreUnavailableError, TrackingError)
STEP_RETRIES = 3


def retry_if_transient(context: dg.AssetExecutionContext, errors: list[Exception]) -> None:
    """Ask Dagster to run the step again (cache hits for what was committed) when any failure
    was transient, up to STEP_RETRIES times, with a growing wait."""
    if any(isinstance(error, TRANSIENT_ERRORS) for error in errors) and context.retry_number < STEP_RETRIES:
        wait = 2**context.retry_number
        context.log.warning(
            f"transient failure ({type(errors[0]).__name__}); retrying the step in {wait}s (retry "
            f"{context.retry_number + 1} of {STEP_RETRIES})"
        )
        raise dg.RetryRequested(max_retries=STEP_RETRIES, seconds_to_wait=wait) from errors[0]


def record_failure(context: dg.AssetExecutionContext, store: ArtifactStore, partition_key: str, error: str) -> None:
    """Beside the partition's pointer, why its latest attempt failed: readers that compute from
    what exists (the leaderboard, `make demo`'s summary) say why a partition is missing."""
    prefix = _prefix(context, partition_key)
    try:
        store.put_json(
            failure_key(prefix),
            {"error": error[:2000], "run_id": context.run.run_id, "at": datetime.now(UTC).isoformat()},
        )
    except Exception as storage_error:
        context.log.warning(f"could not record the failure of {prefix}: {storage_error}")


def _publish_partial(
    context: dg.AssetExecutionContext, store: ArtifactStore, results: dict[str, PartitionResult]
) -> Iterator[dg.DagsterEvent]:
    """What the IO manager does for a whole range, for the partitions that succeeded when the
    step is about to fail: their pointers move and Dagster records their materializations, so
    the UI, lineage and automation see exactly which partitions exist."""
    for key, result in results.items():
        point_to(store, _prefix(context, key), result.artifact.manifest)
    yield from _record_partitions(context, store, results)


def _record_partitions(
    context: dg.AssetExecutionContext, store: ArtifactStore, results: dict[str, PartitionResult]
) -> Iterator[dg.DagsterEvent]:
    """Each partition of a ranged run as its own materialization, recorded as a single-partition
    run would record it (data version, code version, input versions and events, metadata).

    The records go out as one batch, as Dagster sends its own record of the range: where the
    instance batches event writes (DAGSTER_EVENT_BATCH_SIZE), they are one insert, not one a
    partition. Dagster offers batching only for the events it builds itself, hence the event built
    here as it builds them (`DagsterEvent.asset_materialization` with a batch)."""
    step = context.get_step_execution_context()
    batch = generate_event_batch_id()
    last = len(results) - 1
    for index, (key, result) in enumerate(results.items()):
        manifest = result.artifact.manifest
        metadata = {name: value for name, value in result.metadata.items() if value is not None}
        materialization = dg.AssetMaterialization(
            asset_key=context.asset_key,
            partition=key,
            metadata={
                **metadata,
                "artifact": store.uri(fingerprint_directory(_prefix(context, key), manifest.fingerprint)),
            },
            tags=partition_record_tags(result.upstream, result.code_version, manifest.data_version),
        )
        yield dg.DagsterEvent.asset_materialization(
            step, materialization, DagsterEventBatchMetadata(batch, index == last)
        )


def _prefix(context: dg.AssetExecutionContext, partition_key: str | None) -> str:
    return partition_prefix(context.asset_key, parse_partition_key(context.assets_def.partitions_def, partition_key))


def _output_name(context: dg.AssetExecutionContext) -> str:
    return context.assets_def.get_output_name_for_asset_key(context.asset_key)


def _outputs(
    context: dg.AssetExecutionContext,
    artifact: StoredArtifact,
    metadata: dict[str, Any],
    checks: list[dg.AssetCheckResult],
    tags: dict[str, str] | None = None,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """One partition's artifact as the step's output, with its data version, then its checks.
    `tags` replace Dagster's input versions, which hash even one upstream partition's version,
    with the exact versions read (`lineage.partition_record_tags`)."""
    yield dg.Output(
        artifact,
        output_name=_output_name(context),
        data_version=dg.DataVersion(artifact.manifest.data_version),
        metadata=metadata,
        tags=tags,
    )
    yield from checks


def _failed_blocking_checks(
    checks: list[dg.AssetCheckResult], blocking: Mapping[str, bool]
) -> list[dg.AssetCheckResult]:
    """The failed checks that would stop a single-partition step: blocking, of ERROR severity."""
    return [
        check
        for check in checks
        if not check.passed
        and check.severity == dg.AssetCheckSeverity.ERROR
        and blocking.get(check.check_name or "", False)
    ]


def _evaluation_of(
    check: dg.AssetCheckResult, asset_key: dg.AssetKey, partition_key: str, blocking: Mapping[str, bool]
) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=check.asset_key or asset_key,
        check_name=check.check_name or "",
        passed=check.passed,
        metadata=check.metadata,
        severity=check.severity,
        description=check.description,
        blocking=blocking.get(check.check_name or "", False),
        partition=partition_key,
    )


def input_for(value: ArtifactHandle | Mapping[str, ArtifactHandle], upstream_key: str) -> ArtifactHandle:
    """One partition's input: the handle itself in a single-partition run; in a ranged run the
    IO manager hands every upstream partition of the range, keyed by partition."""
    if isinstance(value, ArtifactHandle):
        return value
    if upstream_key not in value:
        raise ValueError(f"input partition {upstream_key} is not materialized; materialize it first")
    return value[upstream_key]


def _cached_or_computed(
    context: dg.AssetExecutionContext,
    store: ArtifactStore,
    partition_key: str | None,
    work: PartitionWork,
    after_commit: AfterCommit | None,
    upstream: list[UpstreamPartition] | None = None,
) -> PartitionResult:
    """The partition's artifact, found or computed, with what an auditor needs on its page: the
    resolved config, the code version and the upstream partitions it was made from (from
    `upstream` when a ranged step read them for all its partitions at once)."""
    code_version = context.assets_def.code_versions_by_key[context.asset_key] or ""
    if upstream is None:
        upstream = upstream_partitions(context, partition_key)
    artifact, metadata, checks = _found_or_computed(context, store, partition_key, work, after_commit, code_version)
    return PartitionResult(
        artifact, {**metadata, **_audit_metadata(work.config, upstream, code_version)}, checks, upstream, code_version
    )


def _audit_metadata(config: Any, upstream: list[UpstreamPartition], code_version: str) -> dict[str, Any]:
    return {
        "code_version": code_version,
        "config": dg.MetadataValue.json(resolved(config)),
        **lineage_metadata(upstream, DeploymentSettings.from_environment().ui_links()),
    }


def _found_or_computed(
    context: dg.AssetExecutionContext,
    store: ArtifactStore,
    partition_key: str | None,
    work: PartitionWork,
    after_commit: AfterCommit | None,
    code_version: str,
) -> tuple[StoredArtifact, dict[str, Any], list[dg.AssetCheckResult]]:
    versions = input_versions(work.inputs)
    fingerprint = fingerprint_of(code_version, work.config, partition_key, versions)
    prefix = _prefix(context, partition_key)

    manifest, state = find_intact_manifest(store, prefix, fingerprint)
    if manifest is not None and after_commit is None:
        return _hit(context, store, prefix, fingerprint, manifest, after_commit)
    # Writing (or tracking what another run wrote) is one writer's job at a time.
    with claimed(store, prefix, fingerprint, context.run.run_id, on_wait=context.log.info):
        manifest, state = find_intact_manifest(store, prefix, fingerprint)
        if manifest is not None:
            return _hit(context, store, prefix, fingerprint, manifest, after_commit)
        if state != "not stored":
            context.log.warning(f"stored artifact for fingerprint {fingerprint} is unusable ({state}); recomputing")
        computed = work.compute()
        provenance = {
            "code_version": code_version,
            "config": resolved(work.config),
            "partition": partition_key,
            "inputs": versions,
        }
        return _commit(
            context,
            store,
            prefix,
            fingerprint,
            work.data_version or fingerprint,
            computed,
            provenance,
            after_commit,
            "miss",
        )


def _hit(
    context: dg.AssetExecutionContext,
    store: ArtifactStore,
    prefix: str,
    fingerprint: str,
    manifest: Manifest,
    after_commit: AfterCommit | None,
) -> tuple[StoredArtifact, dict[str, Any], list[dg.AssetCheckResult]]:
    # In a ranged run each partition's own record says it was a hit, where and from which run;
    # a line per partition would cost one more event-log write each.
    if not context.has_partition_key_range:
        context.log.info(
            f"cache hit: {store.uri(fingerprint_directory(prefix, fingerprint))} (computed in run "
            f"{manifest.provenance.get('run_id')})"
        )
    extra = (
        after_commit(ArtifactHandle(store, prefix, fingerprint, manifest.data_version), manifest, None)
        if after_commit
        else {}
    )
    metadata = {
        **stored_metadata_values(manifest.metadata),
        **extra,
        "cache": "hit",
        "fingerprint": fingerprint,
        "computed_in_run": manifest.provenance.get("run_id", ""),
        # The code that computed it, which may be older than the code that found it.
        "code_commit": CodeRevision(
            manifest.provenance.get("code_commit"), bool(manifest.provenance.get("code_dirty"))
        ).describe(),
    }
    return (
        StoredArtifact(manifest, is_cache_hit=True),
        metadata,
        [_replayed_check(context.asset_key, check) for check in manifest.checks],
    )


# The input of an always-computed artifact that is its own result: `content_digest` of its files.
CONTENT_INPUT = "content"


def materialize_uncached(
    context: dg.AssetExecutionContext,
    store: ArtifactStore,
    config: Any,
    compute: Callable[[], Computed],
    inputs: Inputs | None = None,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """For an asset whose result depends on state outside the store (the MLflow registry): always
    computes. Its data version hashes the result itself, so downstream assets see a new version
    only when the result changed; its fingerprint hashes the result and the versions of the
    `inputs` it read, so the planner can tell whether it read their current versions.

    One run at a time computes and commits it: two overlapping runs (a rollback beside the
    automation's registry run) would each decide from state the other is changing."""
    asset_key = context.asset_key
    partition_key = context.partition_key if context.has_partition_key else None
    code_version = context.assets_def.code_versions_by_key[asset_key] or ""
    prefix = _prefix(context, partition_key)
    with claimed(store, prefix, ONE_WRITER_CLAIM, context.run.run_id, on_wait=context.log.info):
        try:
            computed = compute()
        except TRANSIENT_ERRORS as error:
            retry_if_transient(context, [error])
            raise
        content = {CONTENT_INPUT: content_digest(encode_value(computed.value))}
        read = {**input_versions(inputs or {}), **content}
        state = computed.value if computed.state is None else computed.state
        data_version = fingerprint_of(
            code_version, config, partition_key, {"state": content_digest(encode_value(state))}
        )
        fingerprint = fingerprint_of(code_version, config, partition_key, read)
        provenance = {
            "code_version": code_version,
            "config": resolved(config),
            "partition": partition_key,
            "inputs": read,
        }
        artifact, metadata, checks = _commit(
            context, store, prefix, fingerprint, data_version, computed, provenance, None, "recomputed"
        )
    upstream = upstream_partitions(context, partition_key)
    metadata = {**metadata, **_audit_metadata(config, upstream, code_version)}
    tags = partition_record_tags(upstream, code_version, artifact.manifest.data_version)
    yield from _outputs(context, artifact, metadata, checks, tags)


def _commit(
    context: dg.AssetExecutionContext,
    store: ArtifactStore,
    prefix: str,
    fingerprint: str,
    data_version: str,
    computed: Computed,
    provenance: dict[str, Any],
    after_commit: AfterCommit | None,
    cache: str,
) -> tuple[StoredArtifact, dict[str, Any], list[dg.AssetCheckResult]]:
    blocking = {spec.name: spec.blocking for spec in context.assets_def.check_specs}
    if isinstance(computed.value, pl.DataFrame):
        computed.metadata = {
            **computed.metadata,
            "dagster/row_count": computed.value.height,
            "dagster/column_schema": dg.MetadataValue.table_schema(column_schema(computed.value)),
        }
    revision = code_revision()
    manifest = Manifest(
        fingerprint=fingerprint,
        data_version=data_version,
        files={},
        metadata=_plain_metadata(computed.metadata),
        checks=[_plain_check(check, blocking.get(check.check_name or "", False)) for check in computed.checks],
        provenance={
            **provenance,
            "run_id": context.run.run_id,
            "computed_at": datetime.now(UTC).isoformat(),
            "code_commit": revision.commit,
            "code_dirty": revision.dirty,
        },
    )
    manifest = commit_artifact(store, prefix, computed.value, manifest)
    extra = (
        after_commit(ArtifactHandle(store, prefix, fingerprint, manifest.data_version), manifest, computed.value)
        if after_commit
        else {}
    )
    return (
        StoredArtifact(manifest),
        {**computed.metadata, **extra, "cache": cache, "fingerprint": fingerprint, "code_commit": revision.describe()},
        list(computed.checks),
    )
