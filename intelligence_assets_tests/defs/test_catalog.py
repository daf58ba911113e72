"""What the asset catalog tells an auditor about every asset: who owns it and what it is."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from intelligence_assets.config.universe import UniverseError, load_universe
from intelligence_assets.definitions import build_assets
from intelligence_assets_tests.conftest import write_small_universe


def test_every_asset_has_the_universes_owners_and_a_description(tmp_path: Path) -> None:
    path = write_small_universe(tmp_path, owners=["team:quant-research", "ana@example.com"])
    specs = [spec for assets in build_assets(load_universe(path)) for spec in assets.specs]
    assert len(specs) > 10
    for spec in specs:
        assert spec.owners == ["team:quant-research", "ana@example.com"], spec.key
        assert spec.description and len(spec.description) > 20, spec.key


def test_an_owner_dagster_would_refuse_fails_at_load(tmp_path: Path) -> None:
    path = write_small_universe(tmp_path)
    config = yaml.safe_load(path.read_text())
    config["owners"] = ["quant research"]
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(UniverseError, match=r"owners: .*'quant research'.*team:<name>"):
        load_universe(path)
