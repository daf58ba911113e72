"""The one interface every model family implements."""

from __future__ import annotations

import difflib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

Task = Literal["classification", "regression"]
TASKS: tuple[str, ...] = ("classification", "regression")
META_FILE = "meta.json"
# The MLflow flavours a family may be logged in (`tracking.flavours` implements each): a library's
# own flavour, saving the family's `native_model()`, or MLflow's generic `python_function`, which
# pickles the family object and predicts with it.
MLFLOW_FLAVOURS: tuple[str, ...] = ("lightgbm", "xgboost", "pytorch", "python_function")


def _not_a_boolean(value: Any) -> Any:
    # A YAML `true` would pass as the number 1: a flag where a number belongs is a mistake.
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not the boolean {value!r}")
    return value


# The numbers of a family's settings. Lax like the int() and float() the families convert them with
# ("64", 64.0 and 64 are one integer; "1e-3" is a number, as YAML reads 1e-3 as a string), but
# never a boolean, nor a fraction where an integer belongs, nor NaN or infinity.
Integer = Annotated[int, BeforeValidator(_not_a_boolean)]
Number = Annotated[float, BeforeValidator(_not_a_boolean)]


class FamilySettings(BaseModel):
    """The types and bounds of the params a family reads itself (its `settings_model`). Checked
    against `default_params | params`, what training reads, so a field has no default here: the
    family's `default_params` hold them, unchanged. Other keys, params the family hands on to its
    library, pass through (`library_problems` checks those)."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True)


class ModelFamily(ABC):
    """A trainable model. Classification predicts P(label == 1); regression predicts the value.

    Subclasses set `name`, `version` (bump when training or the saved format changes: it is
    part of the asset code_version), `uses_gpu` (the family wants a GPU to train) and
    `can_use_gpu` (the family takes a GPU when one is visible, but runs fine without).

    A family also declares how the rest of the platform presents and logs it, so that adding one
    touches no other module: `kinds` (the Dagster kinds of its `models/<family>` asset),
    `mlflow_flavour` (one of `MLFLOW_FLAVOURS`) and `pip_requirements` (what its logged model
    needs installed to load, beyond what the flavour itself needs).
    """

    name: ClassVar[str]
    version: ClassVar[str]
    uses_gpu: ClassVar[bool] = False
    can_use_gpu: ClassVar[bool] = False
    # The heavy modules fit imports on first use (module names). A long-lived worker imports
    # them while it would otherwise wait (`families.libraries_of`), not in its first training.
    libraries: ClassVar[tuple[str, ...]] = ()
    # What `accepted_params` holds, in words, when it is too long for an error message (a
    # library's parameter reference); None lists the names in the message.
    params_reference: ClassVar[str | None] = None
    # The value of each param not given (training reads `default_params | params`); a given value
    # equal to its default is not checked again, so a file keeping the defaults loads without
    # importing the library.
    default_params: ClassVar[Mapping[str, Any]] = {}
    # The types and bounds of the params the family reads itself; None where it reads none.
    settings_model: ClassVar[type[FamilySettings] | None] = None
    # What a hyperparameter search tries when `search:` in universe.yaml gives no `space`: the
    # params that matter most for this family, with ranges wide enough for daily to intraday
    # bars (`ml.hyperparameter_search.ParameterRange` fields).
    search_space: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    # Shown as the asset's kinds (icons) in the Dagster UI, which shows at most three.
    kinds: ClassVar[tuple[str, ...]] = ("python",)
    # A library's flavour needs `native_model()` to return that library's object; python_function
    # works for any family, its model being the pickled family object.
    mlflow_flavour: ClassVar[str] = "python_function"
    # pip names, written to the logged model's requirements beside the flavour's own (numpy,
    # pandas, and what it pickles with). Explicit, because MLflow's inference of them imports
    # and scans the environment, seconds per model.
    pip_requirements: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Checked when the family module is imported (the universe imports every family it
        # names), so a misspelt declaration fails at load instead of at the first model logged.
        if cls.mlflow_flavour not in MLFLOW_FLAVOURS:
            raise ValueError(
                f"{cls.__qualname__}.mlflow_flavour is {cls.mlflow_flavour!r}; it must be one of {MLFLOW_FLAVOURS}"
            )
        for attribute in ("kinds", "pip_requirements"):
            value = getattr(cls, attribute)
            # A bare string would pass as a tuple of one-letter names.
            if not isinstance(value, tuple) or not all(isinstance(item, str) and item for item in value):
                raise ValueError(f"{cls.__qualname__}.{attribute} must be a tuple of non-empty strings, got {value!r}")

    def __init__(self, task: Task, params: dict[str, Any], seed: int) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.task = task
        self.params = dict(params)
        self.seed = seed
        # Filled by fit: per-iteration validation loss (for training curves) and iterations used.
        self.training_curve: list[float] = []
        self.best_iteration: int | None = None
        # Column count seen by fit; predict refuses any other width.
        self.n_features: int | None = None

    @classmethod
    @abstractmethod
    def accepted_params(cls) -> frozenset[str]:
        """Every name `params` may hold: those the family reads itself and, where it hands params
        on to its library, every name and alias the library takes. The universe checks its
        `model_families.<name>.params` against it at load, so that a misspelt name fails there
        instead of being silently ignored. May import the family's library."""

    @classmethod
    def unknown_params(cls, names: Iterable[str]) -> dict[str, str]:
        """Each of `names` that the family does not accept, with a one-line message naming it,
        the closest accepted names and the accepted names in full (or where to read them)."""
        names = set(names)
        if not names:
            return {}
        accepted = sorted(cls.accepted_params())
        listed = cls.params_reference or ", ".join(accepted)
        messages = {}
        for name in sorted(names.difference(accepted)):
            closest = difflib.get_close_matches(name, accepted, n=5)
            hint = f"closest: {', '.join(closest)}; " if closest else ""
            messages[name] = f"unknown parameter {name!r}; {hint}accepted: {listed}"
        return messages

    @classmethod
    def invalid_params(cls, params: Mapping[str, Any], tasks: Iterable[Task] = TASKS) -> dict[str, str]:
        """Each of `params` whose value the family cannot train with, with a one-line message
        naming it, its value and what is allowed. The universe checks its
        `model_families.<name>.params` with it at load (names `unknown_params` accepts), so that a
        bad value fails there instead of in every cell's training.

        The params the family reads itself are checked against its `settings_model`; the rest, and
        those the family also hands on, by `library_problems` for the `tasks` the universe trains,
        which may import the library. A value equal to its default is not checked again."""
        problems = cls._settings_problems(params)
        handed_on = {
            name: value
            for name, value in params.items()
            if name not in problems and not _same_value(cls.default_params.get(name, _MISSING), value)
        }
        if handed_on:
            problems |= cls.library_problems(handed_on, tuple(tasks))
        return problems

    @classmethod
    def library_problems(cls, params: Mapping[str, Any], tasks: tuple[Task, ...]) -> dict[str, str]:
        """What the family's library says of `params` (their own settings already valid), cheaply
        and without a real training, as in `invalid_params`: one message by param; a problem of
        several together is reported under one of them. None by default."""
        return {}

    @classmethod
    def _settings_problems(cls, params: Mapping[str, Any]) -> dict[str, str]:
        if cls.settings_model is None:
            return {}
        merged = {**cls.default_params, **params}
        try:
            cls.settings_model.model_validate(merged)
        except ValidationError as error:
            reasons: dict[str, list[str]] = {}
            for problem in error.errors(include_url=False):
                name, *inside = problem["loc"]
                reason = str(problem["ctx"]["error"]) if problem["type"] == "value_error" else problem["msg"]
                reason = re.sub(r"^\w+ should", "must", reason)
                where = f"item {'.'.join(str(part) for part in inside)} " if inside else ""
                reasons.setdefault(str(name), []).append(where + reason)
            fields = cls.settings_model.model_fields
            messages = {}
            for name, why in reasons.items():
                described = fields[name].description if name in fields else None
                about = f" ({name}: {described.rstrip('.')})" if described else ""
                messages[name] = f"parameter {name!r} = {merged.get(name)!r}: {'; '.join(why)}{about}"
            return messages
        return {}

    @abstractmethod
    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray) -> Self:
        """Fit with early stopping on the validation slice. Arrays are float32 / float64."""

    @abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """1-d float64 array: probabilities (classification) or values (regression)."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the model in its native format into an existing, empty directory."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path) -> Self:
        """Read back what `save` wrote; predictions must be identical."""

    def feature_importance(self) -> np.ndarray | None:
        """Gain (or comparable) importance per input column, if the family has one."""
        return None

    def native_model(self) -> Any | None:
        """The fitted model as its own library's object, predicting exactly what `predict` does
        (cut at the best iteration, standardization inside), for tools that load models in their
        native format such as MLflow's flavours. None when the family has no such library; a
        family declaring its library's `mlflow_flavour` must return one."""
        return None

    # Helpers shared by the families: input checks and the common part of meta.json.

    def _check_fit_inputs(
        self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Validated float64 copies of the fit inputs; sets `n_features`."""
        x_train = check_features(x_train, what="x_train")
        x_valid = check_features(x_valid, n_features=x_train.shape[1], what="x_valid")
        y_train = check_target(y_train, self.task, n_rows=x_train.shape[0], what="y_train")
        y_valid = check_target(y_valid, self.task, n_rows=x_valid.shape[0], what="y_valid")
        if self.task == "classification" and np.unique(y_train).size < 2:
            raise ValueError(f"{self.name}: y_train holds a single class; classification needs both 0 and 1")
        self.n_features = x_train.shape[1]
        return x_train, y_train, x_valid, y_valid

    def _check_predict_input(self, x: np.ndarray) -> np.ndarray:
        if self.n_features is None:
            raise RuntimeError(f"{self.name}: predict called before fit (or load)")
        return check_features(x, n_features=self.n_features, what="x")

    def _common_meta(self) -> dict[str, Any]:
        return {
            "family": self.name,
            "version": self.version,
            "task": self.task,
            "params": self.params,
            "seed": self.seed,
            "n_features": self.n_features,
            "best_iteration": self.best_iteration,
            "training_curve": [float(value) for value in self.training_curve],
        }

    def _write_meta(self, directory: Path, **extra: Any) -> None:
        meta = self._common_meta() | extra
        (Path(directory) / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def _read_meta(cls, directory: Path) -> tuple[Self, dict[str, Any]]:
        """A bare instance restored from meta.json (model state still to load), and the meta."""
        meta = json.loads((Path(directory) / META_FILE).read_text())
        if meta.get("family") != cls.name:
            raise ValueError(f"{directory} holds a {meta.get('family')!r} model, not {cls.name!r}")
        if meta.get("version") != cls.version:
            raise ValueError(
                f"{directory} holds {cls.name} format version {meta.get('version')!r}; this code reads version "
                f"{cls.version!r}"
            )
        instance = cls(meta["task"], meta["params"], meta["seed"])
        instance.n_features = meta["n_features"]
        instance.best_iteration = meta["best_iteration"]
        instance.training_curve = list(meta["training_curve"])
        return instance, meta


_MISSING = object()


def _same_value(default: Any, value: Any) -> bool:
    """Whether `value` is the default itself (1 is not 1.0, nor True: the library may read them apart)."""
    return default is not _MISSING and type(default) is type(value) and default == value


def library_error_text(error: BaseException) -> str:
    """A library's error as one line: its first lines without the native source position, the
    timestamp and the stack trace that LightGBM and XGBoost append."""
    text = str(error).split("Stack trace:")[0]
    text = re.sub(r"\[\d{2}:\d{2}:\d{2}\] \S+:\d+: ", "", text)
    text = re.sub(r" at \S+, line \d+ ?\.?", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def probe_data(task: Task) -> tuple[np.ndarray, np.ndarray]:
    """20 rows of 2 features, the same every time (both classes for classification): what a
    `library_problems` fits its one round on, in a few milliseconds."""
    rows = np.arange(20, dtype=np.float64)
    x = np.column_stack([rows, (rows * 7) % 20])
    y = rows % 2 if task == "classification" else ((rows * 3) % 20) / 19
    return x, y


def blame(library: str, params: Mapping[str, Any], failure: Callable[[dict[str, Any]], str | None]) -> dict[str, str]:
    """`library_problems` from a check of params by their library: `failure` runs it on some params
    (their error as one line, or None when they pass). All params are checked together first (one
    check when they are valid); when that fails, each alone, so that each bad one has its own message.
    When none fails alone, their combination is reported under the first one its error names."""
    together = failure(dict(params))
    if together is None:
        return {}
    alone = {name: failure({name: value}) for name, value in params.items()}
    problems = {
        name: f"parameter {name!r} = {params[name]!r}: {library} refuses it: {message}"
        for name, message in alone.items()
        if message is not None
    }
    if problems:
        return problems
    named = [name for name in params if re.search(rf"\b{re.escape(name)}\b", together)] or list(params)
    listed = ", ".join(f"{name}={value!r}" for name, value in params.items())
    return {named[0]: f"parameters {listed}: {library} refuses them together: {together}"}


def check_features(x: np.ndarray, n_features: int | None = None, what: str = "x") -> np.ndarray:
    """`x` as a finite, non-empty 2-d float64 array (with `n_features` columns, when given)."""
    array = np.asarray(x)
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-d (rows x features), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{what} must have at least one row and one column, got shape {array.shape}")
    if n_features is not None and array.shape[1] != n_features:
        raise ValueError(f"{what} has {array.shape[1]} columns; the model expects {n_features}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"{what} must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"{what} holds {bad} non-finite values (NaN or inf); drop or fill them before fitting")
    return array


def check_target(y: np.ndarray, task: str, n_rows: int, what: str = "y") -> np.ndarray:
    """`y` as a finite 1-d float64 array of `n_rows` values; 0/1 for classification."""
    array = np.asarray(y)
    if array.ndim != 1:
        raise ValueError(f"{what} must be 1-d, got shape {array.shape}")
    if array.shape[0] != n_rows:
        raise ValueError(f"{what} has {array.shape[0]} rows but its features have {n_rows}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"{what} must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(f"{what} holds non-finite values (NaN or inf)")
    if task == "classification" and not np.isin(array, (0.0, 1.0)).all():
        raise ValueError(f"{what} must hold only 0 and 1 for classification")
    return array


def standardization(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (float64); a constant column gets std 1."""
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    std = np.where(std > 0.0, std, 1.0)
    return mean, std
