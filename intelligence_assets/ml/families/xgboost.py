"""XGBoost histogram trees, early-stopped on the validation slice; trains on CUDA when it can.

This module shares its name with the library; `import xgboost` below is absolute, so it
loads the third-party package, not this file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import Field

from intelligence_assets.ml.families.base import (
    FamilySettings,
    Integer,
    ModelFamily,
    Task,
    blame,
    library_error_text,
    probe_data,
)

MODEL_FILE = "model.ubj"

DEFAULT_PARAMS: dict[str, Any] = {
    "num_boost_round": 300,
    "early_stopping_rounds": 30,
    "device": "auto",
    "tree_method": "hist",
    "learning_rate": 0.05,
    "max_depth": 4,
    "min_child_weight": 5.0,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
    # One thread per model: partitions run side by side, one worker per core.
    "nthread": 1,
    "verbosity": 0,
}

OBJECTIVES = {"classification": ("binary:logistic", "logloss"), "regression": ("reg:squarederror", "rmse")}
BOOSTERS = ("gbtree", "dart", "gblinear")

# Read by the family itself and given to xgboost.train as arguments, not in its params.
FAMILY_PARAMS = ("num_boost_round", "early_stopping_rounds")

# Params that depend on the real data's columns: a check on made-up data cannot judge them.
DATA_DEPENDENT_PARAMS = ("monotone_constraints", "interaction_constraints")


class XGBoostSettings(FamilySettings):
    num_boost_round: Integer = Field(ge=1)
    """Boosting rounds at most."""
    early_stopping_rounds: Integer = Field(ge=1)
    """Rounds without improvement of the validation loss before training stops."""
    nthread: Integer
    """Threads of training and prediction."""
    device: str = Field(pattern=r"^(auto|cpu|(cuda|gpu)(:[0-9]+)?)$")
    """auto (cuda when this XGBoost build has CUDA and a GPU is visible, else cpu), cpu, cuda, cuda:<ordinal>."""


def resolve_device(device: str) -> str:
    """ "auto" becomes "cuda" when this xgboost build has CUDA and a GPU is visible, else "cpu".

    torch is imported only for "auto": it is the cheapest reliable probe for a visible GPU,
    and an explicit "cpu" must not pay for loading it.
    """
    import xgboost

    if device != "auto":
        return device
    if not xgboost.build_info().get("USE_CUDA", False):
        return "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


class XGBoostFamily(ModelFamily):
    name: ClassVar[str] = "xgboost"
    version: ClassVar[str] = "1"
    libraries: ClassVar[tuple[str, ...]] = ("xgboost",)
    uses_gpu: ClassVar[bool] = False
    can_use_gpu: ClassVar[bool] = True
    kinds: ClassVar[tuple[str, ...]] = ("xgboost",)
    mlflow_flavour: ClassVar[str] = "xgboost"
    pip_requirements: ClassVar[tuple[str, ...]] = ("xgboost",)
    params_reference: ClassVar[str | None] = (
        f"{', '.join(FAMILY_PARAMS)} and XGBoost's booster and learning task parameters (https://xgboost.readthedocs.io/en/stable/parameter.html)"
    )
    default_params: ClassVar[Mapping[str, Any]] = DEFAULT_PARAMS
    search_space: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "learning_rate": {"low": 0.01, "high": 0.2, "log": True},
        "max_depth": {"low": 2, "high": 8},
        "min_child_weight": {"low": 1.0, "high": 50.0, "log": True},
        "colsample_bytree": {"low": 0.4, "high": 1.0},
        "reg_lambda": {"low": 0.001, "high": 10.0, "log": True},
    }
    settings_model: ClassVar[type[FamilySettings]] = XGBoostSettings

    @classmethod
    def accepted_params(cls) -> frozenset[str]:
        """XGBoost publishes no list of its parameters. Its own check (`validate_parameters`, which
        only warns) accepts the keys of every `*_param` section of a configured booster's JSON
        config, those of the global config, and `eval_metric`; the same are read here, for every
        booster kind and both of the family's objectives."""
        import xgboost

        names = set(FAMILY_PARAMS) | set(xgboost.get_config()) | {"eval_metric"}
        for booster in BOOSTERS:
            for objective, _ in OBJECTIVES.values():
                # Kept in a variable: the booster holds its cache weakly and needs it to configure.
                data = xgboost.DMatrix(np.zeros((1, 1)))
                config = xgboost.Booster({"booster": booster, "objective": objective}, [data]).save_config()
                names.update(_parameter_names(json.loads(config)))
        return frozenset(names)

    @classmethod
    def unknown_params(cls, names: Iterable[str]) -> dict[str, str]:
        # The names set here are known to XGBoost: a universe file using only them is checked
        # without importing xgboost (about a second).
        return super().unknown_params(set(names).difference(DEFAULT_PARAMS))

    @classmethod
    def library_problems(cls, params: Mapping[str, Any], tasks: tuple[Task, ...]) -> dict[str, str]:
        """XGBoost checks its params when it configures a booster: a fit of one round, as `fit`
        trains, on `probe_data` for each task and on the CPU (about a millisecond each)."""
        left_to_training = {*FAMILY_PARAMS, *DATA_DEPENDENT_PARAMS, "device"}
        checked = {name: value for name, value in params.items() if name not in left_to_training}
        if not checked:
            return {}

        def failure(subset: dict[str, Any]) -> str | None:
            for task in tasks:
                x, y = probe_data(task)
                probe = cls(task, subset | {"num_boost_round": 1, "early_stopping_rounds": 1, "device": "cpu"}, seed=0)
                try:
                    probe.fit(x, y, x, y)
                except Exception as error:  # whatever XGBoost raises, training would raise too
                    return library_error_text(error)
            return None

        return blame("XGBoost", checked, failure)

    def __init__(self, task: Task, params: dict[str, Any], seed: int) -> None:
        import xgboost

        super().__init__(task, params, seed)
        self.booster: xgboost.Booster | None = None

    def _booster_params(self) -> tuple[dict[str, Any], int, int]:
        objective, metric = OBJECTIVES[self.task]
        params = DEFAULT_PARAMS | {"objective": objective, "eval_metric": metric, "seed": self.seed} | self.params
        num_boost_round = int(params.pop("num_boost_round"))
        early_stopping_rounds = int(params.pop("early_stopping_rounds"))
        params["device"] = resolve_device(str(params["device"]))
        return params, num_boost_round, early_stopping_rounds

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray) -> Self:
        import xgboost

        x_train, y_train, x_valid, y_valid = self._check_fit_inputs(x_train, y_train, x_valid, y_valid)
        params, num_boost_round, early_stopping_rounds = self._booster_params()
        train_matrix = xgboost.DMatrix(x_train, label=y_train, nthread=params["nthread"])
        valid_matrix = xgboost.DMatrix(x_valid, label=y_valid, nthread=params["nthread"])
        evaluations: dict[str, dict[str, list[float]]] = {}
        self.booster = xgboost.train(
            params,
            train_matrix,
            num_boost_round=num_boost_round,
            evals=[(valid_matrix, "validation")],
            early_stopping_rounds=early_stopping_rounds,
            evals_result=evaluations,
            verbose_eval=False,
        )
        # With several eval metrics xgboost stops on the last one, so that is the curve.
        last_metric_curve = list(evaluations["validation"].values())[-1]
        self.training_curve = [float(value) for value in last_metric_curve]
        # xgboost's best_iteration is a 0-based tree index; the contract counts trees kept.
        self.best_iteration = int(self.booster.best_iteration) + 1
        self._set_prediction_device()
        return self

    def _set_prediction_device(self) -> None:
        # Predict on the CPU always: the fitted and the reloaded model then run the same
        # inference code, whatever device trained them, and numpy inputs need no copy.
        nthread = int(self.params.get("nthread", DEFAULT_PARAMS["nthread"]))
        self.booster.set_param({"device": "cpu", "nthread": nthread})

    def predict(self, x: np.ndarray) -> np.ndarray:
        import xgboost

        x = self._check_predict_input(x)
        if self.booster is None:
            raise RuntimeError("xgboost: predict called before fit (or load)")
        # binary:logistic outputs probabilities.
        prediction = self.booster.predict(xgboost.DMatrix(x), iteration_range=(0, self.best_iteration))
        return np.asarray(prediction, dtype=np.float64).reshape(-1)

    def save(self, directory: Path) -> None:
        if self.booster is None:
            raise RuntimeError("xgboost: save called before fit")
        directory = Path(directory)
        self.booster.save_model(str(directory / MODEL_FILE))
        self._write_meta(directory)

    @classmethod
    def load(cls, directory: Path) -> Self:
        import xgboost

        instance, _ = cls._read_meta(directory)
        booster = xgboost.Booster()
        booster.load_model(str(Path(directory) / MODEL_FILE))
        instance.booster = booster
        instance._set_prediction_device()
        return instance

    def native_model(self) -> Any:
        if self.booster is None:
            raise RuntimeError("xgboost: native_model called before fit")
        # Only the kept trees, so the booster's own predict needs no iteration_range.
        return self.booster[: self.best_iteration]

    def feature_importance(self) -> np.ndarray | None:
        """Total gain per column over the kept trees (zeros for columns never split on).

        Total rather than xgboost's default mean gain, so it is comparable to LightGBM's gain.
        """
        if self.booster is None or self.n_features is None:
            return None
        scores = self.booster[: self.best_iteration].get_score(importance_type="total_gain")
        importance = np.zeros(self.n_features, dtype=np.float64)
        for feature, gain in scores.items():
            # Without feature names xgboost calls column i "f{i}".
            importance[int(feature.removeprefix("f"))] = float(gain)
        return importance


def _parameter_names(config: Any) -> set[str]:
    """The keys of every `*_param` section in an XGBoost JSON config, at any depth."""
    names: set[str] = set()
    if isinstance(config, dict):
        for key, value in config.items():
            if key.endswith("_param") and isinstance(value, dict):
                names.update(value)
            else:
                names.update(_parameter_names(value))
    elif isinstance(config, list):
        for value in config:
            names.update(_parameter_names(value))
    return names


FAMILY = XGBoostFamily
