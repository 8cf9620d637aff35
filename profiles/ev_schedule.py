"""Does an EV's charging schedule stay within what the central system allowed? (OCPP K15-K17)

With ISO 15118 the EV answers our charging profile with its own schedule, which the station
forwards in NotifyEVChargingSchedule. The station checks it, and the central system checks again
(K15.FR.11 / K16.FR.06: within the limits -> Accepted; K15.FR.12 / K16.FR.07: above them ->
Rejected, and a renegotiation follows). "The limits" are the composite of the profiles the
station accepted from us for that EVSE and transaction (`profiles.composite`), in watts.

The EV's periods are relative to the request's ``timeBase`` (or to the schedule's own
``startSchedule`` when it has one); ampere limits count ``numberPhases`` phases (three when
absent) at 230 V. An EV schedule may last at most ``horizon_s`` for this check (a day by default:
further out the station renegotiates anyway). Discharging (negative) limits are not compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from profiles.composite import InstalledProfile, composite_schedule, parse_datetime
from profiles.units import amps_to_watts

NO_LIMIT_W = 1e12  # what "nothing installed" means in the composite: no constraint at all
HORIZON_S = 86_400
TOLERANCE_W = 1.0  # rounding on the way through A, W and one decimal


@dataclass(frozen=True)
class Excess:
    """The first instant the EV plans to draw more than allowed."""

    at: datetime
    ev_w: float
    allowed_w: float

    def describe(self) -> str:
        return (f"EV schedule asks {self.ev_w:.0f} W at {self.at.isoformat()}, above the "
                f"{self.allowed_w:.0f} W the charging profile allows")


def _ev_periods(time_base: datetime, schedule: dict[str, Any], default_phases: int,
                horizon_s: int) -> tuple[list[tuple[datetime, float]], datetime]:
    start = parse_datetime(schedule["startSchedule"]) if "startSchedule" in schedule else time_base
    duration = schedule.get("duration")
    end = start + timedelta(seconds=min(int(duration), horizon_s) if duration else horizon_s)
    unit = schedule["chargingRateUnit"]
    periods = []
    for period in sorted(schedule["chargingSchedulePeriod"], key=lambda p: p["startPeriod"]):
        limit = float(period["limit"])
        if unit == "A":
            limit = amps_to_watts(limit, int(period.get("numberPhases", default_phases)))
        periods.append((start + timedelta(seconds=int(period["startPeriod"])), limit))
    return periods, end


def ev_schedule_excess(allowed: Sequence[InstalledProfile], *, evse_id: int, time_base: datetime | str,
                       ev_schedule: dict[str, Any], transaction_id: str | None = None,
                       transaction_start: datetime | None = None, default_phases: int = 3,
                       horizon_s: int = HORIZON_S) -> Excess | None:
    """None when the EV's schedule stays within ``allowed`` everywhere, else the first excess."""
    periods, end = _ev_periods(parse_datetime(time_base), ev_schedule, default_phases, horizon_s)
    if not periods or end <= periods[0][0]:
        return None
    start = periods[0][0]
    window = max(1, int((end - start).total_seconds()))
    limits = composite_schedule(allowed, evse_id=evse_id, start=start, duration_s=window, unit="W",
                                max_limit=NO_LIMIT_W, transaction_id=transaction_id,
                                transaction_start=transaction_start, default_phases=default_phases)
    instants = sorted({t for t, _ in periods if t < end} | {p.start for p in limits})
    for instant in instants:
        ev_w = next((w for t, w in reversed(periods) if t <= instant), None)
        allowed_w = next((p.limit for p in reversed(limits) if p.start <= instant), NO_LIMIT_W)
        if ev_w is None or ev_w <= 0 or allowed_w >= NO_LIMIT_W:
            continue
        if ev_w > allowed_w + TOLERANCE_W:
            return Excess(instant, ev_w, allowed_w)
    return None
