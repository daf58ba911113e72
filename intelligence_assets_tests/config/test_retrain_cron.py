import pytest
from pydantic import ValidationError

from intelligence_assets.config.universe import AutomationSettings


@pytest.mark.parametrize("cron", ["0 4 * * 1", "*/15 * * * *", "30 2 1 * *", "@daily"])
def test_cron_expressions_dagster_schedules_accept_load(cron: str) -> None:
    assert AutomationSettings(retrain_cron=cron).retrain_cron == cron


# Four fields, seconds resolution, minute 61, a day February never has, not cron at all.
@pytest.mark.parametrize("cron", ["0 4 * *", "0 0 4 * * 1", "61 4 * * 1", "0 0 31 2 *", "weekly"])
def test_cron_expressions_dagster_schedules_reject_fail_naming_the_value(cron: str) -> None:
    with pytest.raises(ValidationError, match="not a valid cron expression") as raised:
        AutomationSettings(retrain_cron=cron)
    assert repr(cron) in str(raised.value)
