"""Asset checks: data quality on bars, the leakage sentinel on models.

The checks run inside the asset's own step (as `check_specs`), so a bad file is caught where
it is read, without a second step loading the data again.
"""

from __future__ import annotations

import dagster as dg

from intelligence_assets.ml.bars import BARS_CHECK_DESCRIPTIONS, BarsCheck
from intelligence_assets.ml.leakage import GUARDED_KINDS, LeakageSettings, leakage_suspicion

# A check's definition comes before any data, so its description names the universe settings
# that each result's description gives the values of.
BARS_CHECK_SETTINGS = {
    "min_history": "bars.min_history",
    "max_trading_days": "bars.max_gap_trading_days",
}
# Blocking unless `bars.gaps_block: false`: a series with a hole may be what the team wants to train on.
GAP_CHECK = "no_long_gaps"
LEAKAGE_SENTINEL = "leakage_sentinel"


def bars_check_specs(
    asset_key: dg.AssetKey, partitions_def: dg.PartitionsDefinition, gaps_block: bool = True
) -> list[dg.AssetCheckSpec]:
    # Blocking: features, labels and everything below must not be built from broken bars.
    return [
        dg.AssetCheckSpec(
            name,
            asset=asset_key,
            description=text.format(**BARS_CHECK_SETTINGS),
            blocking=gaps_block or name != GAP_CHECK,
            partitions_def=partitions_def,
        )
        for name, text in BARS_CHECK_DESCRIPTIONS.items()
    ]


def bars_check_results(asset_key: dg.AssetKey, checks: list[BarsCheck]) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=check.name,
            passed=check.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=check.detail if not check.passed else check.description,
            metadata={"failing_rows": check.failing_rows},
        )
        for check in checks
    ]


def leakage_sentinel_spec(
    asset_key: dg.AssetKey, settings: LeakageSettings, partitions_def: dg.PartitionsDefinition
) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        LEAKAGE_SENTINEL,
        asset=asset_key,
        partitions_def=partitions_def,
        description=(
            f"{', '.join(GUARDED_KINDS)} targets: held-out AUC <= {settings.max_auc} and IC <= {settings.max_ic}; "
            "more is too good to be true"
        ),
    )


def leakage_sentinel_result(
    asset_key: dg.AssetKey, target_kind: str, metrics: dict, settings: LeakageSettings
) -> dg.AssetCheckResult:
    suspicion = leakage_suspicion(target_kind, metrics, settings)
    exempt = target_kind not in GUARDED_KINDS
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=LEAKAGE_SENTINEL,
        passed=suspicion is None,
        severity=dg.AssetCheckSeverity.ERROR,
        description=suspicion or (f"{target_kind} targets are exempt" if exempt else "held-out scores are plausible"),
        metadata={"exempt": exempt, **{name: metrics[name] for name in ("auc", "ic") if metrics.get(name) is not None}},
    )
