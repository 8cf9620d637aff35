"""Station and EV models: plain dataclasses built from YAML/dicts with checked fields.

Hardware quirks seen in the field are explicit flags so a scenario can mix well-behaved and
awkward stations/cars (see docs/simulators.md). A station model also names the OCPP version its
firmware speaks (`ocpp_version`); the version decides the wire messages, never the physics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from simulators.errors import ScenarioError
from simulators.security import SecuritySettings, parse_security

OCPP_VERSIONS = ("1.6", "2.0.1", "2.1")
CONTROL_MODES = ("ScheduledControl", "DynamicControl")
MOBILITY_NEEDS_MODES = ("EVCC", "EVCC_SECC")


@dataclass(frozen=True)
class StationModel:
    """What one charging station can do, including its quirks."""

    name: str = "generic-ac22"
    vendor: str = "Netbewust-Sim"
    evse_count: int = 1
    max_current_a: float = 32.0
    phases: int = 3
    min_current_a: float = 6.0
    rate_units: tuple[str, ...] = ("A", "W")
    max_stack_level: int = 8
    periods_per_schedule: int = 24
    profile_apply_delay_s: float = 0.0
    ignores_resumed_limit: bool = False
    v2g: bool = False
    authorize: bool = True
    meter_interval_s: float = 60.0
    tick_s: float = 1.0
    limit_change_significance: float = 0.1
    message_attempts: int = 3
    message_attempt_interval_s: float = 10.0
    offline_queue_max: int = 2000
    security: SecuritySettings | None = None  # None: no authentication (a lab CSMS)
    ocpp_version: str = "2.0.1"
    max_profiles_installed: int = 32  # OCPP 1.6 MaxChargingProfilesInstalled

    def __post_init__(self) -> None:
        _check_positive(self, "evse_count", "max_current_a", "meter_interval_s", "tick_s", "max_stack_level",
                        "periods_per_schedule", "message_attempts", "offline_queue_max", "max_profiles_installed")
        if self.ocpp_version not in OCPP_VERSIONS:
            raise ValueError(f"ocpp_version must be one of {', '.join(OCPP_VERSIONS)}, got {self.ocpp_version!r}")
        if self.phases not in (1, 3):
            raise ValueError(f"phases must be 1 or 3, got {self.phases!r}")
        units = tuple(self.rate_units)
        if not units or any(u not in ("A", "W") for u in units):
            raise ValueError(f"rate_units must be a non-empty subset of ['A', 'W'], got {list(units)!r}")
        object.__setattr__(self, "rate_units", units)
        if self.min_current_a < 0 or self.min_current_a > self.max_current_a:
            raise ValueError("min_current_a must be between 0 and max_current_a")

    @property
    def subprotocol(self) -> str:
        """The websocket subprotocol this firmware offers, e.g. ``ocpp1.6``."""
        return f"ocpp{self.ocpp_version}"

    @property
    def discharges(self) -> bool:
        """Can this station be told to discharge? `v2g` hardware, and a version with a way to say it
        (2.0.1: the opt-in negative-limit convention; 2.1: CentralSetpoint; 1.6 has none)."""
        return self.v2g and self.ocpp_version != "1.6"


@dataclass(frozen=True)
class EVModel:
    """An EV's battery and on-board charger."""

    name: str = "generic-ev"
    battery_kwh: float = 60.0
    phases: int = 3
    max_current_a: float = 16.0
    min_current_a: float = 6.0
    taper_start_soc: float = 0.8
    taper_end_power_fraction: float = 0.1
    efficiency: float = 0.9
    resumes_after_pause: bool = True
    iso15118: bool = False
    bidirectional: bool = False
    max_discharge_w: float = 0.0
    max_voltage_v: int = 400
    min_discharge_w: float = 0.0  # OCPP 2.1 v2xChargingParameters.minDischargePower
    control_mode: str = "DynamicControl"  # OCPP 2.1 controlMode the car asks for
    mobility_needs_mode: str = "EVCC_SECC"  # EVCC: the car alone decides its needs

    def __post_init__(self) -> None:
        _check_positive(self, "battery_kwh", "max_current_a", "efficiency")
        if self.phases not in (1, 3):
            raise ValueError(f"phases must be 1 or 3, got {self.phases!r}")
        if not 0 < self.efficiency <= 1:
            raise ValueError("efficiency must be in (0, 1]")
        if not 0 < self.taper_start_soc <= 1:
            raise ValueError("taper_start_soc must be in (0, 1]")
        if self.max_discharge_w < 0:
            raise ValueError("max_discharge_w must be >= 0")
        if not 0 <= self.min_discharge_w <= max(self.max_discharge_w, 0.0):
            raise ValueError("min_discharge_w must be between 0 and max_discharge_w")
        if self.control_mode not in CONTROL_MODES:
            raise ValueError(f"control_mode must be one of {', '.join(CONTROL_MODES)}, got {self.control_mode!r}")
        if self.mobility_needs_mode not in MOBILITY_NEEDS_MODES:
            raise ValueError(f"mobility_needs_mode must be one of {', '.join(MOBILITY_NEEDS_MODES)}, "
                             f"got {self.mobility_needs_mode!r}")


M = TypeVar("M", StationModel, EVModel)


def model_from_dict(cls: type[M], data: Any, *, file: str | None = None, key: str = "") -> M:
    """Build a model from a mapping; unknown keys, wrong types and bad values name the key and file."""
    if not isinstance(data, dict):
        raise ScenarioError(f"expected a mapping of {cls.__name__} fields, got {type(data).__name__}",
                            file=file, key=key or None)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        full_key = f"{key}.{name}" if key else str(name)
        if name not in fields:
            raise ScenarioError(f"unknown field; known fields: {', '.join(sorted(fields))}", file=file, key=full_key)
        kwargs[name] = _coerce(fields[name], value, file=file, key=full_key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ScenarioError(str(exc), file=file, key=key or None) from None


def _coerce(f: dataclasses.Field, value: Any, *, file: str | None, key: str) -> Any:
    if f.name == "security":
        return value if value is None or isinstance(value, SecuritySettings) else parse_security(
            value, file=file, key=key)
    if f.name == "ocpp_version" and isinstance(value, float):
        value = str(value)  # YAML reads `ocpp_version: 1.6` as a number
    default = f.default if f.default is not dataclasses.MISSING else None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ScenarioError(f"expected true/false, got {value!r}", file=file, key=key)
        return value
    if isinstance(default, int) and not isinstance(default, bool) and f.type in ("int",):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(f"expected an integer, got {value!r}", file=file, key=key)
        return value
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ScenarioError(f"expected a number, got {value!r}", file=file, key=key)
        return float(value) if f.type == "float" else value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ScenarioError(f"expected a string, got {value!r}", file=file, key=key)
        return value
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ScenarioError(f"expected a list, got {value!r}", file=file, key=key)
        return tuple(value)
    return value


def _check_positive(obj: object, *names: str) -> None:
    for name in names:
        if not getattr(obj, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(obj, name)!r}")


__all__ = ["OCPP_VERSIONS", "EVModel", "StationModel", "model_from_dict"]
