"""EV physics: what a car draws for an offered current, and how its battery fills or empties.

The car, not the station, decides how much of the offered current it takes: it stops when its
target state of charge is reached (SuspendedEV), tapers near full, and some models fall asleep
after a pause and never take power again until re-plugged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from profiles.units import VOLTAGE_V
from simulators.models import EVModel


@dataclass
class EVSession:
    """One visit of one car to one EVSE (what a scenario generates)."""

    evse_id: int
    arrival: datetime
    departure: datetime
    ev: EVModel
    soc_start: float
    energy_need_kwh: float
    min_soc: float = 0.0
    id_token: str = "SIMTOKEN"

    def __post_init__(self) -> None:
        if self.departure <= self.arrival:
            raise ValueError("departure must be after arrival")
        if not 0 <= self.soc_start <= 1 or not 0 <= self.min_soc <= 1:
            raise ValueError("soc_start and min_soc must be in [0, 1]")
        if self.energy_need_kwh < 0:
            raise ValueError("energy_need_kwh must be >= 0")


@dataclass
class EV:
    """A plugged-in car's live state."""

    model: EVModel
    soc: float
    target_soc: float = 1.0
    min_soc: float = 0.0
    departure: datetime | None = None
    energy_need_kwh: float = 0.0
    id_token: str = "SIMTOKEN"
    asleep: bool = False
    _was_drawing: bool = field(default=False, repr=False)

    @classmethod
    def from_session(cls, session: EVSession) -> "EV":
        target = min(1.0, session.soc_start + session.energy_need_kwh / session.ev.battery_kwh)
        return cls(model=session.ev, soc=session.soc_start, target_soc=target, min_soc=session.min_soc,
                   departure=session.departure, energy_need_kwh=session.energy_need_kwh,
                   id_token=session.id_token)

    @property
    def battery_wh(self) -> float:
        return self.model.battery_kwh * 1000.0

    def wants_energy(self) -> bool:
        return self.soc < self.target_soc - 1e-9

    def can_discharge(self) -> bool:
        return self.model.bidirectional and self.model.max_discharge_w > 0 and self.soc > self.min_soc + 1e-9

    def charge_cap_a(self) -> float:
        """Largest per-phase current the car takes now (taper above `taper_start_soc`)."""
        m = self.model
        if self.soc <= m.taper_start_soc:
            return m.max_current_a
        span = max(1e-9, 1.0 - m.taper_start_soc)
        progress = min(1.0, (self.soc - m.taper_start_soc) / span)
        return m.max_current_a * (1.0 - (1.0 - m.taper_end_power_fraction) * progress)

    def draw(self, offered_a: float, station_min_a: float) -> float:
        """Signed per-phase current the car takes for `offered_a` (negative = discharge request).

        Updates the no-resume state: a car of a non-resuming model that was drawing and sees the
        offer drop below the station minimum falls asleep for the rest of the session.
        """
        if offered_a >= station_min_a and offered_a > 0:
            if self.asleep or not self.wants_energy():
                current = 0.0
            else:
                current = min(offered_a, self.charge_cap_a())
        elif offered_a <= -station_min_a and offered_a < 0 and self.can_discharge():
            limit_a = self.model.max_discharge_w / (self.model.phases * VOLTAGE_V)
            current = -min(-offered_a, self.model.max_current_a, limit_a)
        else:
            current = 0.0
            if self._was_drawing and offered_a < station_min_a and not self.model.resumes_after_pause:
                self.asleep = True
        self._was_drawing = current != 0.0
        return current

    def integrate(self, current_a: float, phases: int, seconds: float) -> float:
        """Run at `current_a` for `seconds`; returns the grid-side energy in Wh (negative = export).

        Stops exactly at the target (charging) or the minimum SoC (discharging), so a long step
        never overshoots.
        """
        if current_a == 0.0 or seconds <= 0:
            return 0.0
        power_w = current_a * phases * VOLTAGE_V
        grid_wh = power_w * seconds / 3600.0
        eff = self.model.efficiency
        if grid_wh > 0:
            room_wh = max(0.0, (self.target_soc - self.soc) * self.battery_wh) / eff
            grid_wh = min(grid_wh, room_wh)
            self.soc = min(self.target_soc, self.soc + grid_wh * eff / self.battery_wh)
        else:
            room_wh = max(0.0, (self.soc - self.min_soc) * self.battery_wh) * eff
            grid_wh = max(grid_wh, -room_wh)
            self.soc = max(self.min_soc, self.soc + grid_wh / eff / self.battery_wh)
        return grid_wh
