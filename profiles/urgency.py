"""Urgency: must a car charge now to get its energy in by departure?"""

from __future__ import annotations

from profiles.planner import SessionNeed
from profiles.units import VOLTAGE_V


def urgent(need: SessionNeed, slot_h: float) -> bool:
    """Whether pausing ``need`` for one more slot (``slot_h`` hours) risks its need or its guarantee.

    Its slack is the time left before departure minus the time it needs at full power: less
    than one slot for the energy it wants, or less than two slots for its guaranteed minimum
    (the guarantee gets the wider margin), and it must charge now.
    """
    rate_kw = need.max_current_a * need.phases * VOLTAGE_V / 1000.0 * need.efficiency
    if rate_kw <= 0:
        return False
    hours = need.departure_s / 3600.0
    return hours - need.energy_needed_kwh / rate_kw < slot_h or hours - need.guaranteed_kwh / rate_kw < 2 * slot_h
