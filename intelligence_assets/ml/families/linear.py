"""The linear baseline: L2 logistic regression (classification) or ridge (regression) on
standardized inputs.

scikit-learn fits the coefficients; predictions are computed here in numpy from the stored
coefficients, in the fitted and the reloaded model alike, so both are bit-identical. The
model is saved as plain JSON, never pickle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from intelligence_assets.ml.families.base import (
    FamilySettings,
    Integer,
    ModelFamily,
    Number,
    Task,
    library_error_text,
    standardization,
)
from intelligence_assets.ml.metrics import log_loss

MODEL_FILE = "model.json"

DEFAULT_PARAMS: dict[str, Any] = {
    "C": 1.0,  # inverse L2 strength, classification
    "alpha": 1.0,  # L2 strength, regression
    "max_iter": 1000,
}
# The task whose estimator reads each param.
READ_BY: dict[str, Task] = {"C": "classification", "max_iter": "classification", "alpha": "regression"}


class LinearSettings(FamilySettings):
    # Bounds beyond the types are scikit-learn's own (`library_problems`).
    C: Number
    """Inverse L2 strength of the logistic regression (classification)."""
    alpha: Number
    """L2 strength of the ridge regression (regression)."""
    max_iter: Integer
    """Solver iterations at most (classification)."""


def sigmoid(z: np.ndarray) -> np.ndarray:
    # exp(-log(1 + exp(-z))) never overflows, unlike 1 / (1 + exp(-z)) for very negative z.
    return np.exp(-np.logaddexp(0.0, -z))


class LinearFamily(ModelFamily):
    name: ClassVar[str] = "linear"
    version: ClassVar[str] = "1"
    libraries: ClassVar[tuple[str, ...]] = ("sklearn.linear_model",)
    uses_gpu: ClassVar[bool] = False
    kinds: ClassVar[tuple[str, ...]] = ("scikitlearn",)
    # No library object predicts what `predict` does (numpy on the stored coefficients), so
    # MLflow gets the family object itself.
    mlflow_flavour: ClassVar[str] = "python_function"
    default_params: ClassVar[Mapping[str, Any]] = DEFAULT_PARAMS
    search_space: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "C": {"low": 0.001, "high": 100.0, "log": True},
        "alpha": {"low": 0.01, "high": 1000.0, "log": True},
    }
    settings_model: ClassVar[type[FamilySettings]] = LinearSettings

    @classmethod
    def accepted_params(cls) -> frozenset[str]:
        # Only these reach scikit-learn; any other name would be silently ignored.
        return frozenset(DEFAULT_PARAMS)

    @classmethod
    def library_problems(cls, params: Mapping[str, Any], tasks: tuple[Task, ...]) -> dict[str, str]:
        """scikit-learn's own check of the estimator `fit` builds (`_validate_params`, what its fit
        runs first), for each param alone, without fitting. A param is checked by the estimator of
        the task that reads it, whatever tasks the universe trains: a bad value is a mistake anyway."""
        from sklearn.utils._param_validation import InvalidParameterError

        problems = {}
        for name, value in params.items():
            estimator = cls._estimator(READ_BY[name], DEFAULT_PARAMS | {name: value}, seed=0)
            try:
                # Private, but scikit-learn's only check without a fit; a test fails if it goes.
                estimator._validate_params()
            except (InvalidParameterError, ValueError, TypeError) as error:
                problems[name] = f"parameter {name!r} = {value!r}: scikit-learn refuses it: {library_error_text(error)}"
        return problems

    @staticmethod
    def _estimator(task: str, settings: Mapping[str, Any], seed: int) -> Any:
        """The scikit-learn estimator `fit` fits, unfitted."""
        from sklearn.linear_model import LogisticRegression, Ridge

        if task == "classification":
            return LogisticRegression(C=float(settings["C"]), max_iter=int(settings["max_iter"]), random_state=seed)
        return Ridge(alpha=float(settings["alpha"]), random_state=seed)

    def __init__(self, task: Task, params: dict[str, Any], seed: int) -> None:
        super().__init__(task, params, seed)
        self.coefficients: np.ndarray | None = None
        self.intercept = 0.0
        self.feature_mean: np.ndarray | None = None
        self.feature_std: np.ndarray | None = None

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray) -> Self:
        x_train, y_train, x_valid, y_valid = self._check_fit_inputs(x_train, y_train, x_valid, y_valid)
        self.feature_mean, self.feature_std = standardization(x_train)
        standardized = (x_train - self.feature_mean) / self.feature_std
        model = self._estimator(self.task, DEFAULT_PARAMS | self.params, self.seed)
        model.fit(standardized, y_train)
        self.coefficients = np.asarray(model.coef_, dtype=np.float64).reshape(-1)
        self.intercept = float(np.asarray(model.intercept_, dtype=np.float64).reshape(-1)[0])

        # No iterations to stop early: the validation loss is a single point.
        predicted = self.predict(x_valid)
        if self.task == "classification":
            validation_loss = log_loss(y_valid, predicted)
        else:
            validation_loss = np.mean((predicted - y_valid) ** 2)
        self.training_curve = [float(validation_loss)]
        self.best_iteration = None
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = self._check_predict_input(x)
        if self.coefficients is None:
            raise RuntimeError("linear: predict called before fit (or load)")
        linear_score = ((x - self.feature_mean) / self.feature_std) @ self.coefficients + self.intercept
        prediction = sigmoid(linear_score) if self.task == "classification" else linear_score
        return np.asarray(prediction, dtype=np.float64).reshape(-1)

    def save(self, directory: Path) -> None:
        if self.coefficients is None:
            raise RuntimeError("linear: save called before fit")
        directory = Path(directory)
        # float64 values round-trip exactly through JSON.
        model = {
            "task": self.task,
            "coefficients": self.coefficients.tolist(),
            "intercept": self.intercept,
            "feature_mean": self.feature_mean.tolist(),
            "feature_std": self.feature_std.tolist(),
        }
        (directory / MODEL_FILE).write_text(json.dumps(model, indent=2))
        self._write_meta(directory)

    @classmethod
    def load(cls, directory: Path) -> Self:
        instance, _ = cls._read_meta(directory)
        model = json.loads((Path(directory) / MODEL_FILE).read_text())
        instance.coefficients = np.asarray(model["coefficients"], dtype=np.float64)
        instance.intercept = float(model["intercept"])
        instance.feature_mean = np.asarray(model["feature_mean"], dtype=np.float64)
        instance.feature_std = np.asarray(model["feature_std"], dtype=np.float64)
        return instance

    def feature_importance(self) -> np.ndarray | None:
        """Absolute standardized coefficients: comparable across columns of any scale."""
        if self.coefficients is None:
            return None
        return np.abs(self.coefficients)


FAMILY = LinearFamily
