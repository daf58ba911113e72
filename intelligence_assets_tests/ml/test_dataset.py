from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from intelligence_assets.ml.bars import TIMESTAMP_DTYPE
from intelligence_assets.ml.dataset import Dataset, build_dataset, build_inference_matrix
from intelligence_assets.ml.features import FeatureSettings, build_features, feature_names
from intelligence_assets.ml.synthetic import synthetic_bars
from intelligence_assets.ml.targets import BarrierTarget, DirectionTarget, ForwardReturnTarget, build_labels

START = datetime(2020, 1, 1, tzinfo=UTC)


def _times(indices: list[int]) -> list[datetime]:
    return [START + timedelta(hours=i) for i in indices]


@pytest.fixture
def features() -> pl.DataFrame:
    # Rows 0..5; `a` missing at 0, `b` missing (NaN) at 3, `c` missing at 5.
    return pl.DataFrame(
        {
            "timestamp": _times([0, 1, 2, 3, 4, 5]),
            "a": [None, 1.0, 2.0, 3.0, 4.0, 5.0],
            "b": [10.0, 11.0, 12.0, float("nan"), 14.0, 15.0],
            "c": [0.1, 0.2, 0.3, 0.4, 0.5, None],
        },
        schema={"timestamp": TIMESTAMP_DTYPE, "a": pl.Float64, "b": pl.Float64, "c": pl.Float64},
    )


@pytest.fixture
def labels() -> pl.DataFrame:
    # Rows 1..6 (row 0 absent, row 6 has no features); label missing at 4.
    return pl.DataFrame(
        {
            "timestamp": _times([1, 2, 3, 4, 5, 6]),
            "label": [1, 0, 1, None, 1, 0],
            "forward_return_1": [0.01, -0.02, 0.03, 0.04, 0.05, None],
        },
        schema={"timestamp": TIMESTAMP_DTYPE, "label": pl.Int8, "forward_return_1": pl.Float64},
    )


def test_inner_join_keeps_rows_with_every_feature_and_label(features, labels):
    dataset = build_dataset(features, labels)
    # Row 0: no label row; 3: b is NaN; 4: label null; 5: c null; 6: no feature row.
    assert dataset.feature_names == ["a", "b", "c"]
    assert dataset.timestamps.tolist() == [t.replace(tzinfo=None) for t in _times([1, 2])]
    assert dataset.x.tolist() == [[1.0, 11.0, 0.2], [2.0, 12.0, 0.3]]
    assert dataset.y.tolist() == [1, 0]
    assert dataset.y.dtype == np.int64
    assert dataset.forward_return_1.tolist() == [0.01, -0.02]
    assert dataset.x.dtype == np.float64 and dataset.n_rows == 2


def test_chosen_features_ignore_missing_values_elsewhere(features, labels):
    dataset = build_dataset(features, labels, feature_names=["c", "a"])
    # Without `b` the NaN at row 3 no longer matters; `c` still rules out row 5.
    assert dataset.feature_names == ["c", "a"]
    assert dataset.x.tolist() == [[0.2, 1.0], [0.3, 2.0], [0.4, 3.0]]
    assert dataset.y.tolist() == [1, 0, 1]


def test_regression_labels_are_float_and_nan_labels_dropped(features, labels):
    float_labels = labels.with_columns(pl.Series("label", [0.5, float("nan"), -0.5, 1.0, 2.0, 3.0]))
    dataset = build_dataset(features, float_labels, feature_names=["a"])
    assert dataset.y.dtype == np.float64
    assert dataset.y.tolist() == [0.5, -0.5, 1.0, 2.0]  # rows 1, 3, 4, 5; row 2's label is NaN


def test_rows_come_out_in_time_order(features, labels):
    dataset = build_dataset(
        features.reverse(), labels.sample(fraction=1.0, shuffle=True, seed=0), feature_names=["a", "c"]
    )
    assert np.all(np.diff(dataset.timestamps.astype("int64")) > 0)
    assert dataset.x[:, 0].tolist() == [1.0, 2.0, 3.0]


def test_inference_matrix_keeps_rows_without_labels(features):
    timestamps, x = build_inference_matrix(features, ["a", "c"])
    assert timestamps.tolist() == [t.replace(tzinfo=None) for t in _times([1, 2, 3, 4])]
    assert x.tolist() == [[1.0, 0.2], [2.0, 0.3], [3.0, 0.4], [4.0, 0.5]]
    timestamps, x = build_inference_matrix(features.reverse(), ["a"])
    assert x[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]  # row 5 included: its label is irrelevant here


def test_bad_names_raise(features, labels):
    with pytest.raises(ValueError, match="'missing'"):
        build_dataset(features, labels, feature_names=["a", "missing"])
    with pytest.raises(ValueError, match="'label'"):
        build_dataset(features, labels.drop("label"))
    with pytest.raises(ValueError, match="'zzz'"):
        build_inference_matrix(features, ["zzz"])
    with pytest.raises(ValueError, match="shape"):
        Dataset(
            timestamps=np.zeros(2), x=np.zeros((3, 1)), y=np.zeros(2), feature_names=["a"], forward_return_1=np.zeros(2)
        )


@pytest.mark.parametrize(
    "spec",
    [
        DirectionTarget(name="up_3", horizon=3),
        ForwardReturnTarget(name="return_5", horizon=5),
        BarrierTarget(name="peak_4", horizon=4, side="peak", atr_multiple=1.0),
    ],
    ids=["direction", "forward_return", "barrier"],
)
def test_end_to_end_rows_drop_warm_up_and_label_tail(spec):
    bars = synthetic_bars(n_bars=500, seed=31)
    settings = FeatureSettings()
    features = build_features(bars, settings)
    labels = build_labels(bars, spec)
    dataset = build_dataset(features, labels)
    warm_up = max(features[name].null_count() for name in feature_names(settings))
    assert warm_up == 199  # the 200-bar moving average
    assert dataset.n_rows == bars.height - warm_up - spec.horizon
    assert dataset.timestamps[0] == bars["timestamp"][warm_up].replace(tzinfo=None)
    assert not np.isnan(dataset.x).any() and not np.isnan(dataset.forward_return_1).any()
    closes = bars["close"].to_numpy()
    assert dataset.forward_return_1[0] == pytest.approx(np.log(closes[warm_up + 1] / closes[warm_up]), rel=1e-12)
    timestamps, x = build_inference_matrix(features, feature_names(settings))
    assert x.shape == (bars.height - warm_up, len(feature_names(settings)))
    assert np.array_equal(x[: dataset.n_rows], dataset.x)
