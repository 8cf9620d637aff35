"""Daemon configuration: one YAML file, validated up front.

Every problem is reported as a :class:`ConfigIssue` naming the file and the dotted key path, so an
operator can fix a broken config without reading a stack trace. Unknown keys are errors too: a typo
in a safety limit must never be ignored silently.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from csms.configcheck import ConfigError, ConfigIssue
from csms.domain.registration import RegistrationConfig
from csms.ocpp.versions import SUPPORTED_SUBPROTOCOLS

__all__ = ["Config", "ConfigError", "ConfigIssue", "LoggingConfig", "RegistrationConfig", "StoreConfig",
           "WebsocketConfig", "load_config", "parse_config"]


@dataclass(frozen=True)
class WebsocketConfig:
    host: str = "127.0.0.1"
    port: int = 9000
    path_prefix: str = "/ocpp"
    subprotocols: list[str] = field(default_factory=lambda: ["ocpp2.0.1"])
    ping_interval_s: float | None = 60.0
    ping_timeout_s: float | None = 30.0
    max_frame_bytes: int = 65536
    compression: bool = False
    call_timeout_s: float = 30.0
    handshake_timeout_s: float = 10.0


@dataclass(frozen=True)
class StoreConfig:
    backend: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: str = "var/netbewust.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "netbewust:"
    redis_wait_replicas: int = 0  # acknowledge only after this many replicas confirmed each write (WAIT)
    trace_frames: int = 16  # last frames kept in memory per station for the operator's trace (0 = off)


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


@dataclass(frozen=True)
class Config:
    websocket: WebsocketConfig = field(default_factory=WebsocketConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # Sections owned by other parts of the daemon (grid control, operator API, security) are kept
    # as raw mappings here and validated by their owners through ``extra_validators``.
    grid: dict[str, Any] = field(default_factory=dict)
    api: dict[str, Any] = field(default_factory=dict)
    security: dict[str, Any] = field(default_factory=dict)
    source: str = "<defaults>"


_POSITIVE = {
    "websocket.port": (0, 65535),
    "websocket.max_frame_bytes": (128, 64 * 1024 * 1024),
    "websocket.call_timeout_s": (0.01, 3600),
    "websocket.handshake_timeout_s": (0.01, 600),
    "registration.heartbeat_interval_s": (1, 86400),
    "registration.pending_retry_interval_s": (1, 86400),
}


def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check ``value`` against a simple annotation; returns (ok, coerced value)."""
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is Literal:
        return value in args, value
    if origin in (list,):
        if not isinstance(value, list):
            return False, value
        return all(_type_ok(v, args[0])[0] for v in value), value
    if origin in (dict,):
        return isinstance(value, dict), value
    if args and type(None) in args:  # Optional[...]
        if value is None:
            return True, None
        return _type_ok(value, next(a for a in args if a is not type(None)))
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        return True, float(value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    return True, value


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _build(cls: type, data: Any, file: str, prefix: str, issues: list[ConfigIssue]) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        issues.append(ConfigIssue(file, prefix, f"expected a mapping, got {type(data).__name__}"))
        return cls()
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            issues.append(ConfigIssue(file, path, f"unknown key (known: {', '.join(sorted(names))})"))
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, file, path, issues)
            continue
        ok, coerced = _type_ok(value, tp)
        if not ok:
            issues.append(ConfigIssue(file, path, f"expected {_describe(tp)}, got {value!r}"))
            continue
        bounds = _POSITIVE.get(path)
        if bounds and coerced is not None and not (bounds[0] <= coerced <= bounds[1]):
            issues.append(ConfigIssue(file, path, f"must be between {bounds[0]} and {bounds[1]}, got {coerced!r}"))
            continue
        kwargs[key] = coerced
    return cls(**kwargs)


def parse_config(data: Any, file: str = "<config>") -> Config:
    """Build a :class:`Config` from parsed YAML, raising :class:`ConfigError` with every issue."""
    issues: list[ConfigIssue] = []
    cfg = _build(Config, data, file, "", issues)
    cfg = dataclasses.replace(cfg, source=file)
    ws = cfg.websocket
    if not ws.path_prefix.startswith("/"):
        issues.append(ConfigIssue(file, "websocket.path_prefix", "must start with '/'"))
    for i, sp in enumerate(ws.subprotocols):
        if sp not in SUPPORTED_SUBPROTOCOLS:
            issues.append(ConfigIssue(file, f"websocket.subprotocols[{i}]",
                                      f"unsupported subprotocol {sp!r} (supported: {', '.join(SUPPORTED_SUBPROTOCOLS)})"))
    if not ws.subprotocols:
        issues.append(ConfigIssue(file, "websocket.subprotocols", "must list at least one subprotocol"))
    for section, target in SECTION_CHECKS.items():
        module_name, func = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not exc.name or not module_name.startswith(exc.name):
                raise
            continue  # that part of the daemon is not installed in this build
        issues.extend(getattr(module, func)(getattr(cfg, section), file))
    if issues:
        raise ConfigError(issues)
    return cfg


# The free-form sections are validated by the package that owns them:
# ``check(section: dict, file: str) -> list[ConfigIssue]``; all issues are reported together.
SECTION_CHECKS: dict[str, str] = {
    "grid": "csms.grid.config:check",
    "api": "csms.api.config:check",
    "security": "csms.security.config:check",
}


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config file. Relative store paths resolve against the file's folder."""
    p = Path(path)
    file = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(file, "", f"cannot read file: {exc.strerror or exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([ConfigIssue(file, "", f"invalid YAML: {where}{getattr(exc, 'problem', exc)}")]) from None
    cfg = parse_config(data, file)
    if cfg.store.backend == "sqlite" and not os.path.isabs(cfg.store.sqlite_path) and cfg.store.sqlite_path != ":memory:":
        store = dataclasses.replace(cfg.store, sqlite_path=str(p.resolve().parent / cfg.store.sqlite_path))
        cfg = dataclasses.replace(cfg, store=store)
    return cfg
