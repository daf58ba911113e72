from pathlib import Path

import pytest
import yaml

from intelligence_assets.universe import DEFAULT_UNIVERSE_PATH, UniverseError, load_universe


def test_bundled_universe_loads_with_every_target_kind() -> None:
    universe = load_universe(DEFAULT_UNIVERSE_PATH)
    assert len(universe.symbols) >= 6
    assert {t.kind for t in universe.targets} == {"direction", "barrier", "forward_return", "forward_volatility"}
    assert {t.side for t in universe.targets if t.kind == "barrier"} == {"peak", "valley"}
    for symbol in universe.symbols:
        assert (universe.bars_directory / f"{symbol}.parquet").is_file(), symbol


def _write(tmp_path: Path, mutate) -> Path:
    config = yaml.safe_load(DEFAULT_UNIVERSE_PATH.read_text())
    mutate(config)
    path = tmp_path / "universe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["targets"][0].update(horizon=-5), ["targets.0", "horizon", "-5"]),
        (lambda c: c["targets"].append({"name": "y_bad", "kind": "sideways", "horizon": 3}), ["targets.6", "sideways"]),
        (lambda c: c["targets"][1].update(name="y|up"), ["targets.1", "y|up"]),
        (lambda c: c["model_families"].update(random_forest={"params": {}}), ["model_families", "random_forest"]),
        (lambda c: c["split"].update(folds=1), ["split.folds", "1"]),
        (lambda c: c.update(symbols=["AAPL", "AAPL"]), ["symbols", "AAPL"]),
        (lambda c: c["ranking"].update(min_auc_lift="high"), ["ranking.min_auc_lift", "high"]),
        (lambda c: c.update(colour="blue"), ["colour", "blue"]),
        (lambda c: c["kubernetes"]["cpu_step"].update(cpu="two"), ["kubernetes.cpu_step.cpu", "two"]),
    ],
)
def test_bad_config_fails_at_load_naming_field_and_value(tmp_path: Path, mutate, expected: list[str]) -> None:
    with pytest.raises(UniverseError) as error:
        load_universe(_write(tmp_path, mutate))
    message = str(error.value)
    for fragment in expected:
        assert fragment in message, message


def test_missing_and_malformed_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(UniverseError, match="not found"):
        load_universe(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("symbols: [A, B\n")
    with pytest.raises(UniverseError, match="not valid YAML"):
        load_universe(broken)


def test_which_families_train_on_a_gpu(tmp_path: Path) -> None:
    config = yaml.safe_load(DEFAULT_UNIVERSE_PATH.read_text())
    config["bars"]["directory"] = str(DEFAULT_UNIVERSE_PATH.parent / "bars")
    config["model_families"] = {"torch_tcn": {}, "xgboost": {"gpu": True}, "lightgbm": {}, "torch_mlp": {"gpu": False}}
    path = tmp_path / "universe.yaml"
    path.write_text(yaml.safe_dump(config))
    universe = load_universe(path)
    assert [name for name in universe.model_families if universe.trains_on_gpu(name)] == ["torch_tcn", "xgboost"]

    config["model_families"] = {"lightgbm": {"gpu": True}}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(UniverseError, match="model_families.*lightgbm.*cannot use a GPU"):
        load_universe(path)
