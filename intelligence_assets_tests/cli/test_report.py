"""`make report` on a small materialized universe: re-scoring each stored model on its own test
rows reproduces the held-out metric it was stored with, and the report says what it found."""

from __future__ import annotations

import math
from pathlib import Path

import dagster as dg
import pytest

from intelligence_assets.cli.report import build_report, score_cell
from intelligence_assets.config.universe import load_universe
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.store.artifact_store import LocalArtifactStore
from intelligence_assets.store.artifacts import read_value
from intelligence_assets.store.keys import artifact_prefix
from intelligence_assets_tests.conftest import write_small_universe
from intelligence_assets_tests.support.pipeline import local_resources, materialize_everything


def test_report_rescores_stored_models_and_writes_its_sections(tmp_path: Path) -> None:
    universe_path = write_small_universe(tmp_path / "universe", families={"linear": {"params": {}}})
    universe = load_universe(universe_path)
    store = LocalArtifactStore(tmp_path / "artifacts")
    with pytest.raises(SystemExit, match="run `make demo` first"):
        build_report(store, universe, tmp_path / "report", cost_bps=5)
    with dg.instance_for_test() as instance:
        materialize_everything(universe, instance, local_resources(tmp_path / "artifacts", universe))

    checked = 0
    for symbol in universe.symbols:
        for target in universe.target_names:
            cell = score_cell(store, universe, symbol, target, cost=0.0005)
            stored = read_value(store, artifact_prefix(model_key("linear"), symbol, target))
            if not stored.trained:
                assert cell.models == []
                continue
            (row,) = [r for r in cell.rows if r.name == "linear"]
            metric = "auc" if cell.task == "classification" else "ic"
            assert math.isclose(row.score, stored.summary["metrics"][metric], abs_tol=1e-9)
            assert cell.test_rows == stored.summary["test_rows"]
            assert any(r.name.startswith("baseline: linear") for r in cell.rows)
            checked += 1
    assert checked >= 1

    path = build_report(store, universe, tmp_path / "report", cost_bps=5)
    text = path.read_text()
    assert "**Headline.**" in text and all(f"## {symbol}" in text for symbol in universe.symbols)
    assert (tmp_path / "report" / "ranking.png").stat().st_size > 1000
