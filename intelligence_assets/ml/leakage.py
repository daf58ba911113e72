"""The leakage sentinel: held-out scores that are too good to be true for price direction.

Published studies and purged walk-forward baselines on daily bars put next-bar direction AUC
around 0.50-0.54; a model far above that has almost surely seen the future (a feature or a
split leaking the label). Volatility and barrier targets are genuinely predictable from
volatility clustering and are exempt.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

GUARDED_KINDS = ("direction", "forward_return")


class LeakageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_auc: float = Field(default=0.56, gt=0.5, le=1.0, description="Held-out AUC above this fails the sentinel.")
    max_ic: float = Field(default=0.10, gt=0.0, le=1.0, description="Held-out IC above this fails the sentinel.")


def leakage_suspicion(target_kind: str, metrics: dict[str, float | None], settings: LeakageSettings) -> str | None:
    """A message naming the implausible score, or None when the scores are plausible or exempt."""
    if target_kind not in GUARDED_KINDS:
        return None
    for name, limit in (("auc", settings.max_auc), ("ic", settings.max_ic)):
        value = metrics.get(name)
        if value is not None and not math.isnan(value) and value > limit:
            return (
                f"held-out {name.upper()} {value:.3f} > {limit} is too good to be true for a {target_kind} target: "
                "look for look-ahead in features, labels or splits"
            )
    return None
