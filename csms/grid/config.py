"""The `grid:` section of config.yaml: capacity groups, their members, contracts and planning knobs.

A capacity group is anything with a kW ceiling: a transformer, a feeder, a site's grid connection.
Groups may nest through `parent`; stations are assigned to a group by exact id or fnmatch pattern.
Validated like every section (csms/configcheck.py): the dataclasses below say types, ranges and
defaults; the functions below add what a type cannot say (shorthands, time zones, the group tree).
Every problem names the file and the dotted key path (e.g. `grid.transformers.T1.contracts[0].start`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from csms.configcheck import ConfigError, ConfigIssue, Issues, bounds, build, is_number
from csms.grid.sources.openadr.config import OpenAdrConfig, openadr_section
from csms.grid.sources.uftp.config import UftpConfig, uftp_section
from profiles.margin import DEFAULT_MARGIN_KW, DEFAULT_MARGIN_PERCENT

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PHASES: tuple[str, ...] = ("L1", "L2", "L3")
DEFAULT_TIMEZONE = "Europe/Amsterdam"
#: Below this a charger cannot signal a current to the car (IEC 61851), except 0 = pause.
MIN_CHARGING_CURRENT_A = 6.0
# Group ids become MQTT topic levels: no wildcards, separators or whitespace.
_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_HHMM_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")
_TOPIC_PREFIX_RE = re.compile(r"^[^#+\s]+$")


@dataclass(frozen=True)
class MqttConfig:
    """How to reach the broker that carries limit signals in and status out."""

    host: str = "127.0.0.1"
    port: int = field(default=1883, metadata=bounds(1, 65535))
    topic_prefix: str = "netbewust"
    client_id: str | None = None  # default: "netbewust-csms-<pid>"
    username: str | None = None
    password: str | None = None
    keepalive_s: int = field(default=30, metadata=bounds(5, 3600))
    reconnect_min_s: float = field(default=0.5, metadata=bounds(0.01, 60))
    reconnect_max_s: float = field(default=30.0, metadata=bounds(0.01, 3600))
    # A broker restart should not flip every group into safe mode: it may be gone this long first.
    broker_grace_s: float = field(default=10.0, metadata=bounds(0, 3600))
    qos: int = field(default=1, metadata=bounds(0, 2))


@dataclass(frozen=True)
class PlanningConfig:
    """Knobs of the planner loop (csms/grid/controller.py)."""

    enabled: bool = True
    slot_s: int = field(default=900, metadata=bounds(10, 3600))
    horizon_slots: int = field(default=32, metadata=bounds(1, 672))
    replan_interval_s: float = field(default=60.0, metadata=bounds(0.1, 3600))
    hysteresis_a: float = field(default=1.0, metadata=bounds(0, 32))
    stack_level: int = field(default=1, metadata=bounds(0, 1000))
    fail_safe_limit_a: float = field(default=6.0, metadata=bounds(0, 1000))
    # Do not re-send a profile to the same session more often than this (protocol load).
    min_push_interval_s: float = field(default=30.0, metadata=bounds(0, 3600))
    # Relative deviation between planned and measured/composite power that still counts as obeyed.
    verify_tolerance: float = field(default=0.1, metadata=bounds(0, 1))
    verify_after_s: float = field(default=60.0, metadata=bounds(0, 3600))
    # Safety margin kept below every limit (cut and plan): margin_kw plus margin_percent of the limit,
    # for meter error, base-load forecast error and cars reacting late (profiles/margin.py).
    margin_kw: float = field(default=DEFAULT_MARGIN_KW, metadata=bounds(0, 100000))
    margin_percent: float = field(default=DEFAULT_MARGIN_PERCENT, metadata=bounds(0, 50))
    voltage_v: float = field(default=230.0, metadata=bounds(100, 1000))
    allow_pause: bool = True
    # A paused car that has not drawn power this long after a resume is marked "do not pause".
    resume_timeout_s: float = field(default=120.0, metadata=bounds(1, 86400))


@dataclass(frozen=True)
class HistoryConfig:
    """The per-group load history the dashboard draws on load and ``csms report`` reads back
    (csms/grid/history.py): kept in memory for ``hours`` at ``resolution_s``, saved to the store
    every ``save_interval_s`` in hourly documents that are kept ``keep_days``."""

    resolution_s: float = field(default=10.0, metadata=bounds(0.1, 3600))
    hours: float = field(default=24.0, metadata=bounds(1, 168))
    save_interval_s: float = field(default=60.0, metadata=bounds(1, 600))
    keep_days: float = field(default=31.0, metadata=bounds(1, 3660))


@dataclass(frozen=True)
class SessionDefaults:
    """Needs assumed for plain AC sessions that say nothing over OCPP."""

    energy_kwh: float = field(default=20.0, metadata=bounds(0, 1000))
    dwell_h: float = field(default=10.0, metadata=bounds(0.01, 168))
    guaranteed_kwh: float = field(default=5.0, metadata=bounds(0, 1000))
    # A V2G car whose needs state no guaranteed minimum (evMinV2XEnergyRequest <= 0) gets this one.
    v2g_guaranteed_kwh: float = field(default=5.0, metadata=bounds(0, 1000))


@dataclass(frozen=True)
class StationModelRule:
    """What a station (matched by id pattern, optionally by "vendor/model") can do."""

    pattern: str
    model: str | None = None  # fnmatch on "<vendor>/<model>" from BootNotification, if given
    v2g: bool = False
    rate_unit: Literal["A", "W"] | None = None  # None: read SmartChargingCtrlr.RateUnit
    max_current_a: float = field(default=32.0, metadata=bounds(0, 1000))
    phases: int = field(default=3, metadata=bounds(1, 3))
    min_current_a: float = field(default=6.0, metadata=bounds(0, 1000))

    def matches(self, station_id: str, vendor_model: str | None = None) -> bool:
        if not fnmatchcase(station_id, self.pattern):
            return False
        return self.model is None or (vendor_model is not None and fnmatchcase(vendor_model, self.model))


DEFAULT_STATION_MODEL = StationModelRule(pattern="*")


@dataclass(frozen=True)
class BaseLoadConfig:
    """The non-EV load behind a group: zero, a daily step profile, or measured over MQTT."""

    kind: Literal["zero", "profile", "mqtt"] = "zero"
    # Step profile: each point's kW holds from its local time until the next point (wrapping at midnight).
    profile: tuple[tuple[str, float], ...] = ()
    timezone: str = DEFAULT_TIMEZONE
    # kind "mqtt": a measurement older than max_age_s is ignored; then the profile (if any) or
    # fallback_kw is used instead.
    fallback_kw: float = 0.0
    max_age_s: float = 300.0


@dataclass(frozen=True)
class MemberRule:
    """Stations/EVSEs behind a group, and which transformer phases each EVSE phase lands on."""

    station: str  # exact id or fnmatch pattern
    evse: int | None = None  # None: every EVSE of the station
    phases: tuple[str, ...] = PHASES

    @property
    def is_pattern(self) -> bool:
        return any(c in self.station for c in "*?[")

    def matches(self, station_id: str, evse_id: int) -> bool:
        if self.evse is not None and self.evse != evse_id:
            return False
        return fnmatchcase(station_id, self.station)


@dataclass(frozen=True)
class ContractConfig:
    """A recurring cap, e.g. at most 150 kW every weekday 17:00-20:00 local time.

    `end` <= `start` means the window runs past midnight into the next day; "24:00" is allowed.
    """

    days: tuple[str, ...]
    start: str
    end: str
    limit_kw: float
    timezone: str = DEFAULT_TIMEZONE
    name: str = ""


@dataclass(frozen=True)
class TransformerConfig:
    id: str
    capacity_kw: float
    phase_limit_a: float | None = None
    parent: str | None = None
    safe_limit_kw: float = 0.0  # defaults to capacity_kw when no signal_timeout_s is configured
    signal_timeout_s: float | None = None  # None: silence never triggers safe mode
    base_load: BaseLoadConfig = field(default_factory=BaseLoadConfig)
    members: tuple[MemberRule, ...] = ()
    contracts: tuple[ContractConfig, ...] = ()

    @property
    def expects_signals(self) -> bool:
        """Whether this group depends on a live signal source (and so on the broker)."""
        return self.signal_timeout_s is not None


@dataclass(frozen=True)
class GridConfig:
    transformers: dict[str, TransformerConfig] = field(default_factory=dict)
    mqtt: MqttConfig | None = None
    planning: PlanningConfig = field(default_factory=PlanningConfig)
    session_defaults: SessionDefaults = field(default_factory=SessionDefaults)
    station_models: tuple[StationModelRule, ...] = ()
    # A signal whose `timestamp` is older than this is stale and rejected.
    signal_max_age_s: float = 900.0
    uftp: UftpConfig | None = None  # the UFTP aggregator role (csms/grid/sources/uftp)
    openadr: OpenAdrConfig | None = None  # the DSO's VTN (OpenADR 3 grid-aware charging)
    history: HistoryConfig = field(default_factory=HistoryConfig)

    def station_model_for(self, station_id: str, vendor_model: str | None = None) -> StationModelRule:
        """The first matching rule in config order, or the conservative default (no V2G, 32 A, 3 phases)."""
        for rule in self.station_models:
            if rule.matches(station_id, vendor_model):
                return rule
        return DEFAULT_STATION_MODEL


# ------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------


def _timezone(value: Any, path: str, issues: Issues) -> bool:
    if not isinstance(value, str) or not value:
        issues.add(path, f"expected an IANA timezone name such as {DEFAULT_TIMEZONE!r}, got {value!r}")
        return False
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        issues.add(path, f"unknown timezone {value!r}")
        return False
    return True


def _hhmm(value: Any, path: str, issues: Issues) -> bool:
    if not isinstance(value, str) or not _HHMM_RE.match(value):
        issues.add(path, f"expected a time of day as 'HH:MM' (00:00-24:00), got {value!r}")
        return False
    return True


def hhmm_minutes(value: str) -> int:
    """Minutes since midnight of a validated 'HH:MM' (24:00 -> 1440)."""
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def _kw(value: Any, path: str, issues: Issues, *, allow_zero: bool = True) -> float | None:
    if not is_number(value) or value < 0 or (value == 0 and not allow_zero):
        issues.add(path, f"expected a number {'>=' if allow_zero else '>'} 0 (kW), got {value!r}")
        return None
    return float(value)


def _parse_profile(raw: Any, path: str, issues: Issues) -> tuple[tuple[str, float], ...]:
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = []
        for i, point in enumerate(raw):
            if not isinstance(point, (list, tuple)) or len(point) != 2:
                issues.add(f"{path}[{i}]", f"expected a pair ['HH:MM', kW], got {point!r}")
                continue
            items.append((point[0], point[1]))
    else:
        issues.add(path, f"expected a list of ['HH:MM', kW] pairs, got {type(raw).__name__}")
        return ()
    points: list[tuple[str, float]] = []
    for i, (at, kw) in enumerate(items):
        p = f"{path}[{i}]"
        if _hhmm(at, p, issues) and at != "24:00":
            value = _kw(kw, p, issues)
            if value is not None:
                points.append((at, value))
        elif at == "24:00":
            issues.add(p, "a profile point cannot be at 24:00 (use 00:00)")
    times = [hhmm_minutes(at) for at, _ in points]
    if len(set(times)) != len(times):
        issues.add(path, "two profile points at the same time of day")
    if not items:
        issues.add(path, "needs at least one point")
    return tuple(sorted(points, key=lambda pt: hhmm_minutes(pt[0])))


def _parse_base_load(raw: Any, path: str, issues: Issues) -> BaseLoadConfig:
    if raw is None:
        return BaseLoadConfig()
    if is_number(raw):  # shorthand: a constant non-EV load
        value = _kw(raw, path, issues)
        return BaseLoadConfig(kind="profile", profile=(("00:00", value or 0.0),))
    kwargs = build(BaseLoadConfig, raw, path, issues, skip=("profile", "timezone"))
    if kwargs is None:
        return BaseLoadConfig()
    if "fallback_kw" in kwargs and kwargs["fallback_kw"] < 0:
        issues.add(f"{path}.fallback_kw", f"must be >= 0, got {kwargs.pop('fallback_kw')}")
    if "max_age_s" in kwargs and kwargs["max_age_s"] <= 0:
        issues.add(f"{path}.max_age_s", f"must be > 0, got {kwargs.pop('max_age_s')}")
    if "timezone" in raw and _timezone(raw["timezone"], f"{path}.timezone", issues):
        kwargs["timezone"] = raw["timezone"]
    if "profile" in raw:
        kwargs["profile"] = _parse_profile(raw["profile"], f"{path}.profile", issues)
    kind = kwargs.get("kind", "zero")
    if kind == "profile" and "profile" not in raw:
        issues.add(f"{path}.profile", "required when kind is 'profile'")
    return BaseLoadConfig(**kwargs)


def _parse_member(raw: Any, path: str, issues: Issues) -> MemberRule | None:
    if isinstance(raw, str):  # shorthand: a station id or pattern, all EVSEs, 3 phases L1-L2-L3
        return MemberRule(station=raw)
    kwargs = build(MemberRule, raw, path, issues, skip=("phases",))
    if kwargs is None:
        return None
    ok = "station" in kwargs
    if "evse" in kwargs and kwargs["evse"] is not None and kwargs["evse"] < 1:
        issues.add(f"{path}.evse", f"must be >= 1 (EVSE 0 is the whole station), got {kwargs['evse']}")
        ok = False
    if "phases" in raw:
        phases = raw["phases"]
        if (not isinstance(phases, list) or not 1 <= len(phases) <= 3 or any(p not in PHASES for p in phases)
                or len(set(phases)) != len(phases)):
            issues.add(f"{path}.phases", f"expected 1-3 distinct phases out of L1, L2, L3, got {phases!r}")
            ok = False
        else:
            kwargs["phases"] = tuple(phases)
    return MemberRule(**kwargs) if ok else None


def _parse_contract(raw: Any, path: str, issues: Issues) -> ContractConfig | None:
    kwargs = build(ContractConfig, raw, path, issues, skip=("days", "start", "end", "timezone", "limit_kw"))
    if kwargs is None:
        return None
    ok = all(key in raw for key in ("days", "start", "end", "limit_kw"))  # _flat reported missing ones
    days = raw.get("days")
    if days == "daily" or days == "all":
        days = list(WEEKDAYS)
    if "days" in raw:
        if not isinstance(days, list) or not days or any(d not in WEEKDAYS for d in days):
            issues.add(f"{path}.days", f"expected a list out of {', '.join(WEEKDAYS)} (or 'daily'), got {raw['days']!r}")
            ok = False
        else:
            kwargs["days"] = tuple(dict.fromkeys(days))
    for key in ("start", "end"):
        if key in raw:
            if _hhmm(raw[key], f"{path}.{key}", issues):
                kwargs[key] = raw[key]
            else:
                ok = False
    if kwargs.get("start") == "24:00":
        issues.add(f"{path}.start", "a window cannot start at 24:00 (use 00:00)")
        ok = False
    if "start" in kwargs and kwargs.get("start") == kwargs.get("end"):
        issues.add(f"{path}.end", "equals start: the window would be empty")
        ok = False
    if "limit_kw" in raw:
        limit = _kw(raw["limit_kw"], f"{path}.limit_kw", issues)
        if limit is None:
            ok = False
        else:
            kwargs["limit_kw"] = limit
    if "timezone" in raw:
        if _timezone(raw["timezone"], f"{path}.timezone", issues):
            kwargs["timezone"] = raw["timezone"]
        else:
            ok = False
    return ContractConfig(**kwargs) if ok else None


_TRANSFORMER_KEYS = ("id", "capacity_kw", "phase_limit_a", "parent", "safe_limit_kw", "signal_timeout_s",
                     "base_load", "members", "contracts")


def _parse_transformer(tid: Any, raw: Any, path: str, issues: Issues) -> TransformerConfig | None:
    if not isinstance(raw, dict):
        issues.add(path, f"expected a mapping, got {type(raw).__name__}")
        return None
    for key in raw:
        if key not in _TRANSFORMER_KEYS:
            issues.add(f"{path}.{key}", f"unknown key (known: {', '.join(sorted(_TRANSFORMER_KEYS))})")
    ok = isinstance(tid, str) and bool(_ID_RE.match(tid))
    if not ok:
        issues.add(f"{path}.id", f"expected 1-64 characters out of A-Z a-z 0-9 _ . : - (it becomes an MQTT "
                                 f"topic level), got {tid!r}")
    capacity = None
    if "capacity_kw" not in raw:
        issues.add(f"{path}.capacity_kw", "required key is missing")
        ok = False
    else:
        capacity = _kw(raw["capacity_kw"], f"{path}.capacity_kw", issues, allow_zero=False)
        ok = ok and capacity is not None
    kwargs: dict[str, Any] = {"id": tid, "capacity_kw": capacity}
    phase_limit = raw.get("phase_limit_a")
    if phase_limit is not None:
        if not is_number(phase_limit) or phase_limit <= 0:
            issues.add(f"{path}.phase_limit_a", f"expected a number > 0 (A per phase), got {phase_limit!r}")
            ok = False
        else:
            kwargs["phase_limit_a"] = float(phase_limit)
    parent = raw.get("parent")
    if parent is not None:
        if not isinstance(parent, str) or not parent:
            issues.add(f"{path}.parent", f"expected the id of another group, got {parent!r}")
            ok = False
        else:
            kwargs["parent"] = parent
    timeout = raw.get("signal_timeout_s")
    if timeout is not None:
        if not is_number(timeout) or timeout <= 0:
            issues.add(f"{path}.signal_timeout_s", f"expected a number > 0 (seconds) or null, got {timeout!r}")
            ok = False
        else:
            kwargs["signal_timeout_s"] = float(timeout)
    if "safe_limit_kw" in raw:
        safe = _kw(raw["safe_limit_kw"], f"{path}.safe_limit_kw", issues)
        if safe is None:
            ok = False
        elif capacity is not None and safe > capacity:
            issues.add(f"{path}.safe_limit_kw", f"{safe} kW exceeds capacity_kw {capacity} kW")
            ok = False
        else:
            kwargs["safe_limit_kw"] = safe
    elif timeout is not None:
        issues.add(f"{path}.safe_limit_kw", "required when signal_timeout_s is set: the limit to apply when "
                                            "the signal source goes quiet or the broker is unreachable")
        ok = False
    elif capacity is not None:
        kwargs["safe_limit_kw"] = capacity
    kwargs["base_load"] = _parse_base_load(raw.get("base_load"), f"{path}.base_load", issues)
    members_raw = raw.get("members", [])
    if not isinstance(members_raw, list):
        issues.add(f"{path}.members", f"expected a list, got {type(members_raw).__name__}")
        members_raw = []
    members = [_parse_member(m, f"{path}.members[{i}]", issues) for i, m in enumerate(members_raw)]
    kwargs["members"] = tuple(m for m in members if m is not None)
    contracts_raw = raw.get("contracts", [])
    if not isinstance(contracts_raw, list):
        issues.add(f"{path}.contracts", f"expected a list, got {type(contracts_raw).__name__}")
        contracts_raw = []
    contracts = [_parse_contract(c, f"{path}.contracts[{i}]", issues) for i, c in enumerate(contracts_raw)]
    kwargs["contracts"] = tuple(c for c in contracts if c is not None)
    return TransformerConfig(**kwargs) if ok else None


def _transformer_entries(raw: Any, path: str, issues: Issues) -> list[tuple[Any, Any, str]]:
    """(id, spec, key path) for a mapping `{T1: {...}}` or a list `[{id: T1, ...}]`."""
    if isinstance(raw, dict):
        return [(tid, spec, f"{path}.{tid}") for tid, spec in raw.items()]
    if isinstance(raw, list):
        out = []
        for i, spec in enumerate(raw):
            tid = spec.get("id") if isinstance(spec, dict) else None
            out.append((tid, spec, f"{path}[{i}]"))
        return out
    issues.add(path, f"expected a mapping of id -> group (or a list of groups with an id), got {type(raw).__name__}")
    return []


def _check_tree(groups: dict[str, TransformerConfig], paths: dict[str, str], issues: Issues) -> None:
    for tid, group in groups.items():
        if group.parent is None:
            continue
        if group.parent not in groups:
            issues.add(f"{paths[tid]}.parent", f"unknown group {group.parent!r} (known: {', '.join(groups)})")
            continue
        seen = {tid}
        node: str | None = group.parent
        while node is not None and node in groups:
            if node in seen:
                issues.add(f"{paths[tid]}.parent", f"groups form a cycle through {node!r}")
                break
            seen.add(node)
            node = groups[node].parent


_TOP_KEYS = ("transformers", "mqtt", "planning", "session_defaults", "station_models", "signal_max_age_s",
             "uftp", "openadr", "history")


def grid_section(section: Any, issues: Issues) -> GridConfig | None:
    """The ``grid:`` section (problems go to ``issues``); None when it is not a mapping at all."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        issues.add("grid", f"expected a mapping, got {type(section).__name__}")
        return None
    for key in section:
        if key not in _TOP_KEYS:
            issues.add(f"grid.{key}", f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    groups: dict[str, TransformerConfig] = {}
    paths: dict[str, str] = {}
    for tid, spec, path in _transformer_entries(section.get("transformers", {}), "grid.transformers", issues):
        if isinstance(spec, dict) and "id" in spec and spec["id"] != tid:
            issues.add(f"{path}.id", f"{spec['id']!r} differs from the key {tid!r}")
            continue
        if tid in groups:
            issues.add(f"{path}.id", f"duplicate group id {tid!r}")
            continue
        group = _parse_transformer(tid, spec, path, issues)
        if group is not None:
            groups[tid] = group
            paths[tid] = path
    _check_tree(groups, paths, issues)
    mqtt = None
    if section.get("mqtt") is not None:
        kwargs = build(MqttConfig, section["mqtt"], "grid.mqtt", issues)
        if kwargs is not None:
            prefix = kwargs.get("topic_prefix", "netbewust")
            if not _TOPIC_PREFIX_RE.match(prefix) or prefix.startswith("/") or prefix.endswith("/"):
                issues.add("grid.mqtt.topic_prefix", f"must not contain '#', '+' or whitespace, nor start or "
                                                     f"end with '/', got {prefix!r}")
            mqtt = MqttConfig(**kwargs)
            if mqtt.reconnect_min_s > mqtt.reconnect_max_s:
                issues.add("grid.mqtt.reconnect_min_s", "must not exceed reconnect_max_s")
    planning = PlanningConfig(**(build(PlanningConfig, section.get("planning") or {}, "grid.planning", issues) or {}))
    if 0 < planning.fail_safe_limit_a < MIN_CHARGING_CURRENT_A:
        issues.add("grid.planning.fail_safe_limit_a",
                   f"{planning.fail_safe_limit_a:g} A cannot be signalled to a car (IEC 61851: 0 or at least "
                   f"{MIN_CHARGING_CURRENT_A:g} A); use 0 to stop charging or >= {MIN_CHARGING_CURRENT_A:g} A")
    history = HistoryConfig(**(build(HistoryConfig, section.get("history") or {}, "grid.history", issues) or {}))
    if history.resolution_s > history.hours * 3600 / 10:
        issues.add("grid.history.resolution_s", "must leave at least 10 points in grid.history.hours")
    defaults_kwargs = build(SessionDefaults, section.get("session_defaults") or {}, "grid.session_defaults", issues)
    defaults = SessionDefaults(**(defaults_kwargs or {}))
    if defaults.guaranteed_kwh > defaults.energy_kwh:
        issues.add("grid.session_defaults.guaranteed_kwh", "must not exceed energy_kwh")
    models: list[StationModelRule] = []
    models_raw = section.get("station_models") or []
    if not isinstance(models_raw, list):
        issues.add("grid.station_models", f"expected a list, got {type(models_raw).__name__}")
        models_raw = []
    for i, raw in enumerate(models_raw):
        kwargs = build(StationModelRule, raw, f"grid.station_models[{i}]", issues)
        if kwargs is not None and "pattern" in kwargs:
            rule = StationModelRule(**kwargs)
            if rule.min_current_a > rule.max_current_a:
                issues.add(f"grid.station_models[{i}].min_current_a", "must not exceed max_current_a")
            models.append(rule)
    max_age = section.get("signal_max_age_s", 900.0)
    if not is_number(max_age) or max_age <= 0:
        issues.add("grid.signal_max_age_s", f"expected a number > 0 (seconds), got {max_age!r}")
        max_age = 900.0
    uftp = uftp_section(section["uftp"], set(groups), issues) if section.get("uftp") is not None else None
    openadr = openadr_section(section.get("openadr"), set(groups), issues)
    return GridConfig(transformers=groups, mqtt=mqtt, planning=planning, session_defaults=defaults,
                      station_models=tuple(models), signal_max_age_s=float(max_age), uftp=uftp, openadr=openadr,
                      history=history)


def check(section: Any, file: str) -> list[ConfigIssue]:
    """Every problem in a ``grid:`` section on its own."""
    issues = Issues(file)
    grid_section(section, issues)
    return issues.items


def parse_grid(section: Any, file: str = "<config>") -> GridConfig:
    """Build the GridConfig, raising ConfigError listing every problem."""
    issues = Issues(file)
    grid = grid_section(section, issues)
    issues.raise_if_any()
    if grid is None:
        raise ConfigError([ConfigIssue(file, "grid", "invalid")])
    return grid
