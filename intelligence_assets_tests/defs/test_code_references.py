"""Every asset names its source in the UI: the file and line here, and with INTELLIGENCE_GIT_URL
set, a link to that line at the commit that is running."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg

from intelligence_assets.config.code_revision import code_revision
from intelligence_assets.config.universe import REPOSITORY_ROOT, load_universe
from intelligence_assets.definitions import build_assets, with_code_references

GIT_URL = "https://github.com/example/intelligence-assets"


def references(assets: list[dg.AssetsDefinition]) -> dict[str, object]:
    found = {}
    for assets_def in assets:
        for key in assets_def.keys:
            (reference,) = assets_def.metadata_by_key[key]["dagster/code_references"].code_references
            found[key.to_user_string()] = reference
    return found


def test_each_asset_points_at_its_own_source_line() -> None:
    universe = load_universe()
    local = references(with_code_references(build_assets(universe), None))
    assert set(local) == {key.to_user_string() for assets_def in build_assets(universe) for key in assets_def.keys}
    for asset, reference in local.items():
        path = Path(reference.file_path)
        assert path.is_file() and path.is_relative_to(REPOSITORY_ROOT / "intelligence_assets"), asset
        assert 0 < reference.line_number <= len(path.read_text().splitlines()), asset

    linked = references(with_code_references(build_assets(universe), GIT_URL))
    commit = code_revision().commit
    assert commit is not None  # the tests run from a checkout
    for asset, reference in linked.items():
        match = re.fullmatch(rf"{re.escape(GIT_URL)}/tree/{commit}/(.+)#L(\d+)", reference.url)
        assert match, reference.url
        assert REPOSITORY_ROOT / match.group(1) == Path(local[asset].file_path)
        assert int(match.group(2)) == local[asset].line_number
