"""Meter-value sampling in the OCPP 2.0.1 MeterValueType shape."""

from __future__ import annotations

from datetime import datetime, timezone

from profiles.units import VOLTAGE_V

PHASES = ("L1", "L2", "L3")


def iso(ts: datetime) -> str:
    """UTC timestamp with milliseconds and 'Z', the form OCPP central systems parse most reliably."""
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _value(value: float, measurand: str, unit: str, context: str, **extra: str) -> dict:
    item = {"value": round(value, 2), "measurand": measurand, "context": context, "unitOfMeasure": {"unit": unit}}
    item.update(extra)
    return item


def sample(*, at: datetime, context: str, import_wh: float, export_wh: float, current_a: float,
           phases_used: int, station_phases: int, offered_a: float, soc: float | None,
           export_capable: bool) -> dict:
    """One MeterValue: import register, power, per-phase current, offered current, SoC (+ export)."""
    power_w = current_a * phases_used * VOLTAGE_V
    values = [
        _value(import_wh, "Energy.Active.Import.Register", "Wh", context),
        _value(max(0.0, power_w), "Power.Active.Import", "W", context),
    ]
    for index in range(station_phases):
        phase_current = max(0.0, current_a) if index < phases_used else 0.0
        values.append(_value(phase_current, "Current.Import", "A", context, phase=PHASES[index]))
    values.append(_value(abs(offered_a), "Current.Offered", "A", context))
    if soc is not None:
        values.append(_value(soc * 100.0, "SoC", "Percent", context, location="EV"))
    if export_capable:
        values.append(_value(export_wh, "Energy.Active.Export.Register", "Wh", context))
        values.append(_value(max(0.0, -power_w), "Power.Active.Export", "W", context))
        for index in range(station_phases):
            phase_current = max(0.0, -current_a) if index < phases_used else 0.0
            values.append(_value(phase_current, "Current.Export", "A", context, phase=PHASES[index]))
    return {"timestamp": iso(at), "sampledValue": values}
