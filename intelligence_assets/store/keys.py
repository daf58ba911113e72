"""Every key of the artifact store's layout, built in one place.

An asset partition's artifacts live under its prefix, `<asset key path>[/<symbol>[/<target>]]`:

    <prefix>/current.json                        the pointer: which fingerprint downstream reads
    <prefix>/failure.json                        why the partition's latest attempt failed
    <prefix>/<fingerprint>/                      the fingerprint directory: one computed artifact
    <prefix>/<fingerprint>/manifest.json         checksums, metadata, check outcomes, provenance
    <prefix>/<fingerprint>/<file>                the value's files (data.parquet, model/...)
    <prefix>/<fingerprint>/claim.json            the one writer of this fingerprint, while it writes

Code, tests and benchmarks ask these functions for a key rather than joining the parts
themselves, so the layout can be read, and changed, here alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

POINTER_FILE = "current.json"
MANIFEST_FILE = "manifest.json"
# Beside the pointer: why the partition's latest attempt failed (see `artifacts.latest_failure`).
FAILURE_FILE = "failure.json"
# In the fingerprint directory while one run writes it (see `artifacts.claimed`).
CLAIM_FILE = "claim.json"

SEPARATOR = "/"
# The first part of every model asset's key (`models/<family>`): the store groups models by it.
MODELS = "models"
# The market-data assets' paths, which Dagster-free readers of the store (cells/) look up too;
# defs/assets/market_data.py builds its asset keys from them.
BARS = "bars"
FEATURES = "features"


class KeyWithPath(Protocol):
    """An asset key with its path parts, as Dagster's `AssetKey` has them."""

    @property
    def path(self) -> Sequence[str]: ...


# An asset: its key, its key's path parts, or the path already joined ("models/linear").
Asset = KeyWithPath | Sequence[str] | str


def asset_path(asset: Asset) -> str:
    """An asset key's path as the store writes it: `features`, `models/linear`."""
    if isinstance(asset, str):
        return asset
    return SEPARATOR.join(asset.path if hasattr(asset, "path") else asset)


def artifact_prefix(asset: Asset, symbol: str | None = None, target: str | None = None) -> str:
    """Where one asset partition's artifacts live: the asset's path, then its symbol, then its
    target (symbol first: the layout reads like the question "which symbol, which target")."""
    if target is not None and symbol is None:
        raise ValueError(f"{asset_path(asset)}: a target ({target}) needs its symbol")
    return SEPARATOR.join([asset_path(asset), *(part for part in (symbol, target) if part is not None)])


def pointer_key(prefix: str) -> str:
    """The partition's pointer: the fingerprint and data version downstream assets read."""
    return f"{prefix}{SEPARATOR}{POINTER_FILE}"


def pointer_prefix(key: str) -> str | None:
    """The prefix whose pointer `key` is (`pointer_key`'s inverse), or None for any other key:
    for whoever lists a store to find its partitions."""
    prefix, separator, name = key.rpartition(SEPARATOR)
    return prefix if separator and prefix and name == POINTER_FILE else None


def failure_key(prefix: str) -> str:
    """Why the partition's latest attempt failed."""
    return f"{prefix}{SEPARATOR}{FAILURE_FILE}"


def fingerprint_directory(prefix: str, fingerprint: str) -> str:
    """The folder of one computed artifact of the partition."""
    return f"{prefix}{SEPARATOR}{fingerprint}"


def file_key(prefix: str, fingerprint: str, name: str) -> str:
    """One file of a computed artifact; `name` is relative to its fingerprint directory and
    may have folders of its own (`model/model.json`)."""
    return f"{fingerprint_directory(prefix, fingerprint)}{SEPARATOR}{name}"


def manifest_key(prefix: str, fingerprint: str) -> str:
    """The manifest that commits a computed artifact."""
    return file_key(prefix, fingerprint, MANIFEST_FILE)


def claim_key(prefix: str, fingerprint: str) -> str:
    """The claim of the one run writing a fingerprint directory."""
    return file_key(prefix, fingerprint, CLAIM_FILE)
