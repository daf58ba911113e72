"""What the planner needs of an asset that the asset graph does not say: the config its
fingerprint hashes.

The graph says the rest (which assets there are, in which order, each input and which upstream
partitions it reads: `defs/planner.py` reads it). The config is computed by the same functions
the asset calls, and is declared beside the asset with `@plans(key)`, so adding an asset to the
graph, with its declaration listed in `defs/asset_plans.py`, needs no edit in the planner, and
the planner and the asset cannot disagree (tested: after a full run every planned fingerprint
equals the stored one).

An asset with no declaration is not planned (`make demo` and the retrain schedule leave it to
its own job or schedule: housekeeping); one that reads an input with no declaration cannot be.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from intelligence_assets.config.universe import Universe
from intelligence_assets.defs.partitions import cell_of
from intelligence_assets.store.artifact_store import ArtifactStoreError
from intelligence_assets.store.artifacts import ArtifactHandle
from intelligence_assets.store.bars_source import BarsSource

# One input as the asset receives it: a handle, or for an input spanning many upstream
# partitions a dict of handles keyed by partition (see the IO manager).
Inputs = Mapping[str, ArtifactHandle | Mapping[str, ArtifactHandle]]


class NeedsRun(Exception):
    """Raised by a fingerprint config that cannot be known without running the asset (its
    source cannot be read, an input it reads is unusable): the partition needs a run, and the
    run will say what is wrong."""


@dataclass
class PlanningContext:
    """One asset partition, as the planner sees it before any run."""

    universe: Universe
    asset_key: dg.AssetKey
    partition_key: str | None
    # The current upstream artifacts, shaped as the asset receives them.
    inputs: Inputs
    bars_source: BarsSource
    # Shared by every partition of one plan: what `load` read, and the sizes recorded.
    loaded: dict[tuple[str, str], Any] = field(default_factory=dict)
    sizes: dict[str, dict[str | None, int]] = field(default_factory=dict)

    @property
    def symbol(self) -> str:
        """The partition's symbol (of a `symbol` or a `symbol` x `target` partition)."""
        if self.partition_key is None:
            raise ValueError(f"{self.asset_key.to_user_string()} is not partitioned: it has no symbol")
        return cell_of(self.partition_key)[0] if "|" in self.partition_key else self.partition_key

    @property
    def target(self) -> str:
        """The partition's target (of a `symbol` x `target` partition)."""
        if self.partition_key is None or "|" not in self.partition_key:
            raise ValueError(f"{self.asset_key.to_user_string()} partition {self.partition_key} has no target")
        return cell_of(self.partition_key)[1]

    def load(self, input_name: str) -> Any:
        """The value of a one-handle input, read once per plan however many partitions read it."""
        handle = self.inputs[input_name]
        if not isinstance(handle, ArtifactHandle):
            raise TypeError(
                f"{self.asset_key.to_user_string()}: input {input_name} spans many partitions; "
                "load its handles one by one"
            )
        cached = (handle.prefix, handle.fingerprint)
        if cached not in self.loaded:
            try:
                self.loaded[cached] = handle.load()
            except ArtifactStoreError as error:
                raise NeedsRun(f"input {input_name} cannot be read: {error}") from error
        return self.loaded[cached]

    def record_rows(self, rows: int) -> None:
        """The partition's size in rows: `make demo` starts the biggest partitions' runs first."""
        self.sizes.setdefault(self.asset_key.to_user_string(), {})[self.partition_key] = rows


FingerprintConfig = Callable[[PlanningContext], Any]


@dataclass(frozen=True)
class AssetPlanning:
    """How the planner tells whether a partition of `key` (or of any asset under the key prefix
    `key`, for assets made by a factory: `models/<family>`) is current.

    `fingerprint_config`: the config the asset passes to the cache for a partition. None for an
    asset that always computes (`materialize_uncached`: its fingerprint hashes its result):
    current while its inputs are current and its stored artifact was made by its code version.
    `hashed_inputs`: the inputs its fingerprint hashes, when not all of them (an input the asset
    reads through its config instead)."""

    key: dg.AssetKey
    fingerprint_config: FingerprintConfig | None
    hashed_inputs: tuple[str, ...] | None = None


def plans(
    key: dg.AssetKey, hashed_inputs: Collection[str] | None = None
) -> Callable[[FingerprintConfig], AssetPlanning]:
    """Declare, beside an asset, the fingerprint config of its partitions: the decorated function
    becomes the declaration that `defs/asset_plans.py` lists."""

    def declare(config: FingerprintConfig) -> AssetPlanning:
        return AssetPlanning(key, config, None if hashed_inputs is None else tuple(hashed_inputs))

    return declare


def always_computed(key: dg.AssetKey) -> AssetPlanning:
    """Declare an asset that computes on every run (its state lives outside the store)."""
    return AssetPlanning(key, None)


@dataclass(frozen=True)
class AssetPlans:
    """The declarations of the assets a plan judges; an asset with none is not planned."""

    declarations: tuple[AssetPlanning, ...]

    @functools.cached_property
    def _by_path(self) -> dict[tuple[str, ...], AssetPlanning]:
        # Asked for every asset of every plan: indexed once.
        return {tuple(declared.key.path): declared for declared in self.declarations}

    def of(self, key: dg.AssetKey) -> AssetPlanning | None:
        """The declaration for `key`, or for the longest key prefix declared; None if none is."""
        for length in range(len(key.path), 0, -1):
            declared = self._by_path.get(tuple(key.path[:length]))
            if declared is not None:
                return declared
        return None

    def adding(self, *declarations: AssetPlanning) -> AssetPlans:
        return AssetPlans((*self.declarations, *declarations))
