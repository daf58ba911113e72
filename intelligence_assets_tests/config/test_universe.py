from pathlib import Path

import pytest
import yaml

from intelligence_assets.config.universe import DEFAULT_UNIVERSE_PATH, UniverseError, load_universe


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
        (
            lambda c: c["selection"].update(min_features=20, max_features=15),
            ["selection: min_features (20) must not exceed max_features (15)"],
        ),
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


@pytest.mark.parametrize(
    ("family", "misspelt", "expected"),
    [
        # LightGBM's accepted names are hundreds (with aliases): the closest first, then where to read them all.
        ("lightgbm", "num_leafs", ["closest: ", "num_leaves", "lightgbm.readthedocs.io"]),
        ("xgboost", "max_dept", ["closest: max_depth", "xgboost.readthedocs.io"]),
        # A family's own short list is given in full.
        ("torch_mlp", "hiden_sizes", ["closest: hidden_sizes", "accepted: batch_size, device, dropout, hidden_sizes"]),
        (
            "torch_tcn",
            "kernal_size",
            ["closest: kernel_size", "accepted: batch_size, channels, device, dropout, kernel_size"],
        ),
        ("linear", "alpah", ["closest: alpha", "accepted: C, alpha, max_iter"]),
    ],
)
def test_a_misspelt_family_parameter_fails_at_load_naming_path_name_and_accepted_names(
    tmp_path: Path, family: str, misspelt: str, expected: list[str]
) -> None:
    path = _write(tmp_path, lambda c: c["model_families"][family].setdefault("params", {}).update({misspelt: 1}))
    with pytest.raises(UniverseError) as error:
        load_universe(path)
    message = str(error.value)
    assert f"model_families.{family}.params: unknown parameter {misspelt!r}; " in message, message
    for fragment in expected:
        assert fragment in message, message


def test_family_parameters_under_any_name_or_alias_their_library_accepts_load(tmp_path: Path) -> None:
    accepted = {
        "lightgbm": {
            "num_leaves": 7,
            "learning_rate": 0.1,
            "min_data_in_leaf": 20,
            "num_leaf": 7,
            "eta": 0.1,
            "min_child_samples": 20,
            "lambda_l1": 0.0,
            "max_bin": 63,
        },
        "xgboost": {
            "eta": 0.1,
            "lambda": 1.0,
            "alpha": 0.0,
            "gamma": 0.0,
            "max_leaves": 8,
            "booster": "dart",
            "rate_drop": 0.1,
        },
        "torch_mlp": {"dropout": 0.2, "weight_decay": 0.0, "num_threads": 1},
        "torch_tcn": {"kernel_size": 2, "mixed_precision": False},
        "linear": {"C": 0.5, "max_iter": 200},
    }

    def add(config: dict) -> None:
        for family, params in accepted.items():
            config["model_families"][family].setdefault("params", {}).update(params)

    universe = load_universe(_write(tmp_path, add))
    for family, params in accepted.items():
        assert params.items() <= universe.model_families[family].params.items()


def test_every_problem_of_a_file_is_one_line_of_the_error(tmp_path: Path) -> None:
    def spoil(config: dict) -> None:
        config["model_families"]["lightgbm"]["params"].update(num_leafs=7, max_dept=3)
        config["selection"].update(min_features=20, max_features=15)

    with pytest.raises(UniverseError) as error:
        load_universe(_write(tmp_path, spoil))
    header, *problems = str(error.value).splitlines()
    assert header.startswith("invalid universe file ")
    assert [line.split(": ")[0].strip() for line in problems] == ["model_families.lightgbm.params"] * 2 + [
        "selection"
    ], problems
    assert "'max_dept'" in problems[0] and "'num_leafs'" in problems[1]


def test_a_settings_fields_docstring_is_its_description() -> None:
    """Settings describe their fields in docstrings (`use_attribute_docstrings`), read from the
    source when the class is made: a field's docstring must reach its schema."""
    from intelligence_assets.config.universe import AutomationSettings, BarsSettings
    from intelligence_assets.tracking.promotion import PromotionSettings

    schema = AutomationSettings.model_json_schema()["properties"]["decay_min_rows"]
    assert schema == {
        "default": 30,
        "description": "Fewer new labelled rows than this: too early to judge decay.",
        "minimum": 5,
        "title": "Decay Min Rows",
        "type": "integer",
    }
    assert BarsSettings.model_fields["gaps_block"].description == (
        "Whether a gap flagged by `no_long_gaps` blocks the symbol's downstream assets."
    )
    assert all(field.description for field in PromotionSettings.model_fields.values())
