"""What a charging schedule allows at a given moment, as the test stations built from the `ocpp`
package (tests/ocpp_station.py for 2.0.1, tests/ocpp16_station.py for 1.6) evaluate it: one
reading of the schedule rules (Absolute, Relative to the transaction, Recurring daily or weekly)
for both versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

VOLTAGE_V = 230.0


def schedule_limit_a(profile: dict[str, Any], schedule: dict[str, Any], absolute_start: datetime, at: datetime,
                     tx_start: datetime | None, received_at: datetime, phases: int) -> float | None:
    """Amps the schedule's period in force at ``at`` allows (None: no period applies then).
    ``absolute_start``: the schedule's start for Absolute and Recurring profiles."""
    kind = profile["charging_profile_kind"]
    anchor = (tx_start or received_at) if kind == "Relative" else absolute_start
    offset = (at - anchor).total_seconds()
    if kind == "Recurring":
        offset %= 86400 if profile.get("recurrency_kind", "Daily") == "Daily" else 7 * 86400
    if offset < 0 or (schedule.get("duration") is not None and offset >= schedule["duration"]):
        return None
    chosen = None
    for period in schedule["charging_schedule_period"]:
        if period["start_period"] <= offset:
            chosen = period
    if chosen is None:
        return None
    limit = float(chosen["limit"])
    if schedule["charging_rate_unit"] == "W":
        limit /= min(phases, chosen.get("number_phases") or 3) * VOLTAGE_V
    return max(0.0, limit)
