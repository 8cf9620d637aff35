"""What a station already holds, read back as setpoints on our slot grid (pure, no I/O).

After a restart the central system no longer knows what it pushed; a reconnecting station tells it
(ReportChargingProfiles) or the store remembers (the last profile it accepted). Turned back into
:class:`profiles.hysteresis.Setpoints`, the installed schedule can be compared with a new plan, so
only what differs is pushed again.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from profiles.hysteresis import Setpoints
from profiles.units import VOLTAGE_V


def setpoints_from_profile(profile: dict[str, Any], *, station_id: str, evse_id: int, slot_s: float,
                           horizon_slots: int, default_phases: int, now: datetime,
                           offset_s: float = 0.0) -> Setpoints | None:
    """The amps an installed TxProfile (wire format) prescribes per slot, or None when it is not one
    we can read (then it counts as unknown and the plan is sent again).

    Absolute schedules are sampled on the slot grid that ends with their ``duration`` (profiles
    anchored with a lead start that much before their first slot), moved from the station's clock
    to ours by ``offset_s`` (station minus ours). A Relative schedule of one period holds its value
    from now on.
    """
    try:
        schedule = profile["chargingSchedule"][0]
        periods = schedule["chargingSchedulePeriod"]
        unit = schedule["chargingRateUnit"]
        kind = profile["chargingProfileKind"]
        transaction_id = profile["transactionId"]
        phases = int(periods[0].get("numberPhases") or default_phases)
        if unit not in ("A", "W") or not periods or not isinstance(transaction_id, str) or not 1 <= phases <= 3:
            return None

        def amps(period: dict[str, Any]) -> float:
            # An OCPP 2.1 CentralSetpoint period does what its setpoint says (negative: discharge).
            value = period["setpoint"] if period.get("operationMode") == "CentralSetpoint" else period["limit"]
            limit = float(value)
            return limit if unit == "A" else limit / ((period.get("numberPhases") or phases) * VOLTAGE_V)

        if kind == "Relative":
            if len(periods) != 1:
                return None
            value = amps(periods[0])
            return Setpoints(station_id, evse_id, transaction_id, now.replace(microsecond=0), slot_s,
                             (value,) * horizon_slots, phases)
        if kind != "Absolute":
            return None
        start = datetime.fromisoformat(schedule["startSchedule"]) - timedelta(seconds=offset_s)
        duration = schedule.get("duration")
        if duration is None:
            duration = periods[-1]["startPeriod"] + slot_s * horizon_slots
        duration = float(duration)
        lead = duration % slot_s
        slots = max(1, math.ceil((duration - lead) / slot_s - 1e-9))
        values = [amps(period) for period in _in_force_by_slot(periods, lead, slot_s, slots)]
        if start.tzinfo is None or not all(math.isfinite(v) for v in values):
            return None
        return Setpoints(station_id, evse_id, transaction_id, start + timedelta(seconds=lead), slot_s,
                         tuple(values), phases)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _in_force_by_slot(periods: list[dict[str, Any]], lead: float, slot_s: float, slots: int) -> list[dict[str, Any]]:
    """The period in force at the start of each slot (the last one listed that has started; the first
    before any has). One pass when the starts ascend, as OCPP requires: a read-back after a failover
    converts 30,000 schedules of up to 24 periods over the whole horizon."""
    starts = [float(period["startPeriod"]) for period in periods]
    ascending = all(a < b for a, b in zip(starts, starts[1:], strict=False))
    chosen: list[dict[str, Any]] = []
    j = -1
    for k in range(slots):
        at = lead + k * slot_s + 1e-6
        if ascending:
            while j + 1 < len(starts) and starts[j + 1] <= at:
                j += 1
        else:  # out of order (a station's report): the last listed that has started, as before
            j = max((i for i, start in enumerate(starts) if start <= at), default=-1)
        chosen.append(periods[j] if j >= 0 else periods[0])
    return chosen
