"""Meter values: the OCPP ``MeterValueType`` list flattened into samples.

Both store backends and the grid controller read meter data as flat samples (one measurand, one
phase, one value), so the flattening lives here once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from csms.domain.datetimes import BadDateTime, normalise
from csms.domain.values import optional_int64

DEFAULT_MEASURAND = "Energy.Active.Import.Register"  # OCPP: measurand absent means this one
EXPORT_REGISTER = "Energy.Active.Export.Register"  # what a V2G car gave back to the grid
REGISTERS = (DEFAULT_MEASURAND, EXPORT_REGISTER)  # a session's energy in and out

# OCPP unitOfMeasure multiplier is a power of ten; we store values in the unit without multiplier.
MAX_MULTIPLIER = 9  # the schema sets no bound; beyond 10^9 a meter value is nonsense (and 10^400 overflows)


class BadSample(ValueError):
    """A schema-valid sampled value that cannot be a measurement (the station gets a CALLERROR)."""


@dataclass(frozen=True, slots=True)
class Sample:
    timestamp: str
    evse_id: int | None
    transaction_id: str | None
    measurand: str
    phase: str | None
    value: float
    unit: str | None
    context: str | None
    location: str | None


def flatten(meter_values: list[dict[str, Any]], evse_id: int | None,
            transaction_id: str | None) -> list[Sample]:
    """The samples, checked for every store alike: timestamps in canonical form (BadSample when one
    names no instant), the EVSE id within 64 bits, multipliers and values that make a number."""
    try:
        evse = optional_int64(evse_id, "evseId")
    except ValueError as exc:
        raise BadSample(str(exc)) from None
    out: list[Sample] = []
    for mv in meter_values:
        try:
            ts = normalise(mv.get("timestamp"))
        except BadDateTime as exc:
            raise BadSample(f"meter value timestamp: {exc}") from None
        for sv in mv.get("sampledValue", ()):
            uom = sv.get("unitOfMeasure") or {}
            mult = uom.get("multiplier", 0)
            if abs(mult) > MAX_MULTIPLIER:
                raise BadSample(f"unitOfMeasure.multiplier {mult} is outside -{MAX_MULTIPLIER}..{MAX_MULTIPLIER}")
            value = float(sv.get("value", 0.0)) * (10.0 ** mult if mult else 1.0)
            if not math.isfinite(value):
                raise BadSample(f"sampled value {sv.get('value')!r} x 10^{mult} is not a finite number")
            out.append(Sample(ts, evse, transaction_id, sv.get("measurand", DEFAULT_MEASURAND),
                              sv.get("phase"), value, uom.get("unit"), sv.get("context"), sv.get("location")))
    return out


_TO_BASE = {"kwh": 1000.0, "kw": 1000.0, "kvarh": 1000.0, "kvar": 1000.0, "kva": 1000.0}


def in_base_unit(value: float, unit: str | None) -> float:
    """A value in Wh / W (or varh, var, VA) whatever its unit says: the multiplier is applied by
    :func:`flatten` already, a ``k`` unit (``kWh``, ``kW``; any case) is converted here."""
    return value * _TO_BASE.get((unit or "").lower(), 1.0)


@dataclass(frozen=True, slots=True)
class Reading:
    """The latest electrical state of one EVSE, as the grid controller needs it."""

    power_w: float | None = None  # net active power: import minus export (negative = discharging)
    energy_wh: float | None = None  # import register
    soc: float | None = None
    current_a: dict[str, float] | None = None  # per phase (L1/L2/L3) or {"": total}
    offered_a: float | None = None
    timestamp: str | None = None
    export_wh: float | None = None  # export register (None: the station sends none)


def latest_reading(samples: Sequence[Sample]) -> Reading | None:
    """Summarise the most recent samples (the last timestamp wins per measurand)."""
    if not samples:
        return None
    last_ts = max(s.timestamp for s in samples)
    recent = [s for s in samples if s.timestamp == last_ts]
    imp = exp = None
    phase_imp: dict[str, float] = {}
    phase_exp: dict[str, float] = {}
    energy = export = soc = offered = None
    currents: dict[str, float] = {}
    for s in recent:
        m = s.measurand
        w = in_base_unit(s.value, s.unit)
        if m == "Power.Active.Import":
            if s.phase is None:
                imp = w
            else:
                phase_imp[s.phase] = w
        elif m == "Power.Active.Export":
            if s.phase is None:
                exp = w
            else:
                phase_exp[s.phase] = w
        elif m == "Energy.Active.Import.Register" and s.phase is None:
            energy = in_base_unit(s.value, s.unit)
        elif m == EXPORT_REGISTER and s.phase is None:
            export = in_base_unit(s.value, s.unit)
        elif m == "SoC":
            soc = s.value
        elif m == "Current.Import":
            currents[s.phase or ""] = s.value
        elif m == "Current.Offered":
            offered = s.value
    if imp is None and phase_imp:
        imp = sum(phase_imp.values())
    if exp is None and phase_exp:
        exp = sum(phase_exp.values())
    power = None if imp is None and exp is None else (imp or 0.0) - (exp or 0.0)
    return Reading(power, energy, soc, currents or None, offered, last_ts, export)
