import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from intelligence_assets.defs.assets.market_data import FEATURES
from intelligence_assets.defs.assets.models import model_key
from intelligence_assets.defs.assets.target_analysis import TARGET_RANKINGS
from intelligence_assets.ml.families import load_family
from intelligence_assets.ml.trained_model import TrainedModel
from intelligence_assets.store.artifact_store import ArtifactNotFoundError, CorruptArtifactError, LocalArtifactStore
from intelligence_assets.store.artifacts import (
    INLINE_ARTIFACT_BYTES,
    TABLE_FILE,
    ArtifactHandle,
    Manifest,
    commit_artifact,
    find_intact_manifest,
    read_manifest,
    read_value,
    write_artifact,
)
from intelligence_assets.store.fingerprints import content_sha256
from intelligence_assets.store.keys import artifact_prefix, file_key, fingerprint_directory, manifest_key, pointer_key


def _store(store, prefix: str, value, fingerprint: str = "f1") -> None:
    write_artifact(store, prefix, value, Manifest(fingerprint=fingerprint, data_version=fingerprint, files={}))


def test_round_trips_tables_json_and_models(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    table = pl.DataFrame({"a": [1.0, 2.0, None], "b": ["x", "y", "z"]})
    features = artifact_prefix(FEATURES, "AAPL")
    _store(store, features, table)
    assert read_value(store, features).equals(table)
    ranking = artifact_prefix(TARGET_RANKINGS, "AAPL", "y_up_1b")
    _store(store, ranking, {"score": 0.1, "passed": True})
    assert read_value(store, ranking) == {"score": 0.1, "passed": True}

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = (x[:, 0] + rng.normal(size=400) > 0).astype(float)
    model = load_family("lightgbm")("classification", {"num_boost_round": 20}, seed=1).fit(
        x[:300], y[:300], x[300:], y[300:]
    )
    trained = artifact_prefix(model_key("lightgbm"), "AAPL", "y_up_1b")
    _store(store, trained, TrainedModel("lightgbm", {"features": ["a", "b", "c"]}, model))
    loaded = read_value(store, trained)
    assert loaded.trained and loaded.feature_names == ["a", "b", "c"]
    assert np.array_equal(loaded.predict(x), model.predict(x))
    # A small model is one object: its manifest holds its files, each with its checksum.
    assert store.list_keys(fingerprint_directory(trained, "f1")) == [manifest_key(trained, "f1")]
    assert {"summary.json", "model/model.txt"} <= read_manifest(store, trained, "f1").inline.keys()


def test_only_small_artifacts_that_are_not_tables_live_in_their_manifest(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    tiny_table = artifact_prefix(FEATURES, "AAPL")
    _store(store, tiny_table, pl.DataFrame({"a": [1.0]}))
    # A table stays a Parquet file any reader opens in the store, however small.
    assert store.exists(file_key(tiny_table, "f1", TABLE_FILE))
    assert read_manifest(store, tiny_table, "f1").inline == {}

    large = artifact_prefix(TARGET_RANKINGS, "AAPL", "y_up_1b")
    value = {"padding": "x" * (INLINE_ARTIFACT_BYTES + 1)}
    _store(store, large, value)
    assert store.exists(file_key(large, "f1", "result.json"))
    assert read_manifest(store, large, "f1").inline == {}
    assert read_value(store, large) == value

    small = artifact_prefix(TARGET_RANKINGS, "MSFT", "y_up_1b")
    _store(store, small, {"score": 1})
    assert store.list_keys(fingerprint_directory(small, "f1")) == [manifest_key(small, "f1")]


def test_a_corrupt_file_inside_a_manifest_is_detected_and_healed_by_a_rerun(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    ranking = artifact_prefix(TARGET_RANKINGS, "AAPL", "y_up_1b")
    _store(store, ranking, {"score": 1})
    raw = store.get_json(manifest_key(ranking, "f1"))
    raw["inline"]["result.json"] = raw["inline"]["result.json"][:-4] + "AAAA"
    store.put_bytes(manifest_key(ranking, "f1"), json.dumps(raw).encode())
    where = f"{manifest_key(ranking, 'f1')} (result.json inside it) is corrupt"
    with pytest.raises(CorruptArtifactError, match=re.escape(where)):
        read_value(store, ranking)
    manifest, why = find_intact_manifest(store, ranking, "f1")
    assert manifest is None and "corrupt" in why
    # The rerun that recomputes the fingerprint replaces the corrupt manifest; an intact one stays.
    commit_artifact(store, ranking, {"score": 1}, Manifest(fingerprint="f1", data_version="f1", files={}))
    assert read_value(store, ranking) == {"score": 1}
    kept = commit_artifact(store, ranking, {"score": 2}, Manifest(fingerprint="f1", data_version="f1", files={}))
    assert read_value(store, ranking) == {"score": 1} and kept.inline == read_manifest(store, ranking, "f1").inline


def test_manifests_written_before_files_could_live_inside_them_still_load(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    ranking = artifact_prefix(TARGET_RANKINGS, "AAPL", "y_up_1b")
    data = json.dumps({"score": 1}).encode()
    store.put_bytes(file_key(ranking, "f1", "result.json"), data)
    older = {
        "fingerprint": "f1",
        "data_version": "f1",
        "files": {"result.json": {"sha256": content_sha256(data), "bytes": len(data)}},
        "metadata": {},
        "checks": [],
        "provenance": {},
    }
    store.put_bytes(manifest_key(ranking, "f1"), json.dumps(older).encode())
    store.put_json(pointer_key(ranking), {"fingerprint": "f1", "data_version": "f1"})
    assert read_value(store, ranking) == {"score": 1}
    assert find_intact_manifest(store, ranking, "f1")[0] is not None


def test_the_pointer_moves_only_after_the_artifact_is_complete(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    features = artifact_prefix(FEATURES, "AAPL")
    _store(store, features, pl.DataFrame({"a": [1.0]}), fingerprint="old")
    _store(store, features, pl.DataFrame({"a": [2.0]}), fingerprint="new")
    handle = ArtifactHandle.current(store, features)
    assert handle.fingerprint == "new" and handle.load()["a"][0] == 2.0
    # Both fingerprints stay stored: going back to the old inputs is a cache hit.
    assert find_intact_manifest(store, features, "old")[0] is not None


def test_writes_are_atomic_and_leave_no_partial_files(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    store.put_bytes("a/b.json", b"{}")
    store.put_bytes("a/b.json", b'{"v": 2}')
    assert store.get_json("a/b.json") == {"v": 2}
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.json"]


def test_missing_corrupt_and_invalid_keys_fail_clearly(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    missing = artifact_prefix(FEATURES, "NOPE")
    with pytest.raises(ArtifactNotFoundError, match=re.escape(missing)):
        read_value(store, missing)
    bad = artifact_prefix(FEATURES, "BAD")
    _store(store, bad, pl.DataFrame({"a": [1.0, 2.0]}))
    store.put_bytes(file_key(bad, "f1", TABLE_FILE), b"not parquet at all")
    with pytest.raises(CorruptArtifactError, match=re.escape(f"{file_key(bad, 'f1', TABLE_FILE)} is corrupt")):
        read_value(store, bad)
    manifest, why = find_intact_manifest(store, bad, "f1")
    assert manifest is None and "corrupt" in why
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.put_bytes("../escape", b"x")
