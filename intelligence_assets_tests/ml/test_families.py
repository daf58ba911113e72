"""Model families: the shared contract, on small synthetic data with a planted linear signal."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from intelligence_assets.ml.families import ModelFamily, load_family
from intelligence_assets.ml.families.base import MLFLOW_FLAVOURS

FAMILIES = ["lightgbm", "xgboost", "torch_mlp", "torch_tcn", "linear"]
TASKS = ["classification", "regression"]
EARLY_STOPPING_FAMILIES = ["lightgbm", "xgboost", "torch_mlp", "torch_tcn"]
SEEDED_FAMILIES = ["lightgbm", "xgboost", "torch_mlp", "torch_tcn"]  # the linear solvers are seed-free
NATIVE_FILES = {
    "lightgbm": "model.txt",
    "xgboost": "model.ubj",
    "torch_mlp": "model.pt",
    "torch_tcn": "model.pt",
    "linear": "model.json",
}
# Patience defaults: the curve of a run that stopped early is exactly this much longer than best_iteration.
PATIENCE = {"lightgbm": 30, "xgboost": 30, "torch_mlp": 10, "torch_tcn": 8}
MAX_ITERATIONS = {"lightgbm": 300, "xgboost": 300, "torch_mlp": 100, "torch_tcn": 60}

# One thread for the tree libraries in tests: on data this small a second OpenMP thread gains
# nothing, and on a busy 2-core machine spinning threads made single fits up to 50x slower.
# test_default_thread_settings_fit covers the families' own defaults.
TEST_PARAMS = {
    "lightgbm": {"num_threads": 1},
    "xgboost": {"nthread": 1},
    "torch_mlp": {},
    "torch_tcn": {"window": 8, "channels": 16},
    "linear": {},
}

N_FEATURES = 10
PLANTED_WEIGHTS = np.array([1.0, -0.8, 0.6] + [0.0] * (N_FEATURES - 3))
N_TRAIN, N_VALID, N_TEST = 2000, 600, 4000


def make_data(task: str, labels: str, n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features ~ N(0, 1); the target follows x @ PLANTED_WEIGHTS plus noise ("signal"), or
    ignores x entirely ("noise")."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_rows, N_FEATURES))
    driver = x @ PLANTED_WEIGHTS if labels == "signal" else np.zeros(n_rows)
    latent = driver + rng.standard_normal(n_rows)
    y = (latent > 0).astype(np.float64) if task == "classification" else latent
    return x, y


def split_data(task: str, labels: str, seed: int = 0) -> dict[str, np.ndarray]:
    x_train, y_train = make_data(task, labels, N_TRAIN, seed)
    x_valid, y_valid = make_data(task, labels, N_VALID, seed + 1)
    return {"x_train": x_train, "y_train": y_train, "x_valid": x_valid, "y_valid": y_valid}


def fresh_sample(task: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows no model has seen (their own RNG seed)."""
    return make_data(task, labels, N_TEST, seed=1_000)


def fit_family(family: str, task: str, labels: str, seed: int = 11, params: dict | None = None) -> ModelFamily:
    data = split_data(task, labels)
    model = load_family(family)(task, TEST_PARAMS[family] | (params or {}), seed)
    returned = model.fit(data["x_train"], data["y_train"], data["x_valid"], data["y_valid"])
    assert returned is model
    return model


@functools.cache
def fitted(family: str, task: str, labels: str) -> ModelFamily:
    """One fit per combination, shared by the tests that only read the fitted model."""
    return fit_family(family, task, labels)


def skill(task: str, y_true: np.ndarray, prediction: np.ndarray) -> float:
    """AUC for classification, Pearson correlation for regression."""
    if task == "classification":
        return float(roc_auc_score(y_true, prediction))
    return float(np.corrcoef(y_true, prediction)[0, 1])


# ---------------------------------------------------------------- registry


@pytest.mark.parametrize("family", FAMILIES)
def test_load_family_returns_the_named_family(family):
    family_class = load_family(family)
    assert issubclass(family_class, ModelFamily)
    assert family_class.name == family
    assert family_class.version == "1"
    assert family_class.uses_gpu is family.startswith("torch")
    assert family_class.can_use_gpu is (family in ("xgboost", "torch_mlp", "torch_tcn"))


def test_unknown_family_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="nope"):
        load_family("nope")


# What each family declares for the rest of the platform: its asset's Dagster kinds and its MLflow
# flavour (tracking/test_new_family.py: a family module is all a new family needs).
DECLARED = {
    "lightgbm": (("lightgbm",), "lightgbm"),
    "xgboost": (("xgboost",), "xgboost"),
    "torch_mlp": (("pytorch",), "pytorch"),
    "torch_tcn": (("pytorch",), "pytorch"),
    "linear": (("scikitlearn",), "python_function"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_declares_its_kinds_and_mlflow_flavour(family):
    family_class = load_family(family)
    assert (family_class.kinds, family_class.mlflow_flavour) == DECLARED[family]
    assert family_class.mlflow_flavour in MLFLOW_FLAVOURS


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ({"mlflow_flavour": "onnx"}, "mlflow_flavour is 'onnx'; it must be one of"),
        ({"kinds": "pytorch"}, "kinds must be a tuple of non-empty strings"),
        ({"pip_requirements": ("torch", "")}, "pip_requirements must be a tuple of non-empty strings"),
    ],
)
def test_a_family_declaring_an_unknown_flavour_or_malformed_kinds_fails_when_defined(declaration, message):
    with pytest.raises(ValueError, match=message):
        type("MisdeclaredFamily", (load_family("linear"),), declaration)


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_family_modules_named_like_their_library_import_the_real_library(library):
    # The family module imports its library lazily, inside fit; the fitted booster must come
    # from the real third-party package, not from our module of the same name.
    model = fitted(library, "classification", "signal")
    booster_module = sys.modules[type(model.booster).__module__]
    assert booster_module.__name__.startswith(f"{library}.")
    assert "intelligence_assets" not in booster_module.__file__


# ---------------------------------------------------------------- accepted params


def test_lightgbm_rejects_exactly_the_names_lightgbm_calls_unknown(capfd):
    # accepted_params reads LightGBM's names through a private wrapper of its C API: if that
    # goes, this fails.
    import lightgbm

    names = {
        "num_leafs": 7,
        "max_dept": 3,
        "num_leaf": 7,
        "eta": 0.1,
        "min_child_samples": 5,
        "lambda_l1": 0.0,
        "num_iterations": 2,
    }
    x, y = make_data("classification", "signal", 200, seed=0)
    lightgbm.train(
        {"objective": "binary", "verbosity": 1, "num_threads": 1} | names,
        lightgbm.Dataset(x, label=y),
        num_boost_round=1,
    )
    unknown_to_lightgbm = set(re.findall(r"Unknown parameter: (\w+)", capfd.readouterr().out))
    assert unknown_to_lightgbm == {"num_leafs", "max_dept"}
    assert set(load_family("lightgbm").unknown_params(names)) == unknown_to_lightgbm


def test_xgboost_rejects_exactly_the_names_xgboost_reports_unused():
    import xgboost

    names = {
        "max_dept": 3,
        "n_estimators": 10,
        "eta": 0.1,
        "lambda": 1.0,
        "alpha": 0.0,
        "gamma": 0.0,
        "max_leaves": 8,
        "eval_metric": "auc",
    }
    data = xgboost.DMatrix(np.zeros((2, 1)), label=[0.0, 1.0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Configuring the booster runs xgboost's own check of the names (validate_parameters). Its
        # report is a warning, silenced by the verbosity 0 a fit of the family leaves behind.
        xgboost.Booster({"objective": "binary:logistic", "nthread": 1, "verbosity": 1} | names, [data]).save_config()
    reports = [str(warning.message) for warning in caught if "are not used" in str(warning.message)]
    unused_by_xgboost = {name for report in reports for name in re.findall(r'"(\w+)"', report)}
    assert unused_by_xgboost == {"max_dept", "n_estimators"}
    assert set(load_family("xgboost").unknown_params(names)) == unused_by_xgboost


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", ["lightgbm", "xgboost"])
def test_every_param_a_tree_family_hands_its_library_is_accepted(family, task):
    # unknown_params lets the family's defaults through without importing the library.
    family_class = load_family(family)
    params, _, _ = family_class(task, TEST_PARAMS[family], 0)._booster_params()
    assert set(params) | {"num_boost_round", "early_stopping_rounds"} <= family_class.accepted_params()


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_params_name_the_closest_and_the_accepted_names(family):
    family_class = load_family(family)
    assert family_class.unknown_params({}) == {}
    message = family_class.unknown_params({"learning_rat": 0.1})["learning_rat"]
    assert message.startswith("unknown parameter 'learning_rat'; ")
    if family == "linear":
        assert message.endswith("accepted: C, alpha, max_iter")
    else:
        assert "closest: learning_rate" in message


# ---------------------------------------------------------------- param values


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_declares_the_types_of_the_params_it_reads_and_its_defaults_pass(family):
    family_class = load_family(family)
    declared = set(family_class.settings_model.model_fields)
    defaults = dict(family_class.default_params)
    # Types and bounds only: the defaults stay in default_params, the values training merges params over.
    assert declared <= set(defaults)
    assert all(field.is_required() for field in family_class.settings_model.model_fields.values())
    if family in ("lightgbm", "xgboost"):
        assert {"num_boost_round", "early_stopping_rounds"} <= declared
    else:  # every one of their params is read by the family itself
        assert declared == set(defaults)
    family_class.settings_model.model_validate(defaults)
    assert family_class.invalid_params(defaults) == {}
    # What invalid_params leaves out for a value equal to its default: the library's own check of them.
    assert family_class.library_problems(defaults, ("classification", "regression")) == {}


@pytest.mark.parametrize(
    ("family", "params", "expected"),
    [
        ("lightgbm", {"learning_rate": -0.05}, "LightGBM refuses it: it requires learning_rate > 0.0"),
        ("lightgbm", {"boosting": "gbtd"}, "LightGBM refuses it: Unknown boosting type gbtd"),
        ("xgboost", {"max_depth": -4}, "XGBoost refuses it: value -4 for Parameter max_depth should be greater equal"),
        ("xgboost", {"eval_metric": "aucc"}, "XGBoost refuses it: Unknown metric function aucc"),
        ("linear", {"max_iter": -1}, "scikit-learn refuses it: The 'max_iter' parameter of LogisticRegression"),
    ],
)
def test_a_library_refusal_is_one_line_naming_the_parameter_and_value(family, params, expected, capfd):
    ((name, value),) = params.items()
    problems = load_family(family).invalid_params(params)
    assert list(problems) == [name]
    assert problems[name].startswith(f"parameter {name!r} = {value!r}: "), problems
    assert expected in problems[name]
    assert "\n" not in problems[name] and "Stack trace" not in problems[name] and ".cpp" not in problems[name]
    # LightGBM's own copy of the error on stderr is held back: the message above is the one line.
    assert "[LightGBM] [Fatal]" not in capfd.readouterr().err


def test_params_that_depend_on_the_real_columns_are_left_to_training():
    # The check's made-up data has 2 columns; the real data has whatever the selection keeps.
    assert load_family("lightgbm").invalid_params({"monotone_constraints": [1, 0, 0, -1]}) == {}
    assert load_family("xgboost").invalid_params({"monotone_constraints": "(1,0,0,-1)"}) == {}


def test_blame_gives_each_bad_param_its_line_else_the_combination_one():
    from intelligence_assets.ml.families.base import blame

    def clash(subset):
        return "a and b clash" if {"a", "b"} <= set(subset) else None

    def bad_c(subset):
        return "c is bad" if "c" in subset else None

    assert blame("Lib", {"a": 1, "c": 2}, clash) == {}
    assert blame("Lib", {"a": 1, "b": 2}, clash) == {
        "a": "parameters a=1, b=2: Lib refuses them together: a and b clash"
    }
    assert blame("Lib", {"a": 1, "c": 2}, bad_c) == {"c": "parameter 'c' = 2: Lib refuses it: c is bad"}


def test_values_equal_to_the_defaults_are_checked_without_importing_the_library():
    # The bundled universe repeats default values: checking it must not import LightGBM, XGBoost,
    # scikit-learn or torch (a second or more) in a process that trains none of them.
    script = (
        "import sys\n"
        "from intelligence_assets.config.universe import load_universe\n"
        "from intelligence_assets.ml.families import load_family\n"
        "universe = load_universe()\n"
        "for name, settings in universe.model_families.items():\n"
        "    assert settings.params and load_family(name).invalid_params(settings.params) == {}, name\n"
        "heavy = sorted(m for m in ('lightgbm', 'xgboost', 'sklearn', 'torch') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]


# ---------------------------------------------------------------- learning


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_predictions_have_the_contract_shape_and_learn_a_planted_signal(family, task):
    model = fitted(family, task, "signal")
    x_test, y_test = fresh_sample(task, "signal")
    prediction = model.predict(x_test)
    assert prediction.shape == (N_TEST,)
    assert prediction.dtype == np.float64
    assert np.isfinite(prediction).all()
    if task == "classification":
        assert prediction.min() >= 0.0 and prediction.max() <= 1.0
        assert skill(task, y_test, prediction) > 0.75
    else:
        assert skill(task, y_test, prediction) > 0.6


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_pure_noise_is_not_learned(family, task):
    model = fitted(family, task, "noise")
    x_test, y_test = fresh_sample(task, "noise")
    prediction = model.predict(x_test)
    if task == "classification":
        assert abs(skill(task, y_test, prediction) - 0.5) < 0.07
    elif np.ptp(prediction) > 0:  # a constant prediction has no correlation, and is right not to
        assert abs(skill(task, y_test, prediction)) < 0.07


@pytest.mark.parametrize("family", ["lightgbm", "xgboost", "linear"])
def test_feature_importance_puts_the_planted_columns_first(family):
    model = fitted(family, "regression", "signal")
    importance = model.feature_importance()
    assert importance.shape == (N_FEATURES,)
    assert importance.dtype == np.float64
    assert (importance >= 0).all()
    assert set(np.argsort(importance)[-3:]) == {0, 1, 2}


def test_torch_mlp_has_no_feature_importance():
    assert fitted("torch_mlp", "classification", "signal").feature_importance() is None


# ---------------------------------------------------------------- early stopping


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", EARLY_STOPPING_FAMILIES)
def test_early_stopping_keeps_the_best_validation_iteration(family, task):
    for labels in ("signal", "noise"):
        model = fitted(family, task, labels)
        curve = model.training_curve
        assert len(curve) >= 1 and all(np.isfinite(curve))
        assert 1 <= model.best_iteration <= len(curve)
        assert curve[model.best_iteration - 1] == pytest.approx(min(curve), rel=1e-9)
    # On noise the validation loss stops improving quickly, so training must stop early:
    # exactly `patience` iterations after the best one, well before the iteration cap.
    noise_model = fitted(family, task, "noise")
    assert len(noise_model.training_curve) == noise_model.best_iteration + PATIENCE[family]
    assert len(noise_model.training_curve) < MAX_ITERATIONS[family]


@pytest.mark.parametrize("task", TASKS)
def test_linear_records_its_validation_loss_as_one_point(task):
    model = fitted("linear", task, "signal")
    data = split_data(task, "signal")
    prediction = model.predict(data["x_valid"])
    if task == "classification":
        expected = -np.mean(data["y_valid"] * np.log(prediction) + (1 - data["y_valid"]) * np.log(1 - prediction))
    else:
        expected = np.mean((prediction - data["y_valid"]) ** 2)
    assert model.training_curve == [pytest.approx(expected, rel=1e-9)]


def test_params_override_the_defaults():
    capped = fit_family("lightgbm", "regression", "signal", params={"num_boost_round": 7, "early_stopping_rounds": 100})
    assert len(capped.training_curve) == 7
    short = fit_family("torch_mlp", "regression", "signal", params={"max_epochs": 3, "hidden_sizes": [8]})
    assert len(short.training_curve) == 3
    assert short.network[0].out_features == 8


@pytest.mark.parametrize("family", FAMILIES)
def test_default_thread_settings_fit(family):
    model = load_family(family)("classification", {}, 5)
    data = split_data("classification", "signal")
    model.fit(data["x_train"][:600], data["y_train"][:600], data["x_valid"], data["y_valid"])
    x_test, y_test = fresh_sample("classification", "signal")
    assert skill("classification", y_test, model.predict(x_test)) > 0.7


# ---------------------------------------------------------------- persistence


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_save_then_load_predicts_identically(family, task, tmp_path):
    model = fitted(family, task, "signal")
    directory = tmp_path / "model"
    directory.mkdir()
    model.save(directory)
    assert (directory / NATIVE_FILES[family]).is_file()
    assert not list(directory.glob("*.pkl")) and not list(directory.glob("*.pickle"))

    loaded = load_family(family).load(directory)
    x_test, _ = fresh_sample(task, "signal")
    assert np.array_equal(loaded.predict(x_test), model.predict(x_test))
    assert loaded.task == task
    assert loaded.seed == model.seed
    assert loaded.best_iteration == model.best_iteration
    assert loaded.training_curve == model.training_curve
    if model.feature_importance() is None:
        assert loaded.feature_importance() is None
    else:
        assert np.array_equal(loaded.feature_importance(), model.feature_importance())


def test_load_refuses_another_familys_directory(tmp_path):
    fitted("linear", "regression", "signal").save(tmp_path)
    with pytest.raises(ValueError, match="linear"):
        load_family("lightgbm").load(tmp_path)


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_gives_identical_predictions(family, task):
    x_test, _ = fresh_sample(task, "signal")
    first = fitted(family, task, "signal")
    second = fit_family(family, task, "signal", seed=first.seed)
    assert np.array_equal(first.predict(x_test), second.predict(x_test))
    assert first.training_curve == second.training_curve


@pytest.mark.parametrize("family", SEEDED_FAMILIES)
def test_the_seed_is_used(family):
    x_test, _ = fresh_sample("classification", "signal")
    first = fitted(family, "classification", "signal")
    other_seed = fit_family(family, "classification", "signal", seed=first.seed + 1)
    assert not np.array_equal(first.predict(x_test), other_seed.predict(x_test))


def test_torch_mlp_leaves_the_global_torch_random_state_alone():
    import torch

    before = torch.random.get_rng_state()
    fit_family("torch_mlp", "classification", "signal", params={"max_epochs": 2})
    assert torch.equal(torch.random.get_rng_state(), before)


def test_torch_mlp_restores_the_torch_thread_count():
    import torch

    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    model = fit_family("torch_mlp", "regression", "signal", params={"max_epochs": 2, "num_threads": wanted})
    model.predict(fresh_sample("regression", "signal")[0])
    assert torch.get_num_threads() == before


def test_xgboost_on_explicit_cpu_does_not_import_torch():
    # A fresh interpreter: this test process may already have torch loaded by other tests.
    script = (
        "import sys, numpy as np\n"
        "from intelligence_assets.ml.families import load_family\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.standard_normal((300, 4)); y = (x[:, 0] > 0).astype(float)\n"
        "load_family('xgboost')('classification', {'device': 'cpu', 'num_boost_round': 5}, 0).fit(x, y, x, y)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- input checks


def bad_fit_inputs(task: str) -> dict[str, tuple[dict[str, np.ndarray], str]]:
    good = split_data(task, "signal")
    with_nan = good["x_train"].copy()
    with_nan[5, 2] = np.nan
    with_inf_target = good["y_train"].copy()
    with_inf_target[3] = np.inf
    cases = {
        "x not 2-d": (good | {"x_train": good["x_train"][:, 0]}, "2-d"),
        "y not 1-d": (good | {"y_train": good["y_train"][:, None]}, "1-d"),
        "length mismatch": (good | {"y_train": good["y_train"][:-1]}, "rows"),
        "NaN feature": (good | {"x_train": with_nan}, "non-finite"),
        "inf target": (good | {"y_train": with_inf_target}, "non-finite"),
        "column mismatch": (good | {"x_valid": good["x_valid"][:, :-1]}, "columns"),
        "empty": (good | {"x_train": good["x_train"][:0], "y_train": good["y_train"][:0]}, "at least one row"),
    }
    if task == "classification":
        cases["labels not 0/1"] = (good | {"y_train": good["y_train"] * 2}, "0 and 1")
        cases["single class"] = (good | {"y_train": np.ones_like(good["y_train"])}, "single class")
    return cases


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", FAMILIES)
def test_bad_fit_inputs_are_value_errors(family, task):
    for case, (data, message) in bad_fit_inputs(task).items():
        model = load_family(family)(task, {}, 0)
        with pytest.raises(ValueError, match=message):
            model.fit(data["x_train"], data["y_train"], data["x_valid"], data["y_valid"])
            pytest.fail(f"no ValueError for {case}")


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_predict_inputs_are_value_errors(family):
    model = fitted(family, "classification", "signal")
    x_test, _ = fresh_sample("classification", "signal")
    with pytest.raises(ValueError, match="columns"):
        model.predict(x_test[:, :-1])
    with pytest.raises(ValueError, match="2-d"):
        model.predict(x_test[0])
    with_nan = x_test.copy()
    with_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        model.predict(with_nan)


@pytest.mark.parametrize("family", FAMILIES)
def test_unknown_task_and_predict_before_fit(family):
    with pytest.raises(ValueError, match="task"):
        load_family(family)("ranking", {}, 0)
    with pytest.raises(RuntimeError, match="before fit"):
        load_family(family)("regression", {}, 0).predict(np.zeros((2, N_FEATURES)))


# ---------------------------------------------------------------- torch_tcn: windows of bars


def lagged_signal(n_rows: int, lag: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The label follows feature 0 `lag` rows earlier: only a model that reads past rows sees it."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_rows, N_FEATURES))
    latent = np.roll(x[:, 0], lag) * 1.5 + rng.standard_normal(n_rows)
    latent[:lag] = rng.standard_normal(lag)
    return x, (latent > 0).astype(np.float64)


def test_torch_tcn_learns_from_past_rows_the_mlp_cannot_see():
    x_train, y_train = lagged_signal(N_TRAIN, lag=3, seed=0)
    x_valid, y_valid = lagged_signal(N_VALID, lag=3, seed=1)
    x_test, y_test = lagged_signal(N_TEST, lag=3, seed=2)
    sequence = load_family("torch_tcn")("classification", TEST_PARAMS["torch_tcn"], 5).fit(
        x_train, y_train, x_valid, y_valid
    )
    single_row = load_family("torch_mlp")("classification", {}, 5).fit(x_train, y_train, x_valid, y_valid)
    assert skill("classification", y_test, sequence.predict(x_test)) > 0.75
    assert skill("classification", y_test, single_row.predict(x_test)) < 0.56


def test_torch_tcn_never_reads_later_rows():
    model = fitted("torch_tcn", "classification", "signal")
    x, _ = fresh_sample("classification", "signal")
    before = model.predict(x)
    changed = x.copy()
    changed[2000:] = np.random.default_rng(9).standard_normal(changed[2000:].shape) * 5
    after = model.predict(changed)
    np.testing.assert_array_equal(before[:2000], after[:2000])
    assert not np.allclose(before[2000:], after[2000:])
    # A prefix scored alone predicts what it did inside the whole array.
    np.testing.assert_array_equal(model.predict(x[:500]), before[:500])


def test_torch_tcn_rejects_unknown_params():
    with pytest.raises(ValueError, match="unknown params"):
        load_family("torch_tcn")("classification", {"hidden_sizes": [8]}, 1)


@pytest.mark.parametrize("family", FAMILIES)
def test_importing_a_familys_libraries_leaves_no_heavy_import_to_its_first_fit(family):
    # A fresh interpreter: what the worker's warm-up imports must be all a first fit needs from
    # the heavy libraries, or the first training in each worker still pays the import.
    script = (
        "import importlib, sys, numpy as np\n"
        "from intelligence_assets.ml.families import libraries_of, load_family\n"
        f"libraries = libraries_of([{family!r}])\n"
        "assert libraries, 'no libraries declared'\n"
        "for module in libraries: importlib.import_module(module)\n"
        "before = set(sys.modules)\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.standard_normal((300, 4)); y = (x[:, 0] > 0).astype(float)\n"
        f"load_family({family!r})('classification', {TEST_PARAMS[family]!r}, 0).fit(x, y, x, y)\n"
        "heavy = ('torch', 'sklearn', 'lightgbm', 'xgboost', 'scipy')\n"
        "late = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in heavy)\n"
        # A stray small submodule is fine (torch imports a profiler helper on the first step);
        # a forgotten library is dozens to hundreds of modules.
        "assert len(late) <= 3, f'imported by the first fit: {late[:10]} ({len(late)} modules)'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
