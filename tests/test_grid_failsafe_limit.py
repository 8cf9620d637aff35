"""A fail-safe limit never grows: values a car cannot follow are refused by the config check, and
the fail-safe profile rounds into the 0-6 A gap downwards, never up."""

from __future__ import annotations

from typing import Any

import pytest

from csms.grid.config import check, parse_grid
from csms.grid.effects.pusher import failsafe_profile
from csms.grid.model.sessions import StationCaps


# 3. A fail-safe limit never grows ---------------------------------------------------------------
@pytest.mark.parametrize("amps", [0.5, 3.0, 5.9])
def test_fail_safe_limit_in_the_gap_below_6_a_is_refused_by_the_config_check(amps: float) -> None:
    issues = check({"transformers": {"T1": {"capacity_kw": 100}}, "planning": {"fail_safe_limit_a": amps}}, "c.yaml")
    assert [(i.key, "cannot be signalled" in i.message) for i in issues] == [("grid.planning.fail_safe_limit_a", True)]


@pytest.mark.parametrize("amps", [0, 6, 10])
def test_fail_safe_limits_a_car_can_follow_are_accepted(amps: float) -> None:
    grid = parse_grid({"transformers": {"T1": {"capacity_kw": 100}}, "planning": {"fail_safe_limit_a": amps}})
    assert grid.planning.fail_safe_limit_a == amps


def _fail_safe_limit(profile: dict[str, Any]) -> float:
    return float(profile["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"])


@pytest.mark.parametrize("amps, expected", [(3.0, 0.0), (5.99, 0.0), (0.0, 0.0), (6.0, 6.0), (10.0, 10.0),
                                            (50.0, 32.0)])
def test_fail_safe_profile_rounds_down_into_the_gap_never_up(amps: float, expected: float) -> None:
    caps = StationCaps(rate_units=("A",), max_current_a=32.0)
    assert _fail_safe_limit(failsafe_profile(caps, amps)) == expected


