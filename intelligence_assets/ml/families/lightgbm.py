"""LightGBM gradient-boosted trees, early-stopped on the validation slice.

This module shares its name with the library; `import lightgbm` below is absolute, so it
loads the third-party package, not this file.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
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

MODEL_FILE = "model.txt"

DEFAULT_PARAMS: dict[str, Any] = {
    "num_boost_round": 300,
    "early_stopping_rounds": 30,
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 50,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    # Parallelism comes from partitions running side by side (one worker per core); on a few
    # thousand rows a second thread gains little and oversubscribes the cores.
    "num_threads": 1,
    "verbosity": -1,
    "deterministic": True,
    # LightGBM documents that `deterministic` is only reliable with a fixed histogram layout.
    "force_row_wise": True,
}

OBJECTIVES = {"classification": ("binary", "binary_logloss"), "regression": ("regression", "l2")}

# Read by the family itself, not passed to LightGBM's params.
FAMILY_PARAMS = ("num_boost_round", "early_stopping_rounds")

# Params (canonical names; their aliases too) that depend on the real data's columns or name files:
# a check on made-up data cannot judge them, so they are left to training.
DATA_DEPENDENT_PARAMS = (
    "monotone_constraints",
    "feature_contri",
    "interaction_constraints",
    "categorical_feature",
    "max_bin_by_feature",
    "cegb_penalty_feature_lazy",
    "cegb_penalty_feature_coupled",
    "ignore_column",
    "label_column",
    "weight_column",
    "group_column",
    "forcedsplits_filename",
    "forcedbins_filename",
    "input_model",
    "output_model",
    "machine_list_filename",
    "parser_config_file",
    "convert_model",
    "save_binary",
)


class LightGBMSettings(FamilySettings):
    num_boost_round: Integer = Field(ge=1)
    """Boosting rounds at most."""
    early_stopping_rounds: Integer = Field(ge=1)
    """Rounds without improvement of the validation loss before training stops."""
    num_threads: Integer
    """Threads of training and prediction (LightGBM: 0 or less, OpenMP's default)."""


@contextmanager
def _native_fatal_lines_held_back() -> Iterator[None]:
    """LightGBM writes each error to the process's stderr (`[LightGBM] [Fatal] ...`) before it
    raises it. At load the error becomes a line of the universe's message, so that copy is held
    back; anything else written to stderr meanwhile (by another thread) is passed on afterwards."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr to redirect
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured if line.strip() and not line.startswith(b"[LightGBM] [Fatal]")]
            if kept:
                os.write(2, b"".join(kept))


class LightGBMFamily(ModelFamily):
    name: ClassVar[str] = "lightgbm"
    version: ClassVar[str] = "1"
    libraries: ClassVar[tuple[str, ...]] = ("lightgbm",)
    uses_gpu: ClassVar[bool] = False
    kinds: ClassVar[tuple[str, ...]] = ("lightgbm",)
    mlflow_flavour: ClassVar[str] = "lightgbm"
    pip_requirements: ClassVar[tuple[str, ...]] = ("lightgbm",)
    params_reference: ClassVar[str | None] = (
        f"{', '.join(FAMILY_PARAMS)} and every LightGBM parameter or alias (https://lightgbm.readthedocs.io/en/stable/Parameters.html)"
    )
    default_params: ClassVar[Mapping[str, Any]] = DEFAULT_PARAMS
    search_space: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "learning_rate": {"low": 0.01, "high": 0.2, "log": True},
        "num_leaves": {"low": 4, "high": 63},
        "min_data_in_leaf": {"low": 10, "high": 200, "log": True},
        "feature_fraction": {"low": 0.4, "high": 1.0},
        "lambda_l2": {"low": 0.001, "high": 10.0, "log": True},
    }
    settings_model: ClassVar[type[FamilySettings]] = LightGBMSettings

    @classmethod
    def accepted_params(cls) -> frozenset[str]:
        from lightgbm.basic import _ConfigAliases

        # LightGBM lists its parameters and their aliases only through its C API
        # (LGBM_DumpParamAliases), wrapped by this private method; a test fails if it goes.
        aliases = _ConfigAliases._get_all_param_aliases()
        return frozenset(FAMILY_PARAMS).union(*aliases.values())

    @classmethod
    def unknown_params(cls, names: Iterable[str]) -> dict[str, str]:
        # The names set here are known to LightGBM: a universe file using only them is checked
        # without importing lightgbm (about a second).
        return super().unknown_params(set(names).difference(DEFAULT_PARAMS))

    @classmethod
    def library_problems(cls, params: Mapping[str, Any], tasks: tuple[Task, ...]) -> dict[str, str]:
        """LightGBM checks its params when it builds a booster: a fit of one round, as `fit` trains,
        on `probe_data` for each task (about a millisecond each)."""
        from lightgbm.basic import _ConfigAliases

        left_to_training = set(FAMILY_PARAMS) | _ConfigAliases.get(*DATA_DEPENDENT_PARAMS)
        checked = {name: value for name, value in params.items() if name not in left_to_training}
        if not checked:
            return {}

        def failure(subset: dict[str, Any]) -> str | None:
            for task in tasks:
                x, y = probe_data(task)
                probe = cls(task, subset | {"num_boost_round": 1, "early_stopping_rounds": 1}, seed=0)
                try:
                    with _native_fatal_lines_held_back():
                        probe.fit(x, y, x, y)
                except Exception as error:  # whatever LightGBM raises, training would raise too
                    # "Check failed: (learning_rate) > (0.0)" is a rule: say it as one.
                    text = library_error_text(error)
                    return re.sub(r"^Check failed: \((\w+)\) (\S+) \((.+?)\)$", r"it requires \1 \2 \3", text)
            return None

        return blame("LightGBM", checked, failure)

    def __init__(self, task: Task, params: dict[str, Any], seed: int) -> None:
        import lightgbm

        super().__init__(task, params, seed)
        self.booster: lightgbm.Booster | None = None

    def _booster_params(self) -> tuple[dict[str, Any], int, int]:
        objective, metric = OBJECTIVES[self.task]
        params = DEFAULT_PARAMS | {"objective": objective, "metric": metric, "seed": self.seed} | self.params
        num_boost_round = int(params.pop("num_boost_round"))
        early_stopping_rounds = int(params.pop("early_stopping_rounds"))
        return params, num_boost_round, early_stopping_rounds

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray) -> Self:
        import lightgbm

        x_train, y_train, x_valid, y_valid = self._check_fit_inputs(x_train, y_train, x_valid, y_valid)
        params, num_boost_round, early_stopping_rounds = self._booster_params()
        train_set = lightgbm.Dataset(x_train, label=y_train, free_raw_data=True)
        valid_set = lightgbm.Dataset(x_valid, label=y_valid, reference=train_set, free_raw_data=True)
        evaluations: dict[str, dict[str, list[float]]] = {}
        self.booster = lightgbm.train(
            params,
            train_set,
            num_boost_round=num_boost_round,
            valid_sets=[valid_set],
            valid_names=["validation"],
            callbacks=[
                lightgbm.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False),
                lightgbm.record_evaluation(evaluations),
            ],
        )
        # The first metric drives early stopping (first_metric_only), so it is the curve.
        first_metric_curve = next(iter(evaluations["validation"].values()))
        self.training_curve = [float(value) for value in first_metric_curve]
        # best_iteration counts trees (1-based); 0 would mean early stopping never ran.
        self.best_iteration = int(self.booster.best_iteration) or self.booster.current_iteration()
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = self._check_predict_input(x)
        if self.booster is None:
            raise RuntimeError("lightgbm: predict called before fit (or load)")
        # The booster applies the sigmoid for the binary objective, so these are probabilities.
        prediction = self.booster.predict(x, num_iteration=self.best_iteration, num_threads=self._num_threads())
        return np.asarray(prediction, dtype=np.float64).reshape(-1)

    def _num_threads(self) -> int:
        return int(self.params.get("num_threads", DEFAULT_PARAMS["num_threads"]))

    def save(self, directory: Path) -> None:
        if self.booster is None:
            raise RuntimeError("lightgbm: save called before fit")
        directory = Path(directory)
        # All trees are kept; predict cuts at best_iteration in both the fitted and loaded paths.
        self.booster.save_model(str(directory / MODEL_FILE), num_iteration=-1)
        self._write_meta(directory)

    @classmethod
    def load(cls, directory: Path) -> Self:
        import lightgbm

        instance, _ = cls._read_meta(directory)
        instance.booster = lightgbm.Booster(model_file=str(Path(directory) / MODEL_FILE))
        return instance

    def native_model(self) -> Any:
        import lightgbm

        if self.booster is None:
            raise RuntimeError("lightgbm: native_model called before fit")
        # Only the kept trees, so the booster's own predict needs no num_iteration.
        return lightgbm.Booster(model_str=self.booster.model_to_string(num_iteration=self.best_iteration))

    def feature_importance(self) -> np.ndarray | None:
        if self.booster is None:
            return None
        gain = self.booster.feature_importance(importance_type="gain", iteration=self.best_iteration)
        return np.asarray(gain, dtype=np.float64)


FAMILY = LightGBMFamily
