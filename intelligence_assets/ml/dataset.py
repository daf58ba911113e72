"""Aligning the feature matrix with labels into numpy arrays for the models.

Rows with any missing chosen feature (warm-up) or a missing label (label window past the series
end) are dropped. That is safe for purging: the splits purge and embargo by *row* distance, and
dropping rows can only shrink the distance in rows between two bars, never grow it
(row distance <= bar distance). So a gap of more than `label_horizon` rows between a training row
and a test row still means more than `label_horizon` bars, and the training row's label window
(bars t+1 .. t+horizon) ends before the test row: purging by rows is conservative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass
class Dataset:
    """Model-ready rows in time order.

    `y` is int64 for integer labels (classification) and float64 otherwise; `forward_return_1`
    is float64 (NaN only where the labels frame had none, which cannot happen for a row whose
    label window of >= 1 bar is complete).
    """

    timestamps: np.ndarray  # datetime64[us], UTC wall time, strictly increasing
    x: np.ndarray  # float64, shape (rows, features)
    y: np.ndarray  # shape (rows,)
    feature_names: list[str]
    forward_return_1: np.ndarray  # float64, shape (rows,)

    def __post_init__(self) -> None:
        rows = len(self.timestamps)
        if self.x.ndim != 2 or self.x.shape != (rows, len(self.feature_names)):
            raise ValueError(f"x has shape {self.x.shape}, expected ({rows}, {len(self.feature_names)})")
        if self.y.shape != (rows,) or self.forward_return_1.shape != (rows,):
            raise ValueError(
                f"y {self.y.shape} and forward_return_1 {self.forward_return_1.shape} must have shape ({rows},)"
            )

    @property
    def n_rows(self) -> int:
        return len(self.timestamps)


def utc_timestamps(values: np.ndarray) -> pl.Series:
    """Timestamps the core handed back as numpy datetimes (UTC, zone dropped), with their zone."""
    return pl.Series("timestamp", values).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def build_dataset(features: pl.DataFrame, labels: pl.DataFrame, feature_names: list[str] | None = None) -> Dataset:
    """Inner-join `features` (timestamp + feature columns) and `labels` (timestamp, label,
    forward_return_1) on timestamp; keep rows where every chosen feature and the label are
    present (null and NaN both count as missing). `feature_names=None` takes every feature
    column, in the frame's order."""
    names = _chosen_features(features, feature_names)
    for column in ("timestamp", "label", "forward_return_1"):
        if column not in labels.columns:
            raise ValueError(f"labels lack column {column!r}")
    label_is_integer = labels.schema["label"].is_integer()
    joined = (
        _complete_rows(features, names)
        .join(labels.select("timestamp", "label", "forward_return_1"), on="timestamp", how="inner")
        .filter(_present(pl.col("label")))
        .sort("timestamp")
    )
    y = joined["label"].to_numpy()
    y = y.astype(np.int64) if label_is_integer else y.astype(np.float64)
    return Dataset(
        timestamps=joined["timestamp"].to_numpy(),
        x=_matrix(joined, names),
        y=y,
        feature_names=names,
        forward_return_1=joined["forward_return_1"].cast(pl.Float64).fill_null(float("nan")).to_numpy(),
    )


def build_inference_matrix(features: pl.DataFrame, feature_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps, x) for every row whose chosen features are all present, in time order; no
    labels involved, so the latest bars (whose labels are still unknown) are included."""
    names = _chosen_features(features, feature_names)
    complete = _complete_rows(features, names).sort("timestamp")
    return complete["timestamp"].to_numpy(), _matrix(complete, names)


def _chosen_features(features: pl.DataFrame, feature_names: list[str] | None) -> list[str]:
    if "timestamp" not in features.columns:
        raise ValueError("features lack column 'timestamp'")
    if feature_names is None:
        return [column for column in features.columns if column != "timestamp"]
    missing = [name for name in feature_names if name not in features.columns]
    if missing:
        raise ValueError(f"features lack column(s) {missing!r}")
    if len(set(feature_names)) != len(feature_names):
        raise ValueError(f"feature_names has duplicates: {feature_names!r}")
    return list(feature_names)


def _present(expr: pl.Expr) -> pl.Expr:
    # is_nan is only defined for floats; integer labels can only be null.
    return expr.is_not_null() & ~expr.cast(pl.Float64).is_nan().fill_null(False)


def _complete_rows(features: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    frame = features.select("timestamp", *names)
    if not names:
        return frame
    return frame.filter(pl.all_horizontal(_present(pl.col(name)) for name in names))


def _matrix(frame: pl.DataFrame, names: list[str]) -> np.ndarray:
    if not names:
        return np.empty((frame.height, 0), dtype=np.float64)
    return (
        frame.select(pl.col(name).cast(pl.Float64) for name in names)
        .to_numpy()
        .astype(np.float64, copy=False)
        .reshape(frame.height, len(names))
    )
