"""One description per bars check: the Dagster definitions and every result read it from the ML core."""

import dagster as dg

from intelligence_assets.defs.assets.market_data import BARS
from intelligence_assets.defs.checks import bars_check_results, bars_check_specs
from intelligence_assets.ml.bars import BARS_CHECK_DESCRIPTIONS, GapSettings, validate_bars
from intelligence_assets.ml.synthetic import synthetic_bars

PARTITIONS = dg.StaticPartitionsDefinition(["AAPL"])


def test_definitions_describe_every_check_naming_the_settings_results_fill_in() -> None:
    specs = {spec.name: spec for spec in bars_check_specs(BARS, PARTITIONS)}
    assert list(specs) == list(BARS_CHECK_DESCRIPTIONS)
    assert specs["schema"].description == BARS_CHECK_DESCRIPTIONS["schema"]
    assert specs["minimum_history"].description == "at least bars.min_history bars"
    assert "skips bars.max_gap_trading_days or more trading days" in specs["no_long_gaps"].description
    assert not any("{" in spec.description for spec in specs.values())
    assert specs["no_long_gaps"].blocking and not bars_check_specs(BARS, PARTITIONS, gaps_block=False)[-1].blocking


def test_results_carry_the_same_descriptions_with_the_values() -> None:
    gaps = GapSettings(max_trading_days=7.5)
    checks = validate_bars(synthetic_bars(n_bars=120, seed=21), min_history=100, gaps=gaps)
    results = {result.check_name: result for result in bars_check_results(BARS, checks)}
    assert list(results) == list(BARS_CHECK_DESCRIPTIONS)
    assert results["schema"].description == BARS_CHECK_DESCRIPTIONS["schema"]
    assert results["minimum_history"].description == "at least 100 bars"
    assert "skips 7.5 or more trading days" in results["no_long_gaps"].description
