"""Searching one cell's hyperparameters (a model family on one symbol x target) and the record
MLflow keeps of it: what `hyperparameter_search/<family>` does for each partition, without Dagster."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from intelligence_assets.cells import Log, ignore
from intelligence_assets.cells.training import Cell, Provenance, provenance_tags
from intelligence_assets.ml.dataset import build_dataset
from intelligence_assets.ml.hyperparameter_search import SearchResult, SearchSettings, search_hyperparameters
from intelligence_assets.ml.targets import label_horizon
from intelligence_assets.ml.walk_forward import WalkForwardProblem
from intelligence_assets.store.artifacts import ArtifactHandle, Manifest
from intelligence_assets.store.keys import file_key

if TYPE_CHECKING:
    # MLflow loads in seconds; the definitions import this module, the tracking runs after commit.
    from intelligence_assets.tracking.search_tracking import TrackedSearch
    from intelligence_assets.tracking.tracker import ModelTracker

# Beside a search's manifest once MLflow tracks it: a cache hit then links the same parent run.
SEARCH_TRACKING_RECORD_FILE = "mlflow_search_run.json"


@dataclass(frozen=True)
class SearchedCell:
    """A cell's search outcome: the stored value (None where ranking gated the target, so no
    model trains and nothing is searched) and what its materialization shows."""

    result: SearchResult | None
    metadata: dict[str, Any]

    @property
    def value(self) -> dict[str, Any]:
        """What the artifact stores and the cell's models read (`searched_params`)."""
        if self.result is None:
            return {"searched": False, "reason": self.metadata["decision"], "best_params": {}}
        return {"searched": True, **self.result.to_dict()}


def searched_params(search: Mapping[str, Any] | None, configured: Mapping[str, Any]) -> dict[str, Any]:
    """The params a cell's model trains with: the search's best over the configured ones, or the
    configured ones where there is no search (or it was gated)."""
    if not search or not search.get("searched"):
        return dict(configured)
    return {**configured, **search["searched_params"]}


def search_cell(
    cell: Cell,
    settings: SearchSettings,
    selection: Mapping[str, Any],
    features: Callable[[], pl.DataFrame],
    labels: Callable[[], pl.DataFrame],
    storage: str,
    study_name: str,
    log: Log = ignore,
) -> SearchedCell:
    """Search the cell's family over `settings.space` on the walk-forward folds of its selected
    features (never the held-out period), resuming the study `study_name` in `storage`.

    `selection` is the cell's `feature_sets` result; a target that ranking gated is not searched.
    """
    if selection["gated"]:
        return SearchedCell(None, {"searched": False, "decision": selection["reason"]})
    universe, spec = cell.universe, cell.spec
    dataset = build_dataset(features(), labels(), selection["selected"])
    problem = WalkForwardProblem.from_dataset(dataset, spec.task, label_horizon(spec), universe.split, universe.seed)
    configured = universe.model_families[cell.family].params
    result = search_hyperparameters(problem, cell.family, configured, settings, storage, study_name, log=log)
    log(
        f"{cell.family} {cell.symbol} {cell.target}: best mean fold score {result.best_value:.4f} "
        f"(trial {result.best_trial}) with {result.searched_params}"
    )
    metadata = {
        "searched": True,
        "study": study_name,
        "best_value": result.best_value,
        "best_trial": result.best_trial,
        "searched_params": ", ".join(f"{name}={value!r}" for name, value in result.searched_params.items()),
        "trials_complete": result.count("complete"),
        "trials_pruned": result.count("pruned"),
        "trials_failed": result.count("failed"),
        "feature_count": len(selection["selected"]),
    }
    return SearchedCell(result, metadata)


def search_settings_config(settings: SearchSettings) -> dict[str, Any]:
    """The search's settings as its fingerprint hashes them: `workers` only changes how fast."""
    values = settings.model_dump(mode="json")
    values.pop("workers", None)
    return values


def track_search_cell(
    cell: Cell,
    tracker: Callable[[], ModelTracker],
    stored: ArtifactHandle,
    manifest: Manifest,
    searched: Mapping[str, Any] | None,
    provenance: Provenance,
    log: Log = ignore,
) -> TrackedSearch | None:
    """Log a committed search to MLflow (a parent run, a child run per trial), once per
    fingerprint, and keep where beside the artifact. `searched` is the value just computed, or
    None on a cache hit (then loaded from `stored` only if MLflow has not tracked it yet). None
    for a gated cell: nothing was searched."""
    from intelligence_assets.tracking.search_tracking import SearchRecord, TrackedSearch, track_search

    record_key = file_key(stored.prefix, stored.fingerprint, SEARCH_TRACKING_RECORD_FILE)
    if stored.store.exists(record_key):
        return TrackedSearch(**stored.store.get_json(record_key))
    value = searched if searched is not None else stored.load()
    if not value.get("searched"):
        return None
    settings = cell.universe.model_families[cell.family].search
    assert settings is not None, f"model family {cell.family!r} declares no search"
    record = SearchRecord(
        family=cell.family,
        symbol=cell.symbol,
        target=cell.target,
        fingerprint=stored.fingerprint,
        result=SearchResult.from_dict({key: item for key, item in value.items() if key != "searched"}),
        settings=settings.model_dump(mode="json"),
        provenance_tags=provenance_tags(stored, manifest, provenance),
    )
    tracked = track_search(tracker(), record, log=log)
    stored.store.put_json(record_key, asdict(tracked))
    return tracked
