"""A trained model in its MLflow flavour, so anyone can load it with MLflow's own loaders
(`mlflow.lightgbm.load_model`, `mlflow.pyfunc.load_model`, ...), and the pyfunc predicts what
`TrainedModel.predict` predicts (tested for every family).

Each family declares its flavour (`ModelFamily.mlflow_flavour`); this module implements every
flavour a family may declare (`MLFLOW_FLAVOURS`) and knows no family by name. The native flavours
(LightGBM, XGBoost, PyTorch) save the family's `native_model()` (cut at the best iteration,
standardization inside the torch module); `python_function` saves a pyfunc around the family
object itself, for a family without a library of its own (`linear`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from intelligence_assets.ml.families import ModelFamily

# What loading a model of each flavour needs, whatever the family: numpy and pandas for the
# pyfunc's input frame, cloudpickle where the flavour pickles Python objects, and this package
# where the pickle holds the family object (its class lives here). The family adds its own
# (`ModelFamily.pip_requirements`); explicit, because MLflow's inference of them imports and scans
# the environment, seconds per model.
FLAVOUR_PIP_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "lightgbm": ("numpy", "pandas"),
    "xgboost": ("numpy", "pandas"),
    "pytorch": ("numpy", "pandas", "cloudpickle"),
    "python_function": ("numpy", "pandas", "cloudpickle", "intelligence-assets"),
}


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

    return ModelSignature(
        inputs=Schema([ColSpec("double", name) for name in feature_names]), outputs=Schema([ColSpec("double")])
    )


def pip_requirements(model: ModelFamily) -> list[str]:
    """The logged model's pip requirements: the family's, then its flavour's, each name once."""
    return list(dict.fromkeys((*model.pip_requirements, *FLAVOUR_PIP_REQUIREMENTS[model.mlflow_flavour])))


def _native_model(model: ModelFamily) -> Any:
    native = model.native_model()
    if native is None:
        raise ValueError(
            f"model family {model.name!r} declares the {model.mlflow_flavour!r} MLflow flavour, but its "
            "native_model() returned None"
        )
    return native


def _save_lightgbm(model: ModelFamily, path: str, signature: Any, requirements: list[str]) -> None:
    import mlflow.lightgbm

    mlflow.lightgbm.save_model(_native_model(model), path, signature=signature, pip_requirements=requirements)


def _save_xgboost(model: ModelFamily, path: str, signature: Any, requirements: list[str]) -> None:
    import mlflow.xgboost

    mlflow.xgboost.save_model(
        _native_model(model), path, signature=signature, pip_requirements=requirements, model_format="json"
    )


def _save_pytorch(model: ModelFamily, path: str, signature: Any, requirements: list[str]) -> None:
    import mlflow.pytorch

    # Pickled (cloudpickle) rather than exported: torch.export needs an example input and
    # fixes shapes; the pickle keeps the standardization inside the module. MLflow warns
    # about pickles on every save; the choice is made here, once.
    with _quiet("mlflow.pytorch"):
        mlflow.pytorch.save_model(
            _native_model(model),
            path,
            signature=signature,
            pip_requirements=requirements,
            serialization_format="pickle",
        )


def _save_python_function(model: ModelFamily, path: str, signature: Any, requirements: list[str]) -> None:
    import mlflow.pyfunc

    from intelligence_assets.tracking.family_pyfunc import FamilyModel

    # MLflow nudges towards an input example and model-from-code; the signature already states
    # the schema, and the pickled object is our own family class.
    with _quiet("mlflow.pyfunc"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mlflow.pyfunc.save_model(
            path, python_model=FamilyModel(model), signature=signature, pip_requirements=requirements
        )


# One per name in MLFLOW_FLAVOURS (a test holds them equal).
SAVERS: dict[str, Callable[[ModelFamily, str, Any, list[str]], None]] = {
    "lightgbm": _save_lightgbm,
    "xgboost": _save_xgboost,
    "pytorch": _save_pytorch,
    "python_function": _save_python_function,
}


def save_in_flavour(model: ModelFamily, feature_names: list[str], directory: Path) -> str:
    """Write `model` as an MLflow model directory at `directory` (which must not exist), in the
    flavour its family declares; returns that flavour's name, as MLflow writes it in `MLmodel`."""
    flavour = model.mlflow_flavour
    SAVERS[flavour](model, str(directory), model_signature(feature_names), pip_requirements(model))
    return flavour


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
