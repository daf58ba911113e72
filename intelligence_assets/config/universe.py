"""The universe: which symbols, targets, features and model families the platform trains.

Loaded from `data/universe.yaml` (or the file named by INTELLIGENCE_UNIVERSE) into typed,
validated config. A bad file fails here, at load, with the field path and the offending value,
rather than deep inside a run.
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from intelligence_assets.ml.bars import GapSettings, infer_bars_per_year
from intelligence_assets.ml.families.base import TASKS
from intelligence_assets.ml.features import FeatureSettings
from intelligence_assets.ml.hyperparameter_search import SearchSettings
from intelligence_assets.ml.leakage import LeakageSettings
from intelligence_assets.ml.ranking import RankingSettings
from intelligence_assets.ml.selection import SelectionSettings
from intelligence_assets.ml.splits import SplitSettings
from intelligence_assets.ml.targets import FORBIDDEN_KEY_CHARACTERS, TargetSpec
from intelligence_assets.tracking.promotion import PromotionSettings
from intelligence_assets.tracking.retention import RetentionSettings

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_UNIVERSE_PATH = REPOSITORY_ROOT / "data" / "universe.yaml"
UNIVERSE_PATH_VARIABLE = "INTELLIGENCE_UNIVERSE"


class ConfigurationError(ValueError):
    """Bad configuration (a file or the environment), described one line per problem: our
    commands print it and exit with status 2 (`exit_on_configuration_error`)."""


class UniverseError(ConfigurationError):
    """The universe file is missing, unreadable or invalid."""


def exit_on_configuration_error(main: Callable[[], object]) -> None:
    """Run a command's `main`. On a configuration error, print its message (one line per problem)
    to stderr and exit with status 2, as argparse does for bad arguments: the traceback would
    only bury the message, which names the field and value to fix."""
    try:
        main()
    except ConfigurationError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None


def symbol_problem(symbol: str) -> str | None:
    """Why `symbol` cannot name a symbol, or None. A symbol is a partition key (none of
    FORBIDDEN_KEY_CHARACTERS) and a path segment: its bars are the file `<SYMBOL>.parquet` at the top
    of the bars directory, its artifacts live under `<asset>/<SYMBOL>/`."""
    if not symbol:
        return "a symbol must not be empty"
    segment = (
        "a symbol names the file <SYMBOL>.parquet and the artifact folder <asset>/<SYMBOL>/, so it must be one path "
        "segment"
    )
    separators = {"/", "\\"}
    unprintable = sorted({character for character in symbol if not character.isprintable()})
    forbidden = FORBIDDEN_KEY_CHARACTERS.intersection(symbol)
    if symbol in (".", ".."):
        reason = f"{symbol!r} is a directory, not a name ({segment})"
    elif separators.intersection(symbol):
        reason = f"it holds a path separator, {' and '.join(sorted(separators.intersection(symbol)))} ({segment})"
    elif unprintable:
        reason = f"it holds control or unprintable characters {', '.join(f'U+{ord(c):04X}' for c in unprintable)}"
    elif forbidden:
        reason = f"partition keys may not contain {sorted(forbidden)!r}"
    else:
        return None
    bad = separators | FORBIDDEN_KEY_CHARACTERS | set(unprintable)
    replacement = "-".join(part for part in "".join("-" if c in bad else c for c in symbol).split("-") if part)
    suggestion = f"; use e.g. {replacement!r}" if replacement.strip(".") else ""
    return f"symbol {symbol!r} cannot be used: {reason}{suggestion}"


# What Dagster accepts as an asset owner.
OWNER_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
OWNER_TEAM = re.compile(r"team:[A-Za-z0-9_-]+")


class _Strict(BaseModel):
    # A field's docstring is its description.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class BarsSettings(_Strict):
    directory: str = "bars"
    """Where `<SYMBOL>.parquet` files live, relative to the universe file."""
    bars_per_year: dict[str, float] = Field(default_factory=dict)
    """Bars per year by symbol, for annualising Sharpe. A symbol not listed has it inferred from its own
    timestamps (about 252 for daily stock bars, 6,240 for hourly FX trading 24x5, 19,656 for 5-minute bars of a
    6.5-hour session)."""
    min_history: int = Field(default=1000, ge=50)
    """Fewer bars than this fails the `minimum_history` check. A symbol with more bars may still have too few
    complete feature rows for its targets' splits: `features` then fails naming the row counts."""
    max_gap_trading_days: float = Field(default=5.0, gt=0)
    """The `no_long_gaps` check flags a gap between two bars that skips this many trading days of bars or more,
    counted on the symbol's own weekly schedule (nights, weekends and single holidays skip none or little); for
    weekly or coarser bars, this many bars."""
    gaps_block: bool = True
    """Whether a gap flagged by `no_long_gaps` blocks the symbol's downstream assets."""

    @property
    def gap_settings(self) -> GapSettings:
        return GapSettings(max_trading_days=self.max_gap_trading_days)

    @field_validator("bars_per_year", mode="before")
    @classmethod
    def _per_symbol(cls, value: Any) -> Any:
        if isinstance(value, (int, float)):
            raise ValueError(
                "bars per year is inferred per symbol from its timestamps; to set it, give a mapping by symbol, e.g. "
                "{EURUSD: 6240}"
            )
        return value

    @field_validator("bars_per_year")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = sorted(symbol for symbol, bars in value.items() if not bars > 0)
        if bad:
            raise ValueError(f"bars per year must be > 0, not for {bad}")
        return value


class ModelFamilySettings(_Strict):
    params: dict[str, Any] = Field(default_factory=dict)
    """Hyper-parameters passed to the family; a name the family does not accept (`accepted_params`) fails at load."""
    gpu: bool | None = None
    """Train on a GPU (the `gpu` pool; a GPU pod on Kubernetes). Default: the family's own `uses_gpu`;
    true for a family that can use one (xgboost)."""
    search: SearchSettings | None = None
    """A hyperparameter search per symbol x target (`hyperparameter_search/<family>`), whose best
    params the family's models train with; None trains with `params` alone."""


class PodResources(_Strict):
    cpu: str = Field(pattern=r"^[0-9]+(\.[0-9]+)?m?$")
    """Kubernetes CPU quantity, e.g. 1, 1.5 or 500m."""
    memory: str
    """Kubernetes memory quantity, e.g. 2Gi."""


class Toleration(_Strict):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class KubernetesSettings(_Strict):
    """Step pods in the `k8s` deployment (k8s_job_executor: one pod per step)."""

    cpu_step: PodResources = PodResources(cpu="1", memory="2Gi")
    """Requests of heavy CPU steps (rankings, selection, CPU families)."""
    gpu_step: PodResources = PodResources(cpu="4", memory="16Gi")
    """Requests of GPU training steps, besides the GPUs."""
    gpus_per_step: int = Field(default=1, ge=1)
    """nvidia.com/gpu limit of a GPU step."""
    gpu_image: str | None = None
    """Image of GPU steps (built from Dockerfile --build-arg EXTRA=gpu); None keeps the code location's image."""
    gpu_node_selector: dict[str, str] = Field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    gpu_tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]
    )


class LeaderboardSettings(_Strict):
    classification_metric: Literal["auc", "accuracy", "sharpe"] = "auc"
    regression_metric: Literal["ic", "rank_ic", "sharpe"] = "rank_ic"


class AutomationSettings(_Strict):
    retrain_cron: str = "0 4 * * 1"
    """When the retrain schedule looks for stale or old model partitions (UTC); weekly by default."""
    search_cron: str = "0 2 * * 6"
    """When the `periodic_search` schedule, once started, searches again where a search is stale (UTC)."""
    retrain_max_age_days: float = Field(default=7.0, gt=0)
    """A model computed longer ago than this is requested again by the retrain schedule."""
    bars_sensor_interval_seconds: int = Field(default=60, ge=5)
    automation_sensor_interval_seconds: int = Field(default=30, ge=5)
    """How often the `automation` sensor evaluates every asset's automation condition (Dagster's
    default, 30 s): how soon declarative automation reacts, against the daemon's work per tick."""
    decay_sensor_interval_seconds: int = Field(default=3600, ge=30)
    decay_window_rows: int = Field(default=60, ge=10)
    """The champion's most recent labelled predictions after its held-out period, scored by the decay sensor."""
    decay_min_rows: int = Field(default=30, ge=5)
    """Fewer new labelled rows than this: too early to judge decay."""
    decay_max_skill_loss: float = Field(default=0.5, gt=0, le=1)
    """Retrain when recent skill (score - no skill) falls below (1 - this) x held-out skill."""
    gpu_slots: int | None = Field(default=None, ge=0)
    """Limit of the `gpu` pool: GPU training steps at once. Default: the host's GPUs x
    `gpus.steps_per_gpu` (at least 1, so GPU families still train on a host without one)."""
    cpu_slots: int = Field(default=2, ge=1)
    """Limit of the `cpu` pool: heavy CPU steps at once (cores, or nodes x cores)."""
    search_slots: int = Field(default=1, ge=0)
    """Limit of the `search` pool: hyperparameter search steps at once, apart from the `cpu` and `gpu` pools."""
    production_priority: int = 10
    """dagster/priority of schedule and sensor runs (production retraining)."""
    exploratory_priority: int = -10
    """dagster/priority of exploratory jobs (hyper-parameter search); lower runs later."""
    backfill_partitions_per_run: int = Field(default=100, ge=1)
    """Partitions per backfill run of every partitioned asset's BackfillPolicy (`bars`: twice this)."""

    @field_validator("retrain_cron", "search_cron")
    @classmethod
    def _valid_cron(cls, cron: str) -> str:
        # Judged by the public class the retrain schedule is built with, so exactly what Dagster
        # accepts passes (Dagster vendors its cron parser: there is no croniter to ask). Imported
        # here so that loading a universe does not load Dagster.
        import dagster as dg

        try:
            dg.ScheduleDefinition(name="retrain_cron", cron_schedule=cron, job_name="retrain_cron")
        except dg.DagsterInvalidDefinitionError:
            raise ValueError(f"not a valid cron expression: {cron!r}") from None
        return cron


class GpuSettings(_Strict):
    """Which GPUs of a host GPU steps use, and how many steps share one (`devices/`). On Kubernetes
    each GPU pod sees the one GPU its `nvidia.com/gpu` limit gave it, and none of this applies."""

    devices: list[int | str] | None = None
    """The host's GPUs GPU steps may use: CUDA indices or GPU UUIDs. None: every GPU the host shows
    (the operator's CUDA_VISIBLE_DEVICES if set, else NVML). Listed GPUs that the host does not
    have fail the first GPU step, naming this setting."""
    steps_per_gpu: int = Field(default=1, ge=1, le=64)
    """GPU steps that may share one GPU at once: more than 1 packs small models (torch_mlp leaves
    a GPU mostly idle), never more than this."""

    @field_validator("devices")
    @classmethod
    def _distinct(cls, devices: list[int | str] | None) -> list[int | str] | None:
        if devices is not None:
            if not devices:
                raise ValueError("an empty list would leave GPU steps nowhere to run; omit `devices` to discover")
            duplicates = sorted(name for name, count in Counter(str(d) for d in devices).items() if count > 1)
            if duplicates:
                raise ValueError(f"GPUs listed twice: {duplicates}")
        return devices


class Universe(_Strict):
    symbols: list[str] = Field(min_length=1)
    targets: list[TargetSpec] = Field(min_length=1)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    model_families: dict[str, ModelFamilySettings] = Field(min_length=1)
    split: SplitSettings = Field(default_factory=SplitSettings)
    ranking: RankingSettings = Field(default_factory=RankingSettings)
    selection: SelectionSettings = Field(default_factory=SelectionSettings)
    leaderboard: LeaderboardSettings = Field(default_factory=LeaderboardSettings)
    leakage_sentinel: LeakageSettings = Field(default_factory=LeakageSettings)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    automation: AutomationSettings = Field(default_factory=AutomationSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    gpus: GpuSettings = Field(default_factory=GpuSettings)
    bars: BarsSettings = Field(default_factory=BarsSettings)
    seed: int = Field(default=7, ge=0)
    owners: list[str] = Field(default_factory=lambda: ["team:intelligence"], min_length=1)
    """Who answers for the assets, shown on every asset in the UI: e-mail addresses or `team:<name>`."""
    # Set by `load_universe`: where relative paths in the file are resolved from.
    base_directory: Path = Field(default=REPOSITORY_ROOT / "data", exclude=True)
    # Set by `load_universe`: the file itself, which the new-bars sensor reads again every tick.
    source_path: Path | None = Field(default=None, exclude=True)

    @field_validator("symbols")
    @classmethod
    def _valid_symbols(cls, symbols: list[str]) -> list[str]:
        # One line per bad symbol, at its own path (symbols.<index>).
        problems = [
            InitErrorDetails(type=PydanticCustomError("invalid_symbol", message), loc=(index,), input=symbol)
            for index, symbol in enumerate(symbols)
            if (message := symbol_problem(symbol)) is not None
        ]
        if problems:
            raise ValidationError.from_exception_data("symbols", problems)
        duplicates = sorted({s for s in symbols if symbols.count(s) > 1})
        if duplicates:
            raise ValueError(f"duplicate symbols {duplicates}")
        return symbols

    @field_validator("owners")
    @classmethod
    def _dagster_owners(cls, owners: list[str]) -> list[str]:
        bad = [owner for owner in owners if not (OWNER_EMAIL.fullmatch(owner) or OWNER_TEAM.fullmatch(owner))]
        if bad:
            raise ValueError(f"owners {bad} are neither e-mail addresses nor team:<name> (e.g. team:quant-research)")
        return owners

    @field_validator("model_families")
    @classmethod
    def _known_families(
        cls, families: dict[str, ModelFamilySettings], info: ValidationInfo
    ) -> dict[str, ModelFamilySettings]:
        from intelligence_assets.ml.families import family_exists

        unknown = sorted(name for name in families if not family_exists(name))
        if unknown:
            raise ValueError(
                f"unknown model families {unknown}: each needs a module intelligence_assets/ml/families/<name>.py"
            )
        from intelligence_assets.ml.families import load_family

        # The tasks the targets train (validated before this field), for the libraries' checks of the
        # values; every task when the targets themselves are invalid.
        targets = info.data.get("targets") or []
        tasks = tuple(sorted({target.task for target in targets})) or TASKS
        # Raised as a ValidationError of their own, so that each problem has its own path
        # (model_families.<name>.params) and line instead of all sharing `model_families`.
        problems: list[InitErrorDetails] = []
        for name, settings in list(families.items()):
            family = load_family(name)
            if settings.search is not None and settings.search.space is None:
                try:
                    settings = settings.model_copy(update={"search": settings.search.with_space_of(family)})
                except ValueError as error:
                    problems.append(
                        InitErrorDetails(
                            type=PydanticCustomError("no_search_space", str(error)),
                            loc=(name, "search", "space"),
                            input=None,
                        )
                    )
                    continue
                families[name] = settings
            if settings.gpu and not (family.uses_gpu or family.can_use_gpu):
                message = f"model family {name!r} cannot use a GPU; remove `gpu: true`"
                problems.append(
                    InitErrorDetails(
                        type=PydanticCustomError("gpu_not_supported", message), loc=(name, "gpu"), input=settings.gpu
                    )
                )
            unknown = family.unknown_params(settings.params)
            for parameter, message in unknown.items():
                problems.append(
                    InitErrorDetails(
                        type=PydanticCustomError("unknown_parameter", message), loc=(name, "params"), input=parameter
                    )
                )
            known = {parameter: value for parameter, value in settings.params.items() if parameter not in unknown}
            for parameter, message in family.invalid_params(known, tasks).items():
                problems.append(
                    InitErrorDetails(
                        type=PydanticCustomError("invalid_parameter", message),
                        loc=(name, "params"),
                        input=known.get(parameter),
                    )
                )
            if settings.search is not None and not unknown:
                problems.extend(_search_space_problems(name, family, known, settings.search, tasks))
        if problems:
            raise ValidationError.from_exception_data("model_families", problems)
        return families

    @model_validator(mode="after")
    def _bars_per_year_of_known_symbols(self) -> Universe:
        unknown = sorted(set(self.bars.bars_per_year) - set(self.symbols))
        if unknown:
            raise ValueError(f"bars.bars_per_year names symbols not in `symbols`: {unknown}")
        return self

    @model_validator(mode="after")
    def _unique_target_names(self) -> Universe:
        names = [target.name for target in self.targets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate target names {duplicates}")
        return self

    @property
    def bars_directory(self) -> Path:
        return (self.base_directory / self.bars.directory).resolve()

    def bars_per_year(self, symbol: str, timestamps: Any) -> float:
        """For annualising the symbol's Sharpe ratios: `bars.bars_per_year` when set for it, else
        inferred from its own `timestamps` (a polars Series)."""
        explicit = self.bars.bars_per_year.get(symbol)
        return explicit if explicit is not None else infer_bars_per_year(timestamps, self.bars.gap_settings)

    def trains_on_gpu(self, family: str) -> bool:
        from intelligence_assets.ml.families import load_family

        setting = self.model_families[family].gpu
        return load_family(family).uses_gpu if setting is None else setting

    @property
    def target_names(self) -> list[str]:
        return [target.name for target in self.targets]

    def target(self, name: str) -> TargetSpec:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(f"unknown target {name!r}; the universe defines {self.target_names}")

    def require_symbol(self, symbol: str) -> None:
        if symbol not in self.symbols:
            raise KeyError(f"unknown symbol {symbol!r}; the universe lists {self.symbols}")


def _search_space_problems(
    name: str, family: Any, params: dict[str, Any], search: SearchSettings, tasks: tuple[str, ...]
) -> list[InitErrorDetails]:
    """A search space is checked like `params`: every name accepted by the family, and each
    bound or choice a value the family can train with beside the configured params."""
    problems: list[InitErrorDetails] = []
    unknown = family.unknown_params(search.ranges)
    for parameter, message in unknown.items():
        problems.append(
            InitErrorDetails(
                type=PydanticCustomError("unknown_parameter", message),
                loc=(name, "search", "space"),
                input=parameter,
            )
        )
    for parameter, parameter_range in search.ranges.items():
        if parameter in unknown:
            continue
        for value in parameter_range.values_to_check():
            for message in family.invalid_params({**params, parameter: value}, tasks).values():
                problems.append(
                    InitErrorDetails(
                        type=PydanticCustomError("invalid_parameter", message),
                        loc=(name, "search", "space", parameter),
                        input=value,
                    )
                )
    return problems


def _describe(error: ValidationError, path: Path) -> str:
    lines = [f"invalid universe file {path}:"]
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"]) or "<root>"
        # Our validators' own words, without the "Value error, " pydantic puts before them.
        message = str(problem["ctx"]["error"]) if problem["type"] == "value_error" else problem["msg"]
        value = problem.get("input")
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        lines.append(f"  {location}: {message} (got {shown})")
    return "\n".join(lines)


def universe_path() -> Path:
    return Path(os.environ.get(UNIVERSE_PATH_VARIABLE) or DEFAULT_UNIVERSE_PATH).resolve()


def load_universe(path: Path | str | None = None) -> Universe:
    path = Path(path).resolve() if path is not None else universe_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as error:
        raise UniverseError(
            f"universe file not found: {path} (set {UNIVERSE_PATH_VARIABLE} or create data/universe.yaml)"
        ) from error
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise UniverseError(
            f"universe file {path} is not valid YAML{line}: {getattr(error, 'problem', None) or error}"
        ) from None
    if not isinstance(raw, dict):
        raise UniverseError(f"universe file {path} must hold a mapping at the top level, got {type(raw).__name__}")
    try:
        return Universe.model_validate({**raw, "base_directory": path.parent, "source_path": path})
    except ValidationError as error:
        raise UniverseError(_describe(error, path)) from None
