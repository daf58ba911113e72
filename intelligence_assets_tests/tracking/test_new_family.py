"""Adding a model family is one module plus one line in universe.yaml: a family written only in
the tests (family_modules/least_squares.py) is enabled by the universe, presented with its own
kinds, and logged to MLflow in its declared flavour and loaded back, with no other module
knowing its name."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import intelligence_assets.ml.families as families
from intelligence_assets.config.universe import UniverseError, load_universe
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.ml.families import load_family
from intelligence_assets.ml.families.base import MLFLOW_FLAVOURS
from intelligence_assets.ml.trained_model import TrainedModel
from intelligence_assets.tracking import names
from intelligence_assets.tracking.flavours import SAVERS, pyfunc_predict
from intelligence_assets.tracking.tracker import ModelTracker, TrainingRecord
from intelligence_assets_tests.conftest import write_small_universe

FAMILY_MODULES = Path(__file__).parent / "family_modules"
NEW_FAMILY = "least_squares"
FEATURES = ["momentum", "volatility", "volume_z"]
TARGET = "y_up_1b"


@pytest.fixture(autouse=True)
def quiet_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture
def new_family(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The test family's name, its module discoverable as if it lay in intelligence_assets/ml/families/:
    its folder joins the families package's search path, which is where discovery looks."""
    monkeypatch.setattr(families, "__path__", [*families.__path__, str(FAMILY_MODULES)])
    yield NEW_FAMILY
    # Forgotten again, so that no other test finds a family that the repository does not have.
    sys.modules.pop(f"{families.__name__}.{NEW_FAMILY}", None)
    if hasattr(families, NEW_FAMILY):
        delattr(families, NEW_FAMILY)


def universe_with(directory: Path, family_settings: dict) -> Path:
    return write_small_universe(directory, families={"linear": {"params": {}}, NEW_FAMILY: family_settings}, n_bars=600)


def rows(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(900, len(FEATURES)))
    return x, (x[:, 0] - 0.5 * x[:, 1] + rng.normal(size=900) > 0).astype(float)


def test_every_flavour_a_family_may_declare_has_a_saver() -> None:
    assert set(SAVERS) == set(MLFLOW_FLAVOURS)


def test_one_line_in_the_universe_enables_the_family_module(new_family: str, tmp_path: Path) -> None:
    universe = load_universe(universe_with(tmp_path / "enabled", {"params": {}}))
    assert new_family in universe.model_families
    family = load_family(new_family)
    assert (family.kinds, family.mlflow_flavour) == (("numpy",), "python_function")
    # Its accepted params are checked at load like those of the repository's own families.
    with pytest.raises(UniverseError, match="unknown parameter 'alpha'"):
        load_universe(universe_with(tmp_path / "misspelt", {"params": {"alpha": 1.0}}))


def test_without_its_module_the_universe_refuses_the_family(tmp_path: Path) -> None:
    with pytest.raises(UniverseError, match=f"unknown model families \\['{NEW_FAMILY}'\\]"):
        load_universe(universe_with(tmp_path, {"params": {}}))


def test_the_family_asset_shows_the_kinds_the_family_declares(new_family: str, tmp_path: Path) -> None:
    from intelligence_assets.defs.assets.models import build_model_asset

    universe = load_universe(universe_with(tmp_path, {"params": {}}))
    (spec,) = build_model_asset(new_family, universe).specs
    assert set(spec.kinds) == {"numpy"}


def test_the_family_is_tracked_in_its_declared_flavour_and_loads_back(new_family: str, tmp_path: Path) -> None:
    x, y = rows(seed=11)
    model = load_family(new_family)("classification", {}, 5).fit(x[:600], y[:600], x[600:750], y[600:750])
    summary = {
        "task": "classification",
        "features": FEATURES,
        "metrics": {"auc": 0.6},
        "test_rows": 150,
        "test_start": "2024-01-01T00:00:00+00:00",
    }
    record = TrainingRecord(
        symbol="SIGNAL",
        target=TARGET,
        trained_model=TrainedModel(new_family, summary, model),
        score_metric="auc",
        eligible=True,
        provenance_tags={
            names.FINGERPRINT_TAG: uuid.uuid4().hex,
            names.DAGSTER_ASSET_TAG: model_key(new_family).to_user_string(),
        },
        config={"params": {}},
    )
    tracker = ModelTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment_root=tmp_path / "artifacts")

    tracked = tracker.track_training(record)

    (version,) = tracker.versions(tracked.registered_model)
    assert version.tags[names.FAMILY_TAG] == new_family
    loaded = tracker.load_model(version)
    assert set(loaded.metadata.flavors) == {"python_function"}
    # The pyfunc's input arrives as a DataFrame, whose column-major values may round the matrix
    # product differently in the last bit.
    np.testing.assert_allclose(pyfunc_predict(loaded, FEATURES, x[750:]), model.predict(x[750:]), rtol=0, atol=1e-12)
    requirements = Path(
        tracker.client.download_artifacts(
            tracked.run_id, f"{names.MODEL_ARTIFACT_PATH}/requirements.txt", str(tmp_path)
        )
    )
    assert {"numpy", "pandas", "cloudpickle", "intelligence-assets"} <= set(requirements.read_text().split())
    features = json.loads(
        Path(tracker.client.download_artifacts(tracked.run_id, "features.json", str(tmp_path))).read_text()
    )
    assert features == {"features": FEATURES, "importance": model.feature_importance().tolist()}
