"""Verify the trail of a served model, or of any asset partition, from the bytes back to the bars,
the config and the code: `make audit MODEL=intelligence.GOOG.y_volatility_10b@champion`
(`@<alias>` or `/<version>`), or `make audit ASSET=models/lightgbm PARTITION='GOOG|y_up_1b'`.

Every link is checked, not shown: the MLflow model copy is re-hashed against the checksums
recorded at training, the MLflow run and the Dagster run must name the same fingerprint, and
every stored artifact on the way (model, feature set, ranking, features, labels, bars) is
re-hashed against its manifest, its fingerprint recomputed from its recorded code version,
config and inputs, and the bars' content hash recomputed from the stored bars. Prints one line
per link and `verified`, or names the first link that does not match and exits 1. Reads the
deployment of the environment (INTELLIGENCE_DEPLOYMENT: local store or S3, the MLflow tracking
URI, the Dagster instance in DAGSTER_HOME, SQLite or PostgreSQL).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg

from intelligence_assets.config.universe import exit_on_configuration_error
from intelligence_assets.defs.assets.caching import CONTENT_INPUT, fingerprint_of
from intelligence_assets.defs.resources.deployment import Deployment
from intelligence_assets.defs.resources.io_manager import parse_partition_key, partition_prefix
from intelligence_assets.store.artifact_store import ArtifactNotFoundError, ArtifactStore
from intelligence_assets.store.artifacts import (
    CorruptArtifactError,
    Manifest,
    content_digest,
    decode_value,
    read_manifest,
    read_verified_files,
)
from intelligence_assets.store.fingerprints import table_fingerprint
from intelligence_assets.store.keys import BARS, MANIFEST_FILE, pointer_key
from intelligence_assets.tracking import names
from intelligence_assets.tracking.tracker import ModelIntegrityError, ModelTracker


class AuditMismatch(Exception):
    """The first link of the trail that does not match: `link` names it, the message says how."""

    def __init__(self, link: str, detail: str) -> None:
        super().__init__(f"{link}: {detail}")
        self.link = link
        self.detail = detail


@dataclass
class Audit:
    """One walk of a trail; `verified` lists each link checked, in order."""

    store: ArtifactStore
    instance: dg.DagsterInstance
    defs: dg.Definitions  # the code location: each asset's inputs, partitions and partition mappings
    tracker: Callable[[], ModelTracker]
    say: Callable[[str], None] = print
    verified: list[str] = field(default_factory=list)
    _seen: set[tuple[str, str | None, str]] = field(default_factory=set)

    def ok(self, link: str, detail: str) -> None:
        self.verified.append(link)
        self.say(f"  ok  {link}: {detail}")

    # -- a registered model version ------------------------------------------------------------

    def model(self, reference: str) -> None:
        """`name@alias` or `name/version`: the version, its MLflow model copy and run, the Dagster
        run that materialized it, then its artifact and everything upstream."""
        tracker = self.tracker()
        if "@" in reference:
            name, alias = reference.split("@", 1)
            version = tracker.version_by_alias(name, alias)
            if version is None:
                raise AuditMismatch(f"alias {reference}", "no such registered model or alias in MLflow")
        else:
            name, _, number = reference.rpartition("/")
            version = tracker.client.get_model_version(name, number)
        fingerprint = version.tags.get(names.FINGERPRINT_TAG, "")
        self.ok(
            f"MLflow version {name} v{version.version}",
            f"{version.tags.get(names.FAMILY_TAG)}, fingerprint {fingerprint}"
            + (f", reached as {reference}" if "@" in reference else ""),
        )
        try:
            tracker.load_model(version)
        except ModelIntegrityError as error:
            raise AuditMismatch(f"MLflow model copy of {name} v{version.version}", str(error)) from None
        self.ok(
            f"MLflow model copy of {name} v{version.version}", "every file matches the checksums recorded at training"
        )

        run = tracker.client.get_run(version.run_id)
        tags = run.data.tags
        if tags.get(names.FINGERPRINT_TAG) != fingerprint:
            raise AuditMismatch(
                f"MLflow run {run.info.run_id}",
                f"names fingerprint {tags.get(names.FINGERPRINT_TAG)}, not {fingerprint}",
            )
        asset, partition, dagster_run_id = (
            tags.get(names.DAGSTER_ASSET_TAG, ""),
            tags.get(names.DAGSTER_PARTITION_TAG, ""),
            tags.get(names.DAGSTER_RUN_TAG, ""),
        )
        commit = tags.get("mlflow.source.git.commit")
        self.ok(
            f"MLflow run {run.info.run_id}",
            f"fingerprint {fingerprint}, Dagster {asset} {partition} run {dagster_run_id}, "
            f"commit {commit or 'unknown'}",
        )

        dagster_run = self.instance.get_run_by_id(dagster_run_id)
        if dagster_run is None:
            raise AuditMismatch(f"Dagster run {dagster_run_id}", "not in this Dagster instance")
        asset_key = dg.AssetKey.from_user_string(asset)
        recorded = self._materialized_in(asset_key, partition, dagster_run_id)
        if fingerprint not in recorded:
            raise AuditMismatch(
                f"Dagster run {dagster_run_id}",
                f"recorded no materialization of {asset} {partition} with fingerprint {fingerprint} "
                f"(found {sorted(recorded) or 'none'})",
            )
        self.ok(
            f"Dagster run {dagster_run_id}",
            f"{dagster_run.job_name}, materialized {asset} {partition} as {fingerprint}",
        )
        manifest = self.partition(asset_key, partition, fingerprint=fingerprint)
        if commit and manifest.provenance.get("code_commit") and commit != manifest.provenance["code_commit"]:
            raise AuditMismatch(
                f"commit of {asset} {partition}",
                f"MLflow says {commit}, the artifact's provenance {manifest.provenance['code_commit']}",
            )

    def _materialized_in(self, asset_key: dg.AssetKey, partition: str, run_id: str) -> set[str]:
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1000
        ).records
        return {
            str(record.asset_materialization.metadata["fingerprint"].value)
            for record in records
            if record.run_id == run_id
            and record.asset_materialization
            and "fingerprint" in record.asset_materialization.metadata
        }

    # -- a stored artifact and what it was made from ---------------------------------------------

    def partition(
        self,
        asset_key: dg.AssetKey,
        partition: str | None,
        fingerprint: str | None = None,
        data_version: str | None = None,
    ) -> Manifest:
        """Verify one partition's artifact (by fingerprint, by data version, or the current one)
        and, recursively, every upstream artifact its provenance names."""
        node = self.defs.resolve_asset_graph().get(asset_key)
        name = asset_key.to_user_string()
        where = f"{name} {partition}" if partition else name
        prefix = partition_prefix(asset_key, parse_partition_key(node.partitions_def, partition))
        manifest = self._manifest(prefix, where, fingerprint, data_version)
        seen = (name, partition, manifest.fingerprint)
        if seen in self._seen:
            return manifest
        self._seen.add(seen)
        try:
            files = read_verified_files(self.store, prefix, manifest)
        except (CorruptArtifactError, ArtifactNotFoundError) as error:
            raise AuditMismatch(f"{where} artifact {manifest.fingerprint}", str(error)) from None
        provenance = manifest.provenance
        inputs = provenance.get("inputs", {})
        recomputed = fingerprint_of(
            provenance.get("code_version", ""), provenance.get("config"), provenance.get("partition"), inputs
        )
        if recomputed != manifest.fingerprint:
            raise AuditMismatch(
                f"{where} provenance",
                f"code version, config, partition and inputs recorded in its manifest hash to {recomputed}, "
                f"not its fingerprint {manifest.fingerprint}",
            )
        detail = f"fingerprint {manifest.fingerprint}, {len(files)} file(s) re-hashed"
        if asset_key.path == [BARS]:
            content = table_fingerprint(decode_value(files, self.store.uri(prefix)))
            if content != manifest.data_version:
                raise AuditMismatch(
                    f"{where} content",
                    f"the stored bars hash to {content}, not their data version {manifest.data_version}",
                )
            detail += f", content hash {content} recomputed"
        commit = provenance.get("code_commit")
        dirty = " (dirty)" if provenance.get("code_dirty") else ""
        detail += f", run {provenance.get('run_id')}, commit {commit or 'unknown'}{dirty}"
        self.ok(where, detail)
        if provenance.get("config") is not None:
            self.say(f"        config {json.dumps(provenance['config'], sort_keys=True, default=str)[:400]}")
        if CONTENT_INPUT in inputs:
            # An always-computed asset (the registry) hashes its own result beside what it read.
            content = content_digest(files)
            if content != inputs[CONTENT_INPUT]:
                raise AuditMismatch(f"{where} content", f"its files hash to {content}, not {inputs[CONTENT_INPUT]}")
        for input_name, version in sorted(inputs.items()):
            if input_name == CONTENT_INPUT:
                continue
            upstream, upstream_partition = self._upstream(asset_key, partition, input_name)
            self.partition(upstream, upstream_partition, data_version=version)
        return manifest

    def _manifest(self, prefix: str, where: str, fingerprint: str | None, data_version: str | None) -> Manifest:
        try:
            if fingerprint is not None:
                return read_manifest(self.store, prefix, fingerprint)
            pointer = self.store.get_json(pointer_key(prefix))
            if data_version is None or pointer.get("data_version") == data_version:
                return read_manifest(self.store, prefix, pointer["fingerprint"])
            # Upstream moved on since: the version read then is one of the partition's older artifacts.
            for key in self.store.list_keys(prefix):
                if key.endswith(f"/{MANIFEST_FILE}"):
                    candidate = read_manifest(self.store, prefix, key.rsplit("/", 2)[-2])
                    if candidate.data_version == data_version:
                        return candidate
        except (ArtifactNotFoundError, CorruptArtifactError) as error:
            raise AuditMismatch(f"{where} manifest", str(error)) from None
        raise AuditMismatch(f"{where}", f"no stored artifact has data version {data_version}")

    def _upstream(
        self, asset_key: dg.AssetKey, partition: str | None, input_name: str
    ) -> tuple[dg.AssetKey, str | None]:
        """The asset and partition an input of `asset_key`'s `partition` read; a mapped input
        names its partition in brackets (`models_linear[SP500|y_up_1b]`)."""
        base, _, bracketed = input_name.partition("[")
        upstream = self.defs.resolve_assets_def(asset_key).keys_by_input_name[base]
        if bracketed:
            return upstream, bracketed.rstrip("]")
        graph = self.defs.resolve_asset_graph()
        if not graph.get(upstream).is_partitioned:
            return upstream, None
        with dg.partition_loading_context(dynamic_partitions_store=self.instance):
            mapped = graph.get_parent_partition_keys_for_child(partition, upstream, asset_key)
        [upstream_partition] = mapped.partitions_subset.get_partition_keys()
        return upstream, upstream_partition


def run_audit(
    model: str | None,
    asset: str | None,
    partition: str | None,
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    deployment: Deployment,
    say: Callable[[str], None] = print,
) -> bool:
    """True when every link verified; prints the trail and the verdict through `say`. `defs` is
    the code location (its assets' inputs and partitions), `deployment` where its store and
    tracker are (credentials read now: this runs outside Dagster)."""
    store = deployment.artifact_store()
    audit = Audit(store, instance, defs, deployment.mlflow_tracking_resource().tracker, say)
    subject = model or f"{asset} {partition or ''}".strip()
    say(f"audit of {subject}")
    try:
        if model:
            audit.model(model)
        else:
            audit.partition(dg.AssetKey.from_user_string(asset or ""), partition)
    except AuditMismatch as mismatch:
        say(f"MISMATCH at {mismatch.link}: {mismatch.detail}")
        say(f"not verified: {len(audit.verified)} link(s) matched before {mismatch.link}")
        return False
    say(f"verified: {len(audit.verified)} links, from {subject} to the bars")
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Verify a model's or a partition's trail back to the bars and code.")
    parser.add_argument("--model", help="a registered model version: NAME@ALIAS or NAME/VERSION")
    parser.add_argument("--asset", help="an asset key as users write it, e.g. models/lightgbm")
    parser.add_argument("--partition", help="the asset's partition, e.g. 'GOOG|y_up_1b'")
    args = parser.parse_args(argv)
    if bool(args.model) == bool(args.asset):
        parser.error("give either --model or --asset (with --partition for a partitioned asset)")
    from intelligence_assets.definitions import defs

    with dg.DagsterInstance.get() as instance:
        verified = run_audit(args.model, args.asset, args.partition, defs, instance, Deployment.from_environment())
    raise SystemExit(0 if verified else 1)


if __name__ == "__main__":
    exit_on_configuration_error(main)
