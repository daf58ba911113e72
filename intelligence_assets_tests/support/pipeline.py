"""Materialize the whole graph for a universe through `dagster.materialize`, and report per
asset partition whether the artifact store answered it (cache hit) or it was computed (miss)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from intelligence_assets.config.universe import Universe, load_universe
from intelligence_assets.definitions import TRAINING_SELECTION, build_assets
from intelligence_assets.defs.assets.leaderboard import MODEL_LEADERBOARD
from intelligence_assets.defs.assets.market_data import BARS, FEATURES
from intelligence_assets.defs.assets.predictions import PREDICTIONS
from intelligence_assets.defs.assets.registry import MODEL_REGISTRY
from intelligence_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG, cell_key, register_symbols
from intelligence_assets.defs.resources.deployment import Deployment

# The training stage: labels, target ranking, feature selection and every model family.
MODEL_SELECTION = TRAINING_SELECTION


def cache_outcomes(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str | None], str]:
    outcomes = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        if "cache" not in materialization.metadata:
            continue  # the range's own record; each partition's record follows it
        outcomes[(materialization.asset_key.to_user_string(), materialization.partition)] = materialization.metadata[
            "cache"
        ].value
    return outcomes


def symbol_training_range(universe: Universe, symbol: str) -> dict[str, str]:
    """Run tags for the training stage of one symbol's targets as one ranged run (as `make demo`
    and Dagster's multi-run BackfillPolicy launch it)."""
    targets = universe.target_names
    return {RANGE_START_TAG: cell_key(symbol, targets[0]), RANGE_END_TAG: cell_key(symbol, targets[-1])}


def materialize_everything(
    universe: Universe,
    instance: dg.DagsterInstance,
    resources: dict,
    assets: list | None = None,
    ranged_training: bool = True,
) -> dict[tuple[str, str | None], str]:
    """Every asset partition of the universe, stage by stage; returns cache hit/miss per partition.
    The training stage runs one ranged run per symbol, or with `ranged_training=False` one run
    per symbol x target (as a sensor, a schedule or the UI launches a single partition)."""
    assets = assets or build_assets(universe)
    register_symbols(instance, universe.symbols)
    outcomes: dict[tuple[str, str | None], str] = {}

    def run(
        selection: dg.AssetSelection,
        partition_key: str | dg.MultiPartitionKey | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        result = dg.materialize(
            assets, selection=selection, partition_key=partition_key, instance=instance, resources=resources, tags=tags
        )
        assert result.success
        outcomes.update(cache_outcomes(result))

    for symbol in universe.symbols:
        outcomes.update(materialize_market_data(instance, universe, resources, symbol, assets))
        if ranged_training:
            run(MODEL_SELECTION, tags=symbol_training_range(universe, symbol))
            continue
        for target in universe.target_names:
            run(MODEL_SELECTION, dg.MultiPartitionKey({"symbol": symbol, "target": target}))
    run(dg.AssetSelection.assets(MODEL_LEADERBOARD))
    run(dg.AssetSelection.assets(MODEL_REGISTRY))
    for symbol in universe.symbols:
        run(dg.AssetSelection.assets(PREDICTIONS), symbol)
    return outcomes


def materialize_market_data(
    instance: dg.DagsterInstance, universe: Universe, resources: dict, symbol: str, assets: list | None = None
) -> dict[tuple[str, str | None], str]:
    """`bars` and `features` of one registered symbol, in this process (the first stage of
    `materialize_everything`, and what a test of a command or an executor needs upstream of the
    run it is about); returns cache hit/miss per partition."""
    result = dg.materialize(
        assets or build_assets(universe),
        selection=dg.AssetSelection.assets(BARS, FEATURES),
        partition_key=symbol,
        instance=instance,
        resources=resources,
    )
    assert result.success
    return cache_outcomes(result)


def local_resources(artifact_root: Path, universe: Universe) -> dict:
    return Deployment(artifact_root=artifact_root).resources(universe)


def materialize_command(selection: str, partition: str | None = None) -> list[str]:
    """`dagster asset materialize` of `selection` (and `partition`) from our definitions, as a user types it."""
    command = [
        str(Path(sys.executable).parent / "dagster"),
        "asset",
        "materialize",
        "-m",
        "intelligence_assets.definitions",
        "--select",
        selection,
    ]
    return command if partition is None else [*command, "--partition", partition]


@dataclass(frozen=True)
class MaterializedUniverse:
    """A small universe materialized once for a test module and restored before each test, instead
    of materialized again for every test that starts from a trained graph.

    `restored()` copies the instance, the artifact store and the embedded MLflow store back as the
    one cold materialization left them, into the same folder: the MLflow store records absolute
    artifact paths, so the folder cannot move. MLflow keeps one engine per database for the whole
    process, so while the module runs its engines hold no pooled connection, which would go on
    reading the database file the restore replaced.
    """

    folder: Path
    universe_path: Path
    cold: dict[tuple[str, str | None], str]

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"

    @property
    def _pristine(self) -> Path:
        return self.folder.with_name(f"{self.folder.name}.pristine")

    @classmethod
    @contextmanager
    def built(cls, folder: Path, write_universe: Callable[[Path], Path]) -> Iterator[MaterializedUniverse]:
        """`write_universe(folder)` writes the universe's bars and yaml and returns its path."""
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "NullPool")
            universe_path = write_universe(folder)
            universe = load_universe(universe_path)
            (folder / "instance").mkdir()
            with dg.instance_for_test(temp_dir=str(folder / "instance")) as instance:
                cold = materialize_everything(universe, instance, local_resources(folder / "artifacts", universe))
            built = cls(folder, universe_path, cold)
            shutil.copytree(folder, built._pristine)
            yield built

    @contextmanager
    def restored(self) -> Iterator[tuple[dg.DagsterInstance, dict]]:
        """The instance (open while the context is) and fresh resources on the restored folder."""
        shutil.rmtree(self.folder)
        shutil.copytree(self._pristine, self.folder)
        universe = load_universe(self.universe_path)
        with dg.instance_for_test(temp_dir=str(self.folder / "instance")) as instance:
            yield instance, local_resources(self.artifacts, universe)
