"""Scenario files: which stations, under which transformer, and which EV sessions they see.

A scenario is YAML (see `simulators/scenarios/*.yaml` and docs/simulators.md). Everything random
comes from numpy generators seeded with (scenario seed, station index), so a run repeats exactly
and station k sees the same sessions whether the fleet has 10 or 10,000 stations.
Every malformed input raises `ScenarioError` naming the file and the key.

`clock.start` is either a time of day (`"14:00"`, in `clock.timezone`): the scenario's day starts
at that local time and the stations run on the wall clock (the fleet moves the sessions to begin
when the run begins), or a date-time with a UTC offset, which pins the stations' clocks to that
date (`Scenario.pinned`), e.g. to test a central system against stations whose clocks are wrong.
`ocpp_versions` mixes OCPP versions over the station models that do not name one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import yaml

from simulators.errors import ScenarioError
from simulators.ev import EVSession
from simulators.models import OCPP_VERSIONS, EVModel, StationModel, model_from_dict
from simulators.security import (
    Origins,
    SecurityLayer,
    check_station,
    merge_security,
    resolve_paths,
)

_TOP_KEYS = {"name", "description", "seed", "clock", "sample_interval_s", "station_id_prefix", "defaults",
             "station_models", "ev_models", "transformers", "sessions", "security", "ocpp_versions"}
_CLOCK_KEYS = {"start", "timezone", "duration_h", "max_speed"}
_TIME_OF_DAY = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")
_GOLDEN = (math.sqrt(5) - 1) / 2
_SESSION_KEYS = {"per_evse_per_day", "ev_mix", "arrival", "dwell_h", "energy_kwh", "soc_start", "min_soc",
                 "iso15118_share"}


@dataclass(frozen=True)
class Distribution:
    """A positive quantity: lognormal (median, sigma) or uniform [low, high], clipped to [min, max]."""

    kind: str
    a: float
    b: float
    low: float
    high: float

    def draw(self, rng: np.random.Generator) -> float:
        value = rng.lognormal(math.log(self.a), self.b) if self.kind == "lognormal" else rng.uniform(self.a, self.b)
        return float(min(self.high, max(self.low, value)))


@dataclass(frozen=True)
class SessionSpec:
    per_evse_per_day: float
    ev_mix: dict[str, float]
    arrival_weights: tuple[float, ...]  # 24 hourly weights (local time of the clock start)
    dwell_h: Distribution
    energy_kwh: Distribution
    soc_start: Distribution
    min_soc: float
    iso15118_share: float


@dataclass(frozen=True)
class StationGroup:
    model: str
    count: int


@dataclass(frozen=True)
class Transformer:
    id: str
    capacity_kw: float
    groups: tuple[StationGroup, ...]


@dataclass(frozen=True)
class StationPlan:
    """One station of the fleet: id, model, transformer and its pre-drawn sessions."""

    station_id: str
    transformer: str
    model: StationModel
    sessions: tuple[EVSession, ...]


@dataclass
class Scenario:
    name: str
    file: str
    seed: int
    start: datetime
    duration_s: float
    max_speed: float
    sample_interval_s: float
    station_id_prefix: str
    station_models: dict[str, StationModel]
    ev_models: dict[str, EVModel]
    transformers: tuple[Transformer, ...]
    sessions: SessionSpec
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    security_origins: dict[str, Origins] = field(default_factory=dict)  # model -> field -> (file, key)
    pinned: bool = True  # False: `start` is today's time of day and the stations run on the wall clock
    timezone: str | None = None  # the IANA zone of a time-of-day start
    ocpp_versions: dict[str, float] = field(default_factory=dict)  # version -> share (empty: the models')
    versioned_models: frozenset[str] = frozenset()  # station models that name their ocpp_version

    def clock_text(self) -> str:
        """How the scenario's clock reads, for `csms-sim check` and logs."""
        if self.pinned:
            return f"from {self.start.isoformat()} (pinned: stations' clocks read this date)"
        return (f"from {self.start.strftime('%H:%M')} {self.timezone or 'UTC'} on the wall clock "
                "(sessions move to start when the run starts)")

    def version_of(self, index: int, model_name: str) -> str:
        """The OCPP version station `index` of model `model_name` speaks (the mix, unless the model names one)."""
        model = self.station_models[model_name]
        if not self.ocpp_versions or model_name in self.versioned_models:
            return model.ocpp_version
        point = ((index + 1) * _GOLDEN) % 1.0  # low-discrepancy: shares hold for any fleet size and prefix
        total = sum(self.ocpp_versions.values())
        cumulative = 0.0
        for version in OCPP_VERSIONS:
            cumulative += self.ocpp_versions.get(version, 0.0) / total
            if point < cumulative:
                return version
        return max(self.ocpp_versions, key=lambda v: self.ocpp_versions[v])

    @property
    def station_count(self) -> int:
        return sum(g.count for t in self.transformers for g in t.groups)

    def plan(self, stations: int | None = None) -> list[StationPlan]:
        """All stations, scaled to `stations` in total if given (group shares kept, at least 1 each)."""
        groups = [(t, g) for t in self.transformers for g in t.groups]
        counts = [g.count for _, g in groups]
        if stations is not None:
            if stations < 1:
                raise ScenarioError("--stations must be at least 1", file=self.file)
            total = sum(counts)
            counts = _scale_counts(counts, stations) if total != stations else counts
        plans: list[StationPlan] = []
        index = 0
        versioned: dict[tuple[str, str], StationModel] = {}
        for (transformer, group), count in zip(groups, counts):
            for _ in range(count):
                key = (group.model, self.version_of(index, group.model))
                if key not in versioned:
                    base_model = self.station_models[group.model]
                    versioned[key] = base_model if key[1] == base_model.ocpp_version else replace(
                        base_model, ocpp_version=key[1])
                model = versioned[key]
                station_id = f"{self.station_id_prefix}-{index:05d}"
                if model.security is not None:
                    check_station(model.security, station_id, self.security_origins.get(group.model, {}))
                sessions = self._sessions_for(index, model)
                plans.append(StationPlan(station_id, transformer.id, model, sessions))
                index += 1
        return plans

    def override_version(self, version: str) -> None:
        """Every station speaks `version` (the command line's --ocpp-version): models and mix alike."""
        if version not in OCPP_VERSIONS:
            raise ScenarioError(f"unknown OCPP version {version!r}; expected one of {', '.join(OCPP_VERSIONS)}",
                                key="--ocpp-version")
        self.station_models = {name: replace(model, ocpp_version=version)
                               for name, model in self.station_models.items()}
        self.ocpp_versions = {}

    def override_security(self, options: dict[str, Any], option_keys: dict[str, str], url: str | None = None
                          ) -> None:
        """Command-line security options replace the scenario's field by field, for every station model.

        Without a profile, a model keeps its own; a model without security gets 3 with a client
        certificate template, else 2 for a wss:// URL, else 1.
        """
        given = {name: value for name, value in options.items() if value is not None}
        if not given:
            return
        for name, model in list(self.station_models.items()):
            origins = self.security_origins.get(name, {})
            prior = {f: v for f, v in vars(model.security).items() if v is not None} if model.security else {}
            if "password_template" in given:
                prior.pop("password", None)  # the command line's template replaces a fixed password
            layers = []
            for f, v in prior.items():  # one layer per field: each keeps the file and key that set it
                file, key = origins.get(f, (None, f"security.{f}"))
                layers.append(SecurityLayer(file, "", {f: v}, keys={f: key}))
            cli = dict(given)
            if "profile" not in cli and "profile" not in prior:
                cli["profile"] = 3 if "cert_template" in cli else 2 if (url or "").lower().startswith("wss:") else 1
            layers.append(SecurityLayer(None, "", cli, keys=option_keys))
            security, merged = merge_security(layers)
            assert security is not None
            for option in ("cert_template", "key_template"):
                if option in given and security.profile != 3:
                    raise ScenarioError(f"is only used at security profile 3, station model {name!r} uses profile "
                                        f"{security.profile}", key=option_keys.get(option, option))
            self.station_models[name] = replace(model, security=security)
            self.security_origins[name] = merged

    def _sessions_for(self, index: int, model: StationModel) -> tuple[EVSession, ...]:
        rng = np.random.default_rng([self.seed, index])
        spec = self.sessions
        names = list(spec.ev_mix)
        shares = np.asarray([spec.ev_mix[n] for n in names], dtype=float)
        shares /= shares.sum()
        hours = np.asarray(spec.arrival_weights, dtype=float)
        hours /= hours.sum()
        out: list[EVSession] = []
        days = math.ceil(self.duration_s / 86_400) + 1
        local_midnight = self.start.replace(hour=0, minute=0, second=0, microsecond=0)
        end = self.start + timedelta(seconds=self.duration_s)
        for evse_id in range(1, model.evse_count + 1):
            busy_until = self.start
            for day in range(days):
                count = rng.poisson(spec.per_evse_per_day)
                for _ in range(count):
                    hour = rng.choice(24, p=hours)
                    arrival = local_midnight + timedelta(days=day, hours=float(hour) + rng.uniform(0, 1))
                    dwell = spec.dwell_h.draw(rng)
                    ev = self.ev_models[names[rng.choice(len(names), p=shares)]]
                    soc = spec.soc_start.draw(rng)
                    energy = min(spec.energy_kwh.draw(rng), ev.battery_kwh * (1 - soc))
                    iso = bool(rng.uniform() < spec.iso15118_share)
                    if arrival < busy_until or arrival >= end:
                        continue  # the bay is taken (or the run is over): that car parks elsewhere
                    if iso and not ev.iso15118:
                        ev = _with(ev, iso15118=True)
                    departure = arrival + timedelta(hours=dwell)
                    out.append(EVSession(evse_id=evse_id, arrival=arrival, departure=departure, ev=ev,
                                         soc_start=soc, energy_need_kwh=round(energy, 3),
                                         min_soc=min(spec.min_soc, soc), id_token=f"SIM{index:05d}{evse_id}"))
                    busy_until = departure
        return tuple(sorted(out, key=lambda s: s.arrival))


def _with(ev: EVModel, **changes: Any) -> EVModel:
    return replace(ev, **changes)


def _scale_counts(counts: list[int], total: int) -> list[int]:
    """Largest-remainder apportionment of `total` over groups in proportion to `counts`."""
    base = sum(counts)
    exact = [c * total / base for c in counts]
    scaled = [math.floor(x) for x in exact]
    for i in sorted(range(len(counts)), key=lambda i: exact[i] - scaled[i], reverse=True)[: total - sum(scaled)]:
        scaled[i] += 1
    return scaled


# ---------------------------------------------------------------------------------------------- loading


def load_scenario(path: str | Path) -> Scenario:
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario: {exc.strerror or exc}", file=file) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"not valid YAML: {exc}", file=file) from None
    return parse_scenario(data, file=file, base_dir=Path(path).parent)


def parse_scenario(data: Any, *, file: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError("the top level must be a mapping", file=file)
    for key in data:
        if key not in _TOP_KEYS:
            raise ScenarioError(f"unknown key; expected one of {', '.join(sorted(_TOP_KEYS))}", file=file, key=key)
    name = _get(data, "name", str, file)
    seed = _get(data, "seed", int, file)
    clock = _get(data, "clock", dict, file)
    for key in clock:
        if key not in _CLOCK_KEYS:
            raise ScenarioError(f"unknown key; expected one of {', '.join(sorted(_CLOCK_KEYS))}", file=file,
                                key=f"clock.{key}")
    start, pinned, zone = _clock_start(clock, file)
    duration_h = _number(_get(clock, "duration_h", (int, float), file, "clock.duration_h"), file,
                         "clock.duration_h", low=0.0, exclusive=True)
    max_speed = _number(clock.get("max_speed", 1), file, "clock.max_speed", low=0.0, exclusive=True)
    defaults = data.get("defaults", {}) or {}
    if not isinstance(defaults, dict):
        raise ScenarioError("expected a mapping of station model fields", file=file, key="defaults")
    defaults = dict(defaults)
    shared_security = [
        SecurityLayer(file, "security", resolve_paths(_mapping(data.get("security"), file, "security"), base_dir)),
        SecurityLayer(file, "defaults.security", resolve_paths(
            _mapping(defaults.pop("security", None), file, "defaults.security"), base_dir))]
    station_models: dict[str, StationModel] = {}
    security_origins: dict[str, Origins] = {}
    for k, v in _get(data, "station_models", dict, file).items():
        station_models[str(k)], security_origins[str(k)] = _station_model(
            v, defaults, file, f"station_models.{k}", base_dir, shared_security)
    ev_models = {str(k): model_from_dict(EVModel, _named(v, k), file=file, key=f"ev_models.{k}")
                 for k, v in _get(data, "ev_models", dict, file).items()}
    transformers = _transformers(_get(data, "transformers", list, file), station_models, file)
    sessions = _sessions(_get(data, "sessions", dict, file), ev_models, file)
    versions = _versions(data.get("ocpp_versions"), file)
    versioned = frozenset(name for name, value in data["station_models"].items()
                          if "ocpp_version" in defaults or _names_version(value, base_dir))
    return Scenario(
        name=name, file=file, seed=seed, start=start, duration_s=duration_h * 3600.0, max_speed=max_speed,
        sample_interval_s=_number(data.get("sample_interval_s", 900), file, "sample_interval_s", low=1.0),
        station_id_prefix=str(data.get("station_id_prefix", "SIM")), station_models=station_models,
        ev_models=ev_models, transformers=transformers, sessions=sessions,
        description=str(data.get("description", "")), security_origins=security_origins, pinned=pinned,
        timezone=zone, ocpp_versions=versions, versioned_models=versioned)


def _clock_start(clock: dict, file: str) -> tuple[datetime, bool, str | None]:
    """(start, pinned, zone): a date-time pins the stations' clocks; a time of day runs on the wall clock."""
    value = _get(clock, "start", (str, datetime, int), file, "clock.start")
    zone_name = clock.get("timezone")
    if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1 reads 14:00 as 840 (base 60)
        raise ScenarioError("quote a time of day, e.g. \"14:00\" (unquoted YAML reads it as a number)", file=file,
                            key="clock.start")
    match = _TIME_OF_DAY.match(value) if isinstance(value, str) else None
    if match is None:
        pinned = _datetime(value, file, "clock.start")
        if zone_name is not None:
            raise ScenarioError("only goes with a time-of-day start (\"14:00\"); a date-time carries its own "
                                "UTC offset", file=file, key="clock.timezone")
        return pinned, True, None
    if zone_name is not None and not isinstance(zone_name, str):
        raise ScenarioError(f"expected an IANA time zone name, got {zone_name!r}", file=file, key="clock.timezone")
    try:
        zone = ZoneInfo(zone_name) if zone_name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        raise ScenarioError(f"unknown time zone {zone_name!r} (IANA names, e.g. Europe/Amsterdam)", file=file,
                            key="clock.timezone") from None
    hour, minute, second = (int(part or 0) for part in match.groups())
    today = datetime.now(zone).date()
    return _fixed_offset(today, time(hour, minute, second), zone), False, zone_name


def _fixed_offset(day: date, at: time, zone: Any) -> datetime:
    """`at` on `day` in `zone`, with that day's UTC offset frozen: session draws stay date-independent."""
    local = datetime.combine(day, at, tzinfo=zone)
    offset = local.utcoffset() or timedelta(0)
    return datetime.combine(day, at, tzinfo=timezone(offset))


def _versions(value: Any, file: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise ScenarioError("expected a mapping of OCPP version to share, e.g. {\"1.6\": 0.3, \"2.0.1\": 0.5, "
                            "\"2.1\": 0.2}", file=file, key="ocpp_versions")
    out: dict[str, float] = {}
    for version, share in value.items():
        name = str(version)
        if name not in OCPP_VERSIONS:
            raise ScenarioError(f"unknown OCPP version; expected one of {', '.join(OCPP_VERSIONS)}", file=file,
                                key=f"ocpp_versions.{name}")
        out[name] = _number(share, file, f"ocpp_versions.{name}", low=0.0)
    if sum(out.values()) <= 0:
        raise ScenarioError("shares must not all be 0", file=file, key="ocpp_versions")
    return out


def _names_version(value: Any, base_dir: Path | None) -> bool:
    """Does a station model (inline or its file) set ocpp_version itself?"""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(((base_dir or Path(".")) / value).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return False  # already reported while loading the model
    return isinstance(value, dict) and "ocpp_version" in value


def _named(value: Any, name: Any) -> Any:
    """A model's name defaults to its key in the scenario."""
    return {"name": str(name), **value} if isinstance(value, dict) else value


def _mapping(value: Any, file: str, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ScenarioError("expected a mapping with profile, password or password_template, ca_file, "
                            "cert_template, key_template", file=file, key=key)
    return value


def _station_model(value: Any, defaults: dict, file: str, key: str, base_dir: Path | None,
                   shared_security: list[SecurityLayer]) -> tuple[StationModel, Origins]:
    source_file = file
    model_dir = base_dir
    if isinstance(value, str):  # a separate station model file, relative to the scenario
        model_path = (base_dir or Path(".")) / value
        source_file = str(model_path)
        model_dir = model_path.parent
        try:
            value = yaml.safe_load(model_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ScenarioError(f"cannot read station model file: {exc.strerror or exc}", file=file, key=key) from None
        except yaml.YAMLError as exc:
            raise ScenarioError(f"not valid YAML: {exc}", file=source_file) from None
        key = ""
    if not isinstance(value, dict):
        raise ScenarioError("expected a mapping of station model fields or a file name", file=source_file,
                            key=key or None)
    merged = {**defaults, **_named(value, key.rsplit(".", 1)[-1] if key else Path(source_file).stem)}
    security_key = f"{key}.security" if key else "security"
    own = SecurityLayer(source_file, security_key,
                        resolve_paths(_mapping(merged.pop("security", None), source_file, security_key), model_dir))
    security, origins = merge_security([*shared_security, own])
    return model_from_dict(StationModel, {**merged, "security": security}, file=source_file, key=key), origins


def _transformers(items: list, models: dict[str, StationModel], file: str) -> tuple[Transformer, ...]:
    if not items:
        raise ScenarioError("at least one transformer is needed", file=file, key="transformers")
    out = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        key = f"transformers[{i}]"
        if not isinstance(item, dict):
            raise ScenarioError("expected a mapping with id, capacity_kw, groups", file=file, key=key)
        tid = str(_get(item, "id", (str, int), file, f"{key}.id"))
        if tid in seen:
            raise ScenarioError(f"duplicate transformer id {tid!r}", file=file, key=f"{key}.id")
        seen.add(tid)
        capacity = _number(_get(item, "capacity_kw", (int, float), file, f"{key}.capacity_kw"), file,
                           f"{key}.capacity_kw", low=0.0, exclusive=True)
        groups = []
        for j, group in enumerate(_get(item, "groups", list, file, f"{key}.groups")):
            gkey = f"{key}.groups[{j}]"
            if not isinstance(group, dict):
                raise ScenarioError("expected a mapping with model and count", file=file, key=gkey)
            model = str(_get(group, "model", str, file, f"{gkey}.model"))
            if model not in models:
                raise ScenarioError(f"unknown station model {model!r}; defined: {', '.join(models)}", file=file,
                                    key=f"{gkey}.model")
            count = _get(group, "count", int, file, f"{gkey}.count")
            if count < 0:
                raise ScenarioError("count must be >= 0", file=file, key=f"{gkey}.count")
            groups.append(StationGroup(model, count))
        out.append(Transformer(tid, capacity, tuple(groups)))
    return tuple(out)


def _sessions(data: dict, ev_models: dict[str, EVModel], file: str) -> SessionSpec:
    for key in data:
        if key not in _SESSION_KEYS:
            raise ScenarioError(f"unknown key; expected one of {', '.join(sorted(_SESSION_KEYS))}", file=file,
                                key=f"sessions.{key}")
    mix = _get(data, "ev_mix", dict, file, "sessions.ev_mix")
    for name, share in mix.items():
        if name not in ev_models:
            raise ScenarioError(f"unknown ev model {name!r}; defined: {', '.join(ev_models)}", file=file,
                                key=f"sessions.ev_mix.{name}")
        _number(share, file, f"sessions.ev_mix.{name}", low=0.0)
    if not mix or sum(mix.values()) <= 0:
        raise ScenarioError("needs at least one ev model with a positive share", file=file, key="sessions.ev_mix")
    arrival = _get(data, "arrival", dict, file, "sessions.arrival")
    weights = _get(arrival, "hourly_weights", list, file, "sessions.arrival.hourly_weights")
    if len(weights) != 24:
        raise ScenarioError(f"needs 24 values (one per hour), got {len(weights)}", file=file,
                            key="sessions.arrival.hourly_weights")
    for h, w in enumerate(weights):
        _number(w, file, f"sessions.arrival.hourly_weights[{h}]", low=0.0)
    if sum(weights) <= 0:
        raise ScenarioError("weights must not all be 0", file=file, key="sessions.arrival.hourly_weights")
    return SessionSpec(
        per_evse_per_day=_number(data.get("per_evse_per_day", 1.0), file, "sessions.per_evse_per_day", low=0.0),
        ev_mix={str(k): float(v) for k, v in mix.items()},
        arrival_weights=tuple(float(w) for w in weights),
        dwell_h=_distribution(_get(data, "dwell_h", dict, file, "sessions.dwell_h"), file, "sessions.dwell_h"),
        energy_kwh=_distribution(_get(data, "energy_kwh", dict, file, "sessions.energy_kwh"), file,
                                 "sessions.energy_kwh"),
        soc_start=_distribution(data.get("soc_start", {"uniform": [0.2, 0.6]}), file, "sessions.soc_start",
                                upper=1.0),
        min_soc=_number(data.get("min_soc", 0.0), file, "sessions.min_soc", low=0.0, high=1.0),
        iso15118_share=_number(data.get("iso15118_share", 0.0), file, "sessions.iso15118_share", low=0.0, high=1.0))


def _distribution(data: Any, file: str, key: str, upper: float = math.inf) -> Distribution:
    if not isinstance(data, dict):
        raise ScenarioError("expected {lognormal: {median, sigma}} or {uniform: [low, high]}", file=file, key=key)
    low = _number(data.get("min", 0.0), file, f"{key}.min", low=0.0)
    high = _number(data["max"], file, f"{key}.max", low=low) if "max" in data else upper
    unknown = set(data) - {"lognormal", "uniform", "min", "max"}
    if unknown:
        raise ScenarioError("unknown key; expected lognormal, uniform, min, max", file=file,
                            key=f"{key}.{min(unknown)}")
    if "lognormal" in data:
        params = data["lognormal"]
        if not isinstance(params, dict):
            raise ScenarioError("expected {median, sigma}", file=file, key=f"{key}.lognormal")
        median = _number(params.get("median"), file, f"{key}.lognormal.median", low=0.0, exclusive=True)
        sigma = _number(params.get("sigma"), file, f"{key}.lognormal.sigma", low=0.0)
        return Distribution("lognormal", median, sigma, low, high)
    if "uniform" in data:
        bounds = data["uniform"]
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise ScenarioError("expected [low, high]", file=file, key=f"{key}.uniform")
        a = _number(bounds[0], file, f"{key}.uniform[0]", low=0.0)
        b = _number(bounds[1], file, f"{key}.uniform[1]", low=a)
        return Distribution("uniform", a, b, low, min(high, upper))
    raise ScenarioError("needs lognormal or uniform", file=file, key=key)


def _get(data: dict, key: str, kind: type | tuple[type, ...], file: str, full_key: str | None = None) -> Any:
    full_key = full_key or key
    if key not in data:
        raise ScenarioError("missing required key", file=file, key=full_key)
    value = data[key]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ScenarioError(f"expected {names}, got {type(value).__name__}", file=file, key=full_key)
    return value


def _number(value: Any, file: str, key: str, *, low: float = -math.inf, high: float = math.inf,
            exclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScenarioError(f"expected a number, got {value!r}", file=file, key=key)
    if value < low or (exclusive and value == low) or value > high:
        bound = f"> {low}" if exclusive else f">= {low}"
        raise ScenarioError(f"must be {bound}" + (f" and <= {high}" if high != math.inf else "") + f", got {value}",
                            file=file, key=key)
    return float(value)


def _datetime(value: str | datetime, file: str, key: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ScenarioError(f"not an ISO 8601 date-time: {value!r}", file=file, key=key) from None
    if parsed.tzinfo is None:
        raise ScenarioError("needs a UTC offset (e.g. +01:00)", file=file, key=key)
    return parsed
