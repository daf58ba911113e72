import numpy as np
import pytest

from intelligence_assets.ml.splits import Fold, SplitSettings, held_out_split, walk_forward_folds


def _assert_purged_and_embargoed(fold: Fold, horizon: int, embargo: int) -> None:
    for part in (fold.train, fold.validation, fold.test):
        assert part.dtype == np.int64
        assert part.size > 0
        assert np.all(np.diff(part) > 0), "indices must be sorted and unique"
    # Label window of row i is [i+1, i+h]; it and `embargo` more bars must end before the next window.
    assert fold.train.max() + horizon + embargo < fold.validation.min()
    assert fold.validation.max() + horizon + embargo < fold.test.min()
    assert fold.train.max() < fold.test.min()
    assert not set(fold.train) & set(fold.validation)
    assert not set(fold.train) & set(fold.test)
    assert not set(fold.validation) & set(fold.test)


def _random_cases(count: int, seed: int):
    rng = np.random.default_rng(seed)
    produced = 0
    while produced < count:
        settings = SplitSettings(
            folds=int(rng.integers(2, 9)),
            embargo=int(rng.integers(0, 30)),
            test_fraction=float(rng.uniform(0.05, 0.55)),
            validation_fraction=float(rng.uniform(0.02, 0.45)),
            min_train_rows=int(rng.integers(10, 200)),
        )
        n_rows = int(rng.integers(200, 6000))
        horizon = int(rng.integers(1, 60))
        yield n_rows, horizon, settings
        produced += 1


def test_walk_forward_folds_are_purged_embargoed_and_walk_forward():
    checked = 0
    for n_rows, horizon, settings in _random_cases(400, seed=7):
        try:
            folds = walk_forward_folds(n_rows, horizon, settings)
        except ValueError:
            continue
        checked += 1
        assert len(folds) == settings.folds
        held_out_start = held_out_split(n_rows, horizon, settings).test.min()
        for fold in folds:
            _assert_purged_and_embargoed(fold, horizon, settings.embargo)
            assert fold.train.size >= settings.min_train_rows
            # Development folds never reach the held-out period, not even through a label window.
            assert fold.test.max() + horizon + settings.embargo < held_out_start
        for earlier, later in zip(folds, folds[1:], strict=False):
            assert earlier.test.max() < later.test.min()
            # Expanding window: each fold fits on at least as much history as the one before.
            assert later.train.size >= earlier.train.size
    assert checked > 100, f"only {checked} random cases were large enough to split"


def test_held_out_split_tests_on_the_last_fraction():
    checked = 0
    for n_rows, horizon, settings in _random_cases(400, seed=11):
        try:
            fold = held_out_split(n_rows, horizon, settings)
        except ValueError:
            continue
        checked += 1
        _assert_purged_and_embargoed(fold, horizon, settings.embargo)
        assert fold.test.max() == n_rows - 1
        assert -1e-6 < fold.test.size - n_rows * settings.test_fraction < 1
        assert np.array_equal(fold.test, np.arange(n_rows - fold.test.size, n_rows))
        assert fold.train.size >= settings.min_train_rows
    assert checked > 200


def test_purge_on_a_hand_case():
    # 100 rows, horizon 5, no embargo: held-out test is rows 80..99. Row 75's label window is
    # [76, 80] and touches row 80, so it must be purged; row 74's window [75, 79] may stay.
    settings = SplitSettings(folds=2, embargo=0, test_fraction=0.2, validation_fraction=0.1, min_train_rows=10)
    fold = held_out_split(100, 5, settings)
    assert fold.test.min() == 80
    assert fold.validation.max() == 74
    fitted_or_validated = set(fold.train) | set(fold.validation)
    assert not fitted_or_validated & {75, 76, 77, 78, 79}
    # Validation is rows 67..74 (10% of 75 rows, rounded); the training rows' windows end before 67.
    assert fold.validation.min() == 67
    assert fold.train.max() == 61


def test_embargo_widens_the_gap_by_exactly_the_embargo():
    base = SplitSettings(folds=2, embargo=0, test_fraction=0.2, validation_fraction=0.1, min_train_rows=10)
    embargoed = SplitSettings(folds=2, embargo=7, test_fraction=0.2, validation_fraction=0.1, min_train_rows=10)
    assert held_out_split(1000, 3, base).validation.max() == 800 - 3 - 1
    assert held_out_split(1000, 3, embargoed).validation.max() == 800 - 3 - 7 - 1


def test_too_few_rows_raises_with_numbers():
    settings = SplitSettings(folds=4, embargo=5, min_train_rows=250)
    with pytest.raises(ValueError, match=r"min_train_rows=250"):
        walk_forward_folds(1000, 10, settings)
    with pytest.raises(ValueError, match=r"training rows"):
        held_out_split(300, 10, settings)


def test_default_settings_on_a_realistic_series():
    folds = walk_forward_folds(5000, 20, SplitSettings())
    assert len(folds) == 4
    for fold in folds:
        _assert_purged_and_embargoed(fold, 20, 5)


def test_rejects_non_positive_horizon():
    with pytest.raises(ValueError):
        walk_forward_folds(5000, 0, SplitSettings())
