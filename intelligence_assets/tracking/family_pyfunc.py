"""The MLflow pyfunc of a family logged in the `python_function` flavour, one with no library of
its own (`linear`): it predicts with the family object. Imported only when such a model is saved
or loaded (it imports MLflow).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from intelligence_assets.ml.families import ModelFamily


class FamilyModel(mlflow.pyfunc.PythonModel):
    def __init__(self, family_model: ModelFamily) -> None:
        self.family_model = family_model

    # A DataFrame hint: MLflow infers no schema from it (the signature already is one) and no
    # longer warns, on every model saved, that `predict` has no type hints.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        return self.family_model.predict(np.asarray(model_input, dtype=np.float64))
