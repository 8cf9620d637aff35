"""Pure planning code (no I/O): OCPP composite schedule, units, planner, optimum."""

from profiles.composite import (
    InstalledProfile,
    InvalidProfileError,
    Period,
    composite_schedule,
    limit_at,
    parse_datetime,
    validate_profile,
)
from profiles.units import VOLTAGE_V, amps_to_watts, round_down_one_decimal, watts_to_amps

__all__ = [
    "VOLTAGE_V",
    "InstalledProfile",
    "InvalidProfileError",
    "Period",
    "amps_to_watts",
    "composite_schedule",
    "limit_at",
    "parse_datetime",
    "round_down_one_decimal",
    "validate_profile",
    "watts_to_amps",
]
