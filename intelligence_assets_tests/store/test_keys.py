"""The store's layout, spelled out once: a store written by an earlier version must still be read
(pointers found, fingerprints reused), so these keys may not change."""

import dagster as dg
import pytest

from intelligence_assets.defs.resources.io_manager import partition_prefix
from intelligence_assets.store import keys


def test_the_layout_of_an_asset_partition() -> None:
    model = keys.artifact_prefix(["models", "linear"], "SIGNAL", "y_up_1b")
    assert model == "models/linear/SIGNAL/y_up_1b"
    assert keys.artifact_prefix("features", "SIGNAL") == "features/SIGNAL"
    assert keys.artifact_prefix(["model_leaderboard"]) == "model_leaderboard"
    assert keys.pointer_key(model) == "models/linear/SIGNAL/y_up_1b/current.json"
    assert keys.failure_key(model) == "models/linear/SIGNAL/y_up_1b/failure.json"
    assert keys.fingerprint_directory(model, "abc") == "models/linear/SIGNAL/y_up_1b/abc"
    assert keys.manifest_key(model, "abc") == "models/linear/SIGNAL/y_up_1b/abc/manifest.json"
    assert keys.claim_key(model, "abc") == "models/linear/SIGNAL/y_up_1b/abc/claim.json"
    assert keys.file_key(model, "abc", "model/model.json") == "models/linear/SIGNAL/y_up_1b/abc/model/model.json"
    assert keys.pointer_prefix("models/linear/SIGNAL/y_up_1b/current.json") == model
    assert keys.pointer_prefix("model_leaderboard/current.json") == "model_leaderboard"
    for not_a_pointer in ("current.json", "features/SIGNAL/abc/manifest.json", "features/SIGNAL/xcurrent.json"):
        assert keys.pointer_prefix(not_a_pointer) is None, not_a_pointer
    with pytest.raises(ValueError, match="needs its symbol"):
        keys.artifact_prefix("labels", target="y_up_1b")


def test_dagster_partition_keys_map_onto_the_same_layout() -> None:
    cell = dg.MultiPartitionKey({"symbol": "SIGNAL", "target": "y_up_1b"})
    assert partition_prefix(dg.AssetKey(["models", "linear"]), cell) == keys.artifact_prefix(
        ["models", "linear"], "SIGNAL", "y_up_1b"
    )
    assert partition_prefix(dg.AssetKey("features"), "SIGNAL") == keys.artifact_prefix("features", "SIGNAL")
    assert partition_prefix(dg.AssetKey("model_leaderboard"), None) == "model_leaderboard"
