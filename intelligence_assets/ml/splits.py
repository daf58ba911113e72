"""Purged, embargoed walk-forward splits.

Rows are bar indices 0..n-1 in time order. A row's label window is [i+1, i+label_horizon].
Guarantees, for every fold and for the final held-out period:
  * every training row lies before its test window (walk-forward, expanding);
  * no training row's label window overlaps the test window (purge);
  * at least `embargo` further bars separate the last training label window from the test
    window (the embargo: serial correlation in features must not bridge train and test);
  * the same purge and embargo separate the early-stopping validation slice from the rows
    used to fit.

Layout: the last `test_fraction` of rows is the held-out test period (only `held_out_split`
tests on it). The development period before it, less the purge + embargo gap in front of the
held-out period, is cut into `folds + 1` contiguous blocks; fold k (k = 1..folds) tests on
block k and fits on everything before it (expanding window). In every split the fitted rows
and the validation slice satisfy, with h = label_horizon:

    max(train) + h + embargo < min(validation)
    max(validation) + h + embargo < min(test)

i.e. a row i is kept in front of a window starting at s only if i + h + embargo < s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class SplitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    folds: int = Field(default=4, ge=2, le=20, description="Walk-forward folds over the development period.")
    embargo: int = Field(
        default=5, ge=0, description="Bars dropped after each label window before a test/validation window."
    )
    test_fraction: float = Field(
        default=0.2, gt=0.0, lt=0.6, description="Final share of rows held out for the test period."
    )
    validation_fraction: float = Field(
        default=0.15, gt=0.0, lt=0.5, description="Share of each training set kept for early stopping."
    )
    min_train_rows: int = Field(default=250, ge=10)
    score_models_on_folds: bool = Field(
        default=True,
        description=(
            "Also fit each model family on every walk-forward fold and record its per-fold scores (costs about folds "
            "x 0.6 more fits)."
        ),
    )


@dataclass(frozen=True)
class Fold:
    """Index arrays (positions into the dataset rows) for one split."""

    train: np.ndarray  # rows to fit on
    validation: np.ndarray  # early-stopping slice, after `train`, purged and embargoed from it
    test: np.ndarray  # evaluation window, after `validation`, purged and embargoed from it


def _last_row_before(window_start: int, label_horizon: int, embargo: int) -> int:
    """Exclusive end of the rows allowed in front of a window starting at `window_start`:
    row i qualifies iff i + label_horizon + embargo < window_start."""
    return max(0, window_start - label_horizon - embargo)


def _held_out_start(n_rows: int, settings: SplitSettings) -> int:
    # The tolerance keeps float noise (0.07 * 100 = 7.000000000000001) from adding a row.
    test_rows = max(1, math.ceil(n_rows * settings.test_fraction - 1e-9))
    return n_rows - test_rows


def _split_before(
    fit_end: int, test_start: int, test_end: int, label_horizon: int, settings: SplitSettings, what: str
) -> Fold:
    """Rows [0, fit_end) become train + validation (purged and embargoed from each other); the
    test window is [test_start, test_end). Caller guarantees fit_end respects the test gap."""
    validation_rows = max(1, round(fit_end * settings.validation_fraction))
    validation_start = fit_end - validation_rows
    train_end = _last_row_before(validation_start, label_horizon, settings.embargo)
    if train_end < settings.min_train_rows or test_end <= test_start:
        raise ValueError(
            f"too few rows for {what}: {train_end} training rows (min_train_rows={settings.min_train_rows}), "
            f"{validation_rows} validation rows, {test_end - test_start} test rows, after purging "
            f"label_horizon={label_horizon} and embargo={settings.embargo} bars at each boundary "
            f"(folds={settings.folds}, test_fraction={settings.test_fraction}, "
            f"validation_fraction={settings.validation_fraction})"
        )
    return Fold(
        train=np.arange(0, train_end, dtype=np.int64),
        validation=np.arange(validation_start, fit_end, dtype=np.int64),
        test=np.arange(test_start, test_end, dtype=np.int64),
    )


def walk_forward_folds(n_rows: int, label_horizon: int, settings: SplitSettings) -> list[Fold]:
    """Folds over the development period (all rows before the held-out test period).

    Raises ValueError when any fold would fit on fewer than `settings.min_train_rows` rows.
    """
    if label_horizon < 1:
        raise ValueError(f"label_horizon must be >= 1, got {label_horizon}")
    # Development rows whose label windows (plus embargo) end before the held-out period, so
    # walk-forward scores never look at held-out bars even through a label.
    development_end = _last_row_before(_held_out_start(n_rows, settings), label_horizon, settings.embargo)
    boundaries = np.linspace(0, development_end, settings.folds + 2).astype(np.int64)
    folds = []
    for k in range(1, settings.folds + 1):
        test_start, test_end = int(boundaries[k]), int(boundaries[k + 1])
        fit_end = _last_row_before(test_start, label_horizon, settings.embargo)
        folds.append(
            _split_before(
                fit_end,
                test_start,
                test_end,
                label_horizon,
                settings,
                f"walk-forward fold {k}/{settings.folds} of {n_rows} rows",
            )
        )
    return folds


def held_out_split(n_rows: int, label_horizon: int, settings: SplitSettings) -> Fold:
    """One split: fit on the development period, test on the final `test_fraction` of rows."""
    if label_horizon < 1:
        raise ValueError(f"label_horizon must be >= 1, got {label_horizon}")
    test_start = _held_out_start(n_rows, settings)
    fit_end = _last_row_before(test_start, label_horizon, settings.embargo)
    return _split_before(fit_end, test_start, n_rows, label_horizon, settings, f"the held-out split of {n_rows} rows")


def minimum_rows(label_horizon: int, settings: SplitSettings) -> int:
    """The fewest complete rows on which every walk-forward fold and the held-out split can be
    cut for a label of `label_horizon` bars. Found by bisection over the split functions
    themselves, so it cannot drift from them."""

    def enough(n_rows: int) -> bool:
        try:
            walk_forward_folds(n_rows, label_horizon, settings)
            held_out_split(n_rows, label_horizon, settings)
        except ValueError:
            return False
        return True

    low, high = 1, 2
    while not enough(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high
