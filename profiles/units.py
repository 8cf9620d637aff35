"""Unit helpers for OCPP charging limits.

OCPP expresses AC limits either in amps *per phase* or in watts. Converting needs the number of
phases and the nominal voltage: P = phases x V x I. The grid-side maths in this project uses the
Dutch/EU nominal 230 V phase-to-neutral voltage.
"""

from __future__ import annotations

import math
from decimal import ROUND_FLOOR, Decimal

VOLTAGE_V: float = 230.0

_ONE_DECIMAL = Decimal("0.1")


def _check_phases_voltage(phases: int, voltage: float) -> None:
    """Reject inputs that would silently produce nonsense (0 phases, negative voltage, NaN)."""
    if isinstance(phases, bool) or not isinstance(phases, int) or not 1 <= phases <= 3:
        raise ValueError(f"phases must be an int in 1..3, got {phases!r}")
    if not isinstance(voltage, (int, float)) or not math.isfinite(voltage) or voltage <= 0:
        raise ValueError(f"voltage must be a finite number > 0, got {voltage!r}")


def _check_finite(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def amps_to_watts(amps: float, phases: int = 3, voltage: float = VOLTAGE_V) -> float:
    """Power drawn by `amps` per phase on `phases` phases (negative amps = discharge stays negative)."""
    _check_finite("amps", amps)
    _check_phases_voltage(phases, voltage)
    return float(amps) * phases * voltage


def watts_to_amps(watts: float, phases: int = 3, voltage: float = VOLTAGE_V) -> float:
    """Per-phase current that carries `watts` spread over `phases` phases."""
    _check_finite("watts", watts)
    _check_phases_voltage(phases, voltage)
    return float(watts) / (phases * voltage)


def round_down_one_decimal(x: float) -> float:
    """Round toward -inf to one decimal, the precision OCPP accepts for `limit`.

    Rounding down (not to nearest) keeps a sum of per-station limits under the cap they were
    split from. Goes through the shortest decimal repr so 2.3 stays 2.3 (plain
    ``floor(x * 10) / 10`` turns 2.3 into 2.2 because 2.3 * 10 == 22.999999999999996).
    """
    _check_finite("x", x)
    rounded = Decimal(repr(float(x))).quantize(_ONE_DECIMAL, rounding=ROUND_FLOOR)
    return float(rounded) + 0.0  # + 0.0 turns -0.0 into 0.0
