"""Daemon configuration: one YAML file, validated up front, every section in the same style.

The core sections are defined here; each part owns its own (``grid`` in csms/grid/config.py,
``api`` in csms/api/config.py, ``security`` in csms/security/config.py, ``registration`` in
csms/domain/registration.py) and all are checked by the same machinery (csms/configcheck.py).
Every problem is reported as a :class:`ConfigIssue` naming the file and the dotted key path, so an
operator can fix a broken config without reading a stack trace. Unknown keys are errors too: a
typo in a safety limit must never be ignored silently.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from csms.api.config import DEFAULT_PORT as DEFAULT_API_PORT
from csms.api.config import ApiConfig, api_section
from csms.configcheck import ConfigError, ConfigIssue, Issues, bounds, section
from csms.domain.registration import RegistrationConfig
from csms.domain.tariffs import Tariffs
from csms.grid.config import GridConfig, grid_section
from csms.ocpp.versions import SUPPORTED_SUBPROTOCOLS
from csms.operations_config import (
    FirmwareConfig,
    Iso15118Config,
    firmware_section,
    iso15118_section,
    tariffs_section,
)
from csms.security.config import SecurityConfig, security_section
from csms.store.postgres_options import dsn_problem, redact, schema_problem

__all__ = ["ClusterConfig", "Config", "ConfigError", "ConfigIssue", "LoggingConfig", "RegistrationConfig",
           "StoreConfig", "store_location",
           "WebsocketConfig", "api_port", "api_token_file", "load_config", "parse_config"]


@dataclass(frozen=True)
class WebsocketConfig:
    host: str = "127.0.0.1"
    port: int = field(default=9000, metadata=bounds(0, 65535))
    path_prefix: str = "/ocpp"
    # In order of preference: a station offering several gets the first of these it offers.
    subprotocols: tuple[str, ...] = SUPPORTED_SUBPROTOCOLS
    ping_interval_s: float | None = 60.0
    ping_timeout_s: float | None = 30.0
    max_frame_bytes: int = field(default=65536, metadata=bounds(128, 64 * 1024 * 1024))
    compression: bool = False
    call_timeout_s: float = field(default=30.0, metadata=bounds(0.01, 3600))
    handshake_timeout_s: float = field(default=10.0, metadata=bounds(0.01, 600))


@dataclass(frozen=True)
class StoreConfig:
    backend: Literal["sqlite", "redis", "postgres"] = "sqlite"
    sqlite_path: str = "var/netbewust.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "netbewust:"
    # Acknowledge only after this many replicas confirmed each write (WAIT).
    redis_wait_replicas: int = field(default=0, metadata=bounds(0, 1000))
    # libpq connection string or postgresql:// URI; the tables live in their own schema.
    postgres_dsn: str = "postgresql://127.0.0.1:5432/netbewust"
    postgres_schema: str = "netbewust"
    postgres_pool_size: int = field(default=16, metadata=bounds(1, 1000))
    # Last frames kept in memory per station for the operator's trace (0 = off).
    trace_frames: int = field(default=16, metadata=bounds(0, 100_000))
    # A departed station's trace is dropped this long after it disconnected (unless it came back).
    trace_ttl_s: float = field(default=600.0, metadata=bounds(0, 30 * 86400))
    # All stations' traces together stay under this (least recently active stations' go first).
    trace_max_bytes: int = field(default=64 * 1024 * 1024, metadata=bounds(0, 64 * 1024**3))


@dataclass(frozen=True)
class ClusterConfig:
    """Several nodes on one Redis (docs/scale-out.md); needs ``store.backend: redis``."""

    node_id: str | None = None  # None: <hostname>-<pid>; unique among the nodes sharing the prefix
    # A node's stations are released this long after its last heartbeat (it renews 3 times per lease).
    lease_s: float = field(default=5.0, metadata=bounds(0.5, 300))
    # How long a node waits for the node holding a station to answer a forwarded command
    # (None: the websocket call timeout plus 5 s).
    forward_timeout_s: float | None = field(default=None, metadata=bounds(0.01, 3600))
    # Where the other nodes reach this node's operator API when it leads the grid (they forward the
    # grid's API requests there). None: the address it listens on (right when all nodes share a host).
    api_url: str | None = None


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


@dataclass(frozen=True)
class Config:
    websocket: WebsocketConfig = field(default_factory=WebsocketConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    grid: GridConfig | None = None  # None: no grid control
    api: ApiConfig = field(default_factory=ApiConfig)
    security: SecurityConfig | None = None  # None: lab mode (plain ws://, no station authentication)
    iso15118: Iso15118Config | None = None  # None: no contract-certificate checks beyond the token
    firmware: FirmwareConfig | None = None
    tariffs: Tariffs | None = None  # None: no cost
    cluster: ClusterConfig | None = None  # None: one node (the default)
    source: str = "<defaults>"


_SECTIONS = ("websocket", "registration", "store", "logging", "grid", "api", "security", "iso15118", "firmware",
             "tariffs", "cluster")


def parse_config(data: Any, file: str = "<config>") -> Config:
    """Build a :class:`Config` from parsed YAML, raising :class:`ConfigError` with every issue."""
    issues = Issues(file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        issues.add("", f"expected a mapping, got {type(data).__name__}")
        issues.raise_if_any()
    for key in data:
        if key not in _SECTIONS:
            issues.add(str(key), f"unknown key (known: {', '.join(sorted(_SECTIONS))})")
    ws = section(WebsocketConfig, data.get("websocket"), "websocket", issues) or WebsocketConfig()
    if not ws.path_prefix.startswith("/"):
        issues.add("websocket.path_prefix", "must start with '/'")
    for i, sp in enumerate(ws.subprotocols):
        if sp not in SUPPORTED_SUBPROTOCOLS:
            issues.add(f"websocket.subprotocols[{i}]",
                       f"unsupported subprotocol {sp!r} (supported: {', '.join(SUPPORTED_SUBPROTOCOLS)})")
    if not ws.subprotocols:
        issues.add("websocket.subprotocols", "must list at least one subprotocol")
    config = Config(
        websocket=ws,
        registration=section(RegistrationConfig, data.get("registration"), "registration", issues)
        or RegistrationConfig(),
        store=section(StoreConfig, data.get("store"), "store", issues) or StoreConfig(),
        logging=section(LoggingConfig, data.get("logging"), "logging", issues) or LoggingConfig(),
        grid=grid_section(data["grid"], issues) if data.get("grid") else None,
        api=api_section(data.get("api"), issues),
        security=security_section(data.get("security"), issues),
        iso15118=iso15118_section(data.get("iso15118"), issues),
        firmware=firmware_section(data.get("firmware"), issues),
        tariffs=tariffs_section(data.get("tariffs"), issues),
        cluster=section(ClusterConfig, data["cluster"], "cluster", issues) if data.get("cluster") is not None else None,
        source=file,
    )
    if config.store.backend == "postgres":
        for key, problem in (("postgres_dsn", dsn_problem(config.store.postgres_dsn)),
                             ("postgres_schema", schema_problem(config.store.postgres_schema))):
            if problem:
                issues.add(f"store.{key}", problem)
    if config.cluster is not None and config.store.backend != "redis":
        issues.add("cluster", "needs store.backend: redis (the nodes share their records, directory and leases there)")
    if config.cluster is not None and config.cluster.api_url is not None \
            and not config.cluster.api_url.startswith(("http://", "https://")):
        issues.add("cluster.api_url", "must be an http:// or https:// URL of this node's operator API")
    if config.cluster is not None and config.cluster.node_id is not None and not config.cluster.node_id.strip():
        issues.add("cluster.node_id", "must not be empty (leave it out for <hostname>-<pid>)")
    issues.raise_if_any()
    return config


def store_location(store: StoreConfig) -> str:
    """Where the store keeps its data, for the log (no password)."""
    if store.backend == "redis":
        return store.redis_url
    if store.backend == "postgres":
        return f"{redact(store.postgres_dsn)} schema {store.postgres_schema}"
    return store.sqlite_path


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


def api_port(config: Config) -> int:
    """Where the operator API listens: as configured, else 9080 (0, ephemeral, when the station port is)."""
    if config.api.port is not None:
        return config.api.port
    return 0 if config.websocket.port == 0 else DEFAULT_API_PORT


def api_token_file(config: Config) -> str:
    """The API token file: as configured (relative to the config file), else next to the SQLite database."""
    base = os.path.dirname(os.path.abspath(config.source)) if os.path.exists(config.source) else os.getcwd()
    token_file = config.api.token_file
    if token_file:
        return token_file if os.path.isabs(token_file) else os.path.join(base, token_file)
    db = config.store.sqlite_path
    if config.store.backend == "sqlite" and db != ":memory:":
        db_dir = os.path.dirname(db if os.path.isabs(db) else os.path.join(base, db))
        return os.path.join(db_dir, "api-token")
    return os.path.join(base, "var", "api-token")
