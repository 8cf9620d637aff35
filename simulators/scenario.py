"""Scenario files: which stations, under which transformer, and which EV sessions they see.

A scenario is YAML (see `simulators/scenarios/*.yaml` and docs/simulators.md). Everything random
comes from numpy generators seeded with (scenario seed, station index), so a run repeats exactly
and station k sees the same sessions whether the fleet has 10 or 10,000 stations.
Every malformed input raises `ScenarioError` naming the file and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from simulators.errors import ScenarioError
from simulators.ev import EVSession
from simulators.models import EVModel, StationModel, model_from_dict
from simulators.security import Origins, SecurityLayer, check_station, merge_security, resolve_paths

_TOP_KEYS = {"name", "description", "seed", "clock", "sample_interval_s", "station_id_prefix", "defaults",
             "station_models", "ev_models", "transformers", "sessions", "security"}
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
        for (transformer, group), count in zip(groups, counts):
            model = self.station_models[group.model]
            for _ in range(count):
                station_id = f"{self.station_id_prefix}-{index:05d}"
                if model.security is not None:
                    check_station(model.security, station_id, self.security_origins.get(group.model, {}))
                sessions = self._sessions_for(index, model)
                plans.append(StationPlan(station_id, transformer.id, model, sessions))
                index += 1
        return plans

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
        days = int(math.ceil(self.duration_s / 86_400)) + 1
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
    scaled = [int(math.floor(x)) for x in exact]
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
    start = _datetime(_get(clock, "start", (str, datetime), file, "clock.start"), file, "clock.start")
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
    return Scenario(
        name=name, file=file, seed=seed, start=start, duration_s=duration_h * 3600.0, max_speed=max_speed,
        sample_interval_s=_number(data.get("sample_interval_s", 900), file, "sample_interval_s", low=1.0),
        station_id_prefix=str(data.get("station_id_prefix", "SIM")), station_models=station_models,
        ev_models=ev_models, transformers=transformers, sessions=sessions,
        description=str(data.get("description", "")), security_origins=security_origins)


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
                            key=f"{key}.{sorted(unknown)[0]}")
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
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ScenarioError(f"not an ISO 8601 date-time: {value!r}", file=file, key=key) from None
    if parsed.tzinfo is None:
        raise ScenarioError("needs a UTC offset (e.g. +01:00)", file=file, key=key)
    return parsed
