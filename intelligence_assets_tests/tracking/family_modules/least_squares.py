"""A model family written the way a new one is: this module alone, in a folder the tests add to
`intelligence_assets.ml.families` (test_new_family.py), where a real family sits in that package.

Ordinary least squares in numpy; classification clips the fit to [0, 1] (a linear probability
model). No library of its own, so MLflow gets the family object (`python_function`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Self

import numpy as np

from intelligence_assets.ml.families.base import ModelFamily

MODEL_FILE = "coefficients.json"


class LeastSquaresFamily(ModelFamily):
    name: ClassVar[str] = "least_squares"
    version: ClassVar[str] = "1"
    kinds: ClassVar[tuple[str, ...]] = ("numpy",)
    mlflow_flavour: ClassVar[str] = "python_function"
    pip_requirements: ClassVar[tuple[str, ...]] = ("numpy",)

    @classmethod
    def accepted_params(cls) -> frozenset[str]:
        return frozenset()

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray) -> Self:
        x_train, y_train, x_valid, y_valid = self._check_fit_inputs(x_train, y_train, x_valid, y_valid)
        with_intercept = np.column_stack([x_train, np.ones(len(x_train))])
        self.coefficients = np.linalg.lstsq(with_intercept, y_train, rcond=None)[0]
        self.training_curve = [float(np.mean((self.predict(x_valid) - y_valid) ** 2))]
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = self._check_predict_input(x)
        prediction = x @ self.coefficients[:-1] + self.coefficients[-1]
        return np.clip(prediction, 0.0, 1.0) if self.task == "classification" else prediction

    def save(self, directory: Path) -> None:
        (Path(directory) / MODEL_FILE).write_text(json.dumps(self.coefficients.tolist()))
        self._write_meta(directory)

    @classmethod
    def load(cls, directory: Path) -> Self:
        instance, _ = cls._read_meta(directory)
        instance.coefficients = np.asarray(json.loads((Path(directory) / MODEL_FILE).read_text()), dtype=np.float64)
        return instance

    def feature_importance(self) -> np.ndarray | None:
        return np.abs(self.coefficients[:-1])


FAMILY = LeastSquaresFamily
