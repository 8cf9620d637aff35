"""Net energy of a session from its meter registers: what the planner's energy fields mean.

The central system stores both registers (Energy.Active.Import.Register and
Energy.Active.Export.Register) and keeps, per session, what was stated (by the car's needs, the
operator API or the config defaults) and the two register readings at that moment. From those
it fills `SessionNeed` with `session_need_energy`, so that need and guarantee are net of what a
V2G car gave back, and the discharge budget shrinks with what it already discharged:

- net into the battery = import x efficiency - export / efficiency (both since the statement);
- energy_needed_kwh = max(0, stated energy - net);
- guaranteed_kwh = max(0, stated guarantee - net), where a guarantee that was not stated
  (None) is the configured default: V2G cars have a guaranteed minimum like every other car;
- dischargeable_kwh stays as stated (energy above the car's minimum state of charge then) and
  discharged_kwh is the export since; the planner discharges at most
  dischargeable_kwh - discharged_kwh / efficiency, so its plans never take a car below its
  minimum state of charge.
"""

from __future__ import annotations

from dataclasses import dataclass

from profiles.model import _finite


@dataclass(frozen=True)
class StatedNeed:
    """A session's need as stated (kWh into the battery); None guarantee = not stated."""

    energy_kwh: float
    guaranteed_kwh: float | None = None
    dischargeable_kwh: float = 0.0


@dataclass(frozen=True)
class NeedEnergy:
    """The `SessionNeed` energy fields (pass them as keyword arguments)."""

    energy_needed_kwh: float
    guaranteed_kwh: float
    dischargeable_kwh: float
    discharged_kwh: float


def net_kwh(imported_kwh: float, exported_kwh: float, efficiency: float = 1.0) -> float:
    """Net energy into the battery from meter-side import and export."""
    return imported_kwh * efficiency - exported_kwh / efficiency


def session_need_energy(stated: StatedNeed, imported_kwh: float, exported_kwh: float, *,
                        default_guaranteed_kwh: float, efficiency: float = 1.0) -> NeedEnergy:
    """Energy fields for `SessionNeed` from what was stated and the registers since (see the
    module doc). Raises ValueError on negative or non-finite numbers."""
    for name, value in (("energy_kwh", stated.energy_kwh), ("dischargeable_kwh", stated.dischargeable_kwh),
                        ("imported_kwh", imported_kwh), ("exported_kwh", exported_kwh),
                        ("default_guaranteed_kwh", default_guaranteed_kwh)):
        _finite(name, value, minimum=0.0)
    if stated.guaranteed_kwh is not None:
        _finite("guaranteed_kwh", stated.guaranteed_kwh, minimum=0.0)
    eff = _finite("efficiency", efficiency)
    if not 0.0 < eff <= 1.0:
        raise ValueError(f"efficiency must be in (0, 1], got {efficiency}")
    net = net_kwh(imported_kwh, exported_kwh, eff)
    guarantee = default_guaranteed_kwh if stated.guaranteed_kwh is None else stated.guaranteed_kwh
    return NeedEnergy(energy_needed_kwh=max(0.0, stated.energy_kwh - net), guaranteed_kwh=max(0.0, guarantee - net),
                      dischargeable_kwh=stated.dischargeable_kwh, discharged_kwh=exported_kwh)
