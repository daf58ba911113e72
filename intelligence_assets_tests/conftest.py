"""Shared fixtures: a small synthetic universe on disk, written the way users write theirs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from intelligence_assets.config.universe import Universe, load_universe
from intelligence_assets.ml.synthetic import synthetic_bars

# Headless Chromium, once per test module that looks at a web UI.
from intelligence_assets_tests.support.browser import browser  # noqa: F401

# Real services, started once per session when a test asks for them.
from intelligence_assets_tests.support.mlflow_server import mlflow_server  # noqa: F401
from intelligence_assets_tests.support.postgres import postgres_database  # noqa: F401
from intelligence_assets_tests.support.services import (
    s3_artifact_store,  # noqa: F401
    s3_endpoint,  # noqa: F401
    s3_endpoint_with_auth,  # noqa: F401
    s3_fault_proxy,  # noqa: F401
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long-running modules first (stable otherwise). `make test`'s processes take whole files,
    those with the most tests first (pytest-xdist's order; a run with long modules strictly first
    was tried and was no faster), and among files of as many tests in collection order: a
    single-test module of minutes then starts before the quick single-test ones."""
    items.sort(key=lambda item: item.get_closest_marker("long_running") is None)


# SIGNAL carries a planted next-bar direction signal; NOISE is a pure random walk.
SMALL_SYMBOLS = {"SIGNAL": 1.0, "NOISE": 0.0}
SMALL_TARGETS = [
    {"name": "y_up_1b", "kind": "direction", "horizon": 1},
    {"name": "y_volatility_5b", "kind": "forward_volatility", "horizon": 5},
]


def write_small_universe(
    directory: Path, families: dict | None = None, n_bars: int = 1600, symbol_prefix: str = "", **overrides
) -> Path:
    """`symbol_prefix` renames SMALL_SYMBOLS (`W` + `SIGNAL`), for a test that shares the session's
    MLflow server, whose registered models are named by symbol."""
    bars = directory / "bars"
    bars.mkdir(parents=True, exist_ok=True)
    symbols = {f"{symbol_prefix}{symbol}": strength for symbol, strength in SMALL_SYMBOLS.items()}
    for seed, (symbol, strength) in enumerate(symbols.items()):
        synthetic_bars(n_bars=n_bars, seed=100 + seed, signal_strength=strength).write_parquet(
            bars / f"{symbol}.parquet"
        )
    config = {
        "symbols": list(symbols),
        "bars": {"directory": "bars", "min_history": 500},
        "targets": SMALL_TARGETS,
        "model_families": families
        or {
            "linear": {"params": {}},
            "lightgbm": {"params": {"num_boost_round": 80}},
            "xgboost": {"params": {"num_boost_round": 80}},
            "torch_mlp": {"params": {"max_epochs": 8, "hidden_sizes": [16]}},
        },
        "split": {"folds": 3, "embargo": 5, "test_fraction": 0.2, "min_train_rows": 150},
        "ranking": {"quick_lightgbm_rounds": 30},
        "selection": {"max_features": 8, "min_features": 3, "permutation_repeats": 2, "lightgbm_rounds": 60},
        # The planted synthetic signal (AUC ~0.65) is deliberately stronger than anything real
        # daily bars allow; the sentinel's real-data bar is exercised in its own test.
        "leakage_sentinel": {"max_auc": 0.8, "max_ic": 0.5},
        "seed": 3,
    }
    config.update(overrides)
    path = directory / "universe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def fresh_home(directory: Path) -> Path:
    """An empty DAGSTER_HOME with the embedded default's dagster.yaml, as `make demo` makes one."""
    import shutil

    from intelligence_assets.config.universe import REPOSITORY_ROOT

    home = directory / "home"
    home.mkdir(parents=True)
    shutil.copy(REPOSITORY_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def home_environment(home: Path, universe_path: Path) -> dict[str, str]:
    """The environment of a command (`make demo`, the CLI, the daemon) on `home` and a universe:
    the local deployment with the embedded MLflow store, whatever the calling shell set."""
    import os

    environment = {key: value for key, value in os.environ.items() if not key.startswith("INTELLIGENCE_")}
    return {
        **environment,
        "DAGSTER_HOME": str(home),
        "INTELLIGENCE_UNIVERSE": str(universe_path),
        "INTELLIGENCE_ARTIFACT_ROOT": str(home / "artifacts"),
    }


@pytest.fixture(scope="session")
def small_universe_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_universe(tmp_path_factory.mktemp("universe"))


@pytest.fixture(scope="session")
def small_universe(small_universe_path: Path) -> Universe:
    return load_universe(small_universe_path)
