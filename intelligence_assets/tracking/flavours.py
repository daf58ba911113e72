"""A trained model in its MLflow flavour, so anyone can load it with MLflow's own loaders
(`mlflow.lightgbm.load_model`, `mlflow.pyfunc.load_model`, ...), and the pyfunc predicts what
`TrainedModel.predict` predicts (tested for every family).

LightGBM, XGBoost and PyTorch use their native flavours on the family's `native_model()` (cut at
the best iteration, standardization inside the torch module). A family without a native library
(`linear`) is saved as a pyfunc around the family object itself.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from intelligence_assets.ml.families import ModelFamily

# Explicit requirements: MLflow's inference of them imports and scans the environment, seconds
# per model; what a model needs to load is known here.
PIP_REQUIREMENTS = {
    "lightgbm": ["lightgbm", "numpy", "pandas"],
    "xgboost": ["xgboost", "numpy", "pandas"],
    "torch": ["torch", "numpy", "pandas", "cloudpickle"],
}
DEFAULT_PIP_REQUIREMENTS = ["numpy", "pandas", "cloudpickle", "intelligence-assets"]


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def model_signature(feature_names: list[str]) -> Any:
    """Named float64 inputs in the selected-feature order, one float64 output."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("double", name) for name in feature_names]), outputs=Schema([ColSpec("double")]))


def save_in_flavour(model: ModelFamily, feature_names: list[str], directory: Path) -> str:
    """Write `model` as an MLflow model directory at `directory` (which must not exist); returns the flavour."""
    signature = model_signature(feature_names)
    native = model.native_model()
    path = str(directory)
    if model.name == "lightgbm":
        import mlflow.lightgbm

        mlflow.lightgbm.save_model(native, path, signature=signature, pip_requirements=PIP_REQUIREMENTS["lightgbm"])
        return "lightgbm"
    if model.name == "xgboost":
        import mlflow.xgboost

        mlflow.xgboost.save_model(native, path, signature=signature, pip_requirements=PIP_REQUIREMENTS["xgboost"], model_format="json")
        return "xgboost"
    if model.name.startswith("torch") and native is not None:
        import mlflow.pytorch

        # Pickled (cloudpickle) rather than exported: torch.export needs an example input and
        # fixes shapes; the pickle keeps the standardization inside the module. MLflow warns
        # about pickles on every save; the choice is made here, once.
        with _quiet("mlflow.pytorch"):
            mlflow.pytorch.save_model(native, path, signature=signature, pip_requirements=PIP_REQUIREMENTS["torch"], serialization_format="pickle")
        return "pytorch"
    import mlflow.pyfunc

    from intelligence_assets.tracking.family_pyfunc import FamilyModel

    # MLflow nudges towards an input example and model-from-code; the signature already states
    # the schema, and the pickled object is our own family class.
    with _quiet("mlflow.pyfunc"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mlflow.pyfunc.save_model(path, python_model=FamilyModel(model), signature=signature, pip_requirements=DEFAULT_PIP_REQUIREMENTS)
    return "python_function"


def load_pyfunc(directory: Path) -> Any:
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(directory))


def pyfunc_predict(pyfunc_model: Any, feature_names: list[str], x: np.ndarray) -> np.ndarray:
    """1-d float64 predictions from an MLflow pyfunc model, given rows in `feature_names` order."""
    import pandas as pd

    frame = pd.DataFrame(np.asarray(x, dtype=np.float64), columns=feature_names)
    # MLflow's PyTorch flavour wraps `frame.to_numpy()` in a tensor; under pandas' copy-on-write
    # that array is read-only, and torch warns that writing to it would be undefined. The module
    # only reads its input.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        return np.asarray(pyfunc_model.predict(frame), dtype=np.float64).reshape(-1)
