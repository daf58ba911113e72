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


# ---------------------------------------------------------------- values of family params


@pytest.mark.parametrize(
    ("family", "parameter", "value", "expected"),
    [
        # Settings a family reads itself: a wrong type, then a number out of bounds.
        ("torch_mlp", "hidden_sizes", 64, ["must be a valid list", "hidden_sizes: Widths of the hidden layers"]),
        ("torch_mlp", "max_epochs", "sixty", ["must be a valid integer"]),
        ("torch_mlp", "batch_size", 0, ["must be greater than or equal to 1"]),
        ("torch_mlp", "dropout", 1.5, ["must be less than 1"]),
        ("torch_tcn", "mixed_precision", "no", ["must be a valid boolean"]),
        ("torch_tcn", "window", 0, ["must be greater than or equal to 1"]),
        ("torch_tcn", "levels", -1, ["must be greater than or equal to 1"]),
        ("torch_tcn", "learning_rate", -0.001, ["must be greater than 0"]),
        ("lightgbm", "early_stopping_rounds", "thirty", ["must be a valid integer"]),
        ("lightgbm", "num_boost_round", -5, ["must be greater than or equal to 1"]),
        ("xgboost", "num_boost_round", True, ["must be a number, not the boolean True"]),
        ("xgboost", "early_stopping_rounds", 0, ["must be greater than or equal to 1"]),
        ("linear", "C", "one", ["must be a valid number"]),
        ("linear", "max_iter", 2.5, ["must be a valid integer"]),
        # Params handed to the library, judged by the library itself.
        ("lightgbm", "num_leaves", "fifteen", ["LightGBM refuses it", "num_leaves should be of type int"]),
        ("lightgbm", "learning_rate", -0.05, ["LightGBM refuses it: it requires learning_rate > 0.0"]),
        ("xgboost", "max_depth", -4, ["XGBoost refuses it", "max_depth should be greater equal to 0"]),
        ("xgboost", "booster", "gblinea", ["XGBoost refuses it", "gblinea"]),
        ("linear", "C", -1, ["scikit-learn refuses it", "'C' parameter of LogisticRegression", "(0.0, inf]"]),
        ("linear", "alpha", -2.0, ["scikit-learn refuses it", "'alpha' parameter of Ridge"]),
    ],
)
def test_a_bad_family_parameter_value_fails_at_load_naming_path_parameter_and_value(
    tmp_path: Path, family: str, parameter: str, value, expected: list[str]
) -> None:
    path = _write(tmp_path, lambda c: c["model_families"][family].setdefault("params", {}).update({parameter: value}))
    with pytest.raises(UniverseError) as error:
        load_universe(path)
    header, *problems = str(error.value).splitlines()
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"  model_families.{family}.params: parameter {parameter!r} = {value!r}: "), problems
    for fragment in expected:
        assert fragment in problems[0], problems[0]


def test_each_bad_value_is_its_own_line_beside_unknown_names(tmp_path: Path) -> None:
    def spoil(config: dict) -> None:
        config["model_families"]["torch_mlp"]["params"].update(hidden_sizes=64, batch_size=0)
        config["model_families"]["lightgbm"]["params"].update(num_leafs=7, num_leaves=1, bagging_fraction=2.0)

    with pytest.raises(UniverseError) as error:
        load_universe(_write(tmp_path, spoil))
    _, *problems = str(error.value).splitlines()
    named = sorted((line.split(": ")[0].strip(), line.split("'")[1]) for line in problems)
    assert named == [
        ("model_families.lightgbm.params", "bagging_fraction"),
        ("model_families.lightgbm.params", "num_leafs"),
        ("model_families.lightgbm.params", "num_leaves"),
        ("model_families.torch_mlp.params", "batch_size"),
        ("model_families.torch_mlp.params", "hidden_sizes"),
    ], problems


# Family params that must keep loading: the bundled file's, those of the tests' small universe,
# of the GPU benchmark and of data/universe.yaml's GPU-node advice, and names and aliases of each
# library with valid values.
VALID_EXAMPLES = [
    {
        "linear": {"params": {}},
        "lightgbm": {"params": {"num_boost_round": 80}},
        "xgboost": {"params": {"num_boost_round": 80}},
        "torch_mlp": {"params": {"max_epochs": 8, "hidden_sizes": [16]}},
    },
    {
        "torch_mlp": {"params": {"hidden_sizes": [256, 128], "batch_size": 1024, "max_epochs": 20, "patience": 1000}},
        "torch_tcn": {
            "params": {
                "window": 64,
                "channels": 128,
                "levels": 4,
                "batch_size": 4096,
                "max_epochs": 30,
                "patience": 1000,
            }
        },
        "xgboost": {"params": {"num_boost_round": 300, "early_stopping_rounds": 1000, "max_depth": 8}},
    },
    {
        "lightgbm": {"params": {"num_leaf": 7, "eta": 0.1, "min_child_samples": 20, "lambda_l1": 0.0, "max_bin": 63}},
        "xgboost": {"params": {"eta": 0.1, "lambda": 1.0, "gamma": 0.0, "max_leaves": 8, "booster": "dart"}},
        "torch_mlp": {"params": {"dropout": 0.2, "weight_decay": 0.0, "num_threads": None, "hidden_sizes": []}},
        "torch_tcn": {"params": {"kernel_size": 2, "mixed_precision": False, "learning_rate": "1e-3"}},
        "linear": {"params": {"C": 0.5, "max_iter": 200, "alpha": 0}},
    },
]


def test_the_bundled_universe_and_valid_examples_load_with_every_value_checked(tmp_path: Path) -> None:
    from intelligence_assets.ml.families import load_family

    bundled = load_universe(DEFAULT_UNIVERSE_PATH)
    for name, settings in bundled.model_families.items():
        assert load_family(name).invalid_params(settings.params) == {}, name
    for index, families in enumerate(VALID_EXAMPLES):
        directory = tmp_path / str(index)
        directory.mkdir()
        universe = load_universe(_write(directory, lambda c, families=families: c.update(model_families=families)))
        for name, settings in universe.model_families.items():
            assert settings.params == families[name]["params"]
            assert load_family(name).invalid_params(settings.params) == {}, name


def test_a_universe_of_every_familys_default_params_loads(tmp_path: Path) -> None:
    from intelligence_assets.ml.families import load_family
    from intelligence_assets.ml.families.base import TASKS

    names = ["linear", "lightgbm", "xgboost", "torch_mlp", "torch_tcn"]
    defaults = {name: dict(load_family(name).default_params) for name in names}
    assert all(defaults.values())
    universe = load_universe(
        _write(tmp_path, lambda c: c.update(model_families={name: {"params": defaults[name]} for name in names}))
    )
    for name in names:
        assert universe.model_families[name].params == defaults[name]
        # Values equal to the defaults are not asked of the library at load: here they are.
        assert load_family(name).library_problems(defaults[name], TASKS) == {}, name


# ---------------------------------------------------------------- symbols


@pytest.mark.parametrize(
    ("symbol", "expected"),
    [
        ("BTC/USDT", ["path separator, /", "one path segment", "use e.g. 'BTC-USDT'"]),
        ("EUR\\USD", ["path separator, \\", "use e.g. 'EUR-USD'"]),
        ("..", ["'..' is a directory, not a name"]),
        (".", ["'.' is a directory, not a name"]),
        ("AB\x00C", ["control or unprintable characters U+0000", "use e.g. 'AB-C'"]),
        ("NAS\tDAQ", ["U+0009", "use e.g. 'NAS-DAQ'"]),
        ("EUR|USD", ["partition keys may not contain ['|']", "use e.g. 'EUR-USD'"]),
        ("", ["a symbol must not be empty"]),
    ],
)
def test_a_symbol_that_is_not_one_safe_path_segment_fails_at_load(
    tmp_path: Path, symbol: str, expected: list[str]
) -> None:
    with pytest.raises(UniverseError) as error:
        load_universe(_write(tmp_path, lambda c: c["symbols"].append(symbol)))
    _, *problems = str(error.value).splitlines()
    assert len(problems) == 1, problems
    assert problems[0].startswith("  symbols.6: "), problems
    assert repr(symbol) in problems[0]
    for fragment in expected:
        assert fragment in problems[0], problems[0]


def test_ordinary_symbols_load(tmp_path: Path) -> None:
    from intelligence_assets.config.universe import symbol_problem

    symbols = ["BRK.B", "EURUSD", "BTC-USDT", "^GSPC", "7203.T", "ÖMV", "..."]
    assert [symbol_problem(symbol) for symbol in symbols] == [None] * len(symbols)
    assert load_universe(_write(tmp_path, lambda c: c.update(symbols=symbols))).symbols == symbols


# ---------------------------------------------------------------- min_history
