"""Model families. A family is one module in this package defining `FAMILY`, a subclass of
`ModelFamily` that also declares how it is presented and logged (`kinds`, `mlflow_flavour`,
`pip_requirements`); naming the module under `model_families` in universe.yaml enables it.
Family modules import their heavy library (torch, sklearn, lightgbm, xgboost) inside the
methods that need it: loading the definitions reads every family's `version` and `uses_gpu`,
and should not pay seconds of imports for models it will not train in that process."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable

from intelligence_assets.ml.families.base import ModelFamily, Task


def family_exists(name: str) -> bool:
    """Whether a family module exists, without importing it (definitions load stays light)."""
    return name.isidentifier() and importlib.util.find_spec(f"{__name__}.{name}") is not None


def load_family(name: str) -> type[ModelFamily]:
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name == f"{__name__}.{name}":
            raise ValueError(
                f"unknown model family {name!r}: no module intelligence_assets/ml/families/{name}.py"
            ) from error
        raise
    family = getattr(module, "FAMILY", None)
    if family is None or not issubclass(family, ModelFamily):
        raise ValueError(f"model family module {module.__name__} must define FAMILY = <ModelFamily subclass>")
    return family


def libraries_of(names: Iterable[str]) -> list[str]:
    """The heavy modules these families' training imports on first use (torch alone takes
    seconds), without importing them: for a long-lived worker to import while it has time."""
    return list(dict.fromkeys(module for name in names for module in load_family(name).libraries))


__all__ = ["ModelFamily", "Task", "family_exists", "libraries_of", "load_family"]
