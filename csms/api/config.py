"""The ``api:`` config section: where the operator API listens and who may use it.

Tokens are never written in the config as plain text unless the operator insists; a token is
given by its SHA-256 (``sha256:``) or in the generated token file next to the SQLite database.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from csms.config import Config
from csms.configcheck import ConfigIssue

DEFAULT_PORT = 9080
SCOPES = ("read", "admin")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class TokenEntry:
    name: str
    scope: str  # read | admin
    sha256: str  # hex digest of the token


@dataclass(frozen=True)
class ApiConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    # None: 9080, unless the station port is ephemeral (0, as in tests); then the API's is too.
    port: int | None = None
    token_file: str | None = None  # None: "api-token" next to the SQLite database
    generate_token: bool = True  # create the token file with a fresh admin token if it is missing
    tokens: list[TokenEntry] = field(default_factory=list)
    metrics_public: bool = False  # serve /metrics without a token (for a scraper on a trusted network)
    dashboard: bool = True
    sse_heartbeat_s: float = 15.0


_KEYS = {"enabled", "host", "port", "token_file", "generate_token", "tokens", "metrics_public", "dashboard",
         "sse_heartbeat_s"}


def _token_issues(tokens: Any, file: str) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    if not isinstance(tokens, list):
        return [ConfigIssue(file, "api.tokens", f"expected a list of {{name, scope, sha256|token}}, got {tokens!r}")]
    for i, t in enumerate(tokens):
        key = f"api.tokens[{i}]"
        if not isinstance(t, dict):
            issues.append(ConfigIssue(file, key, f"expected a mapping, got {t!r}"))
            continue
        unknown = set(t) - {"name", "scope", "sha256", "token"}
        if unknown:
            issues.append(ConfigIssue(file, key, f"unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                                                 "(known: name, scope, sha256, token)"))
        if t.get("scope") not in SCOPES:
            issues.append(ConfigIssue(file, f"{key}.scope", f"must be one of {', '.join(SCOPES)}, got {t.get('scope')!r}"))
        if not isinstance(t.get("name", f"token{i}"), str):
            issues.append(ConfigIssue(file, f"{key}.name", "must be a string"))
        has_hash, has_plain = "sha256" in t, "token" in t
        if has_hash == has_plain:
            issues.append(ConfigIssue(file, key, "give exactly one of sha256 (hex digest) or token"))
        elif has_hash and not (isinstance(t["sha256"], str) and _HEX64.match(t["sha256"].lower())):
            issues.append(ConfigIssue(file, f"{key}.sha256", "must be 64 hexadecimal characters"))
        elif has_plain and not (isinstance(t["token"], str) and len(t["token"]) >= 16):
            issues.append(ConfigIssue(file, f"{key}.token", "must be a string of at least 16 characters"))
    return issues


def check(section: dict[str, Any], file: str) -> list[ConfigIssue]:
    """Every problem in the ``api:`` section (empty list: it is valid)."""
    if section is None:
        return []
    if not isinstance(section, dict):
        return [ConfigIssue(file, "api", f"expected a mapping, got {type(section).__name__}")]
    issues: list[ConfigIssue] = []
    for key, value in section.items():
        path = f"api.{key}"
        if key not in _KEYS:
            issues.append(ConfigIssue(file, path, f"unknown key (known: {', '.join(sorted(_KEYS))})"))
        elif key in ("enabled", "generate_token", "metrics_public", "dashboard") and not isinstance(value, bool):
            issues.append(ConfigIssue(file, path, f"expected true or false, got {value!r}"))
        elif key == "host" and not (isinstance(value, str) and value):
            issues.append(ConfigIssue(file, path, f"expected a host name or address, got {value!r}"))
        elif key == "port" and value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535):
            issues.append(ConfigIssue(file, path, f"must be a port number between 0 and 65535, got {value!r}"))
        elif key == "token_file" and value is not None and not (isinstance(value, str) and value):
            issues.append(ConfigIssue(file, path, f"expected a file path, got {value!r}"))
        elif key == "sse_heartbeat_s" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                           or not 0.1 <= value <= 3600):
            issues.append(ConfigIssue(file, path, f"must be a number of seconds between 0.1 and 3600, got {value!r}"))
        elif key == "tokens":
            issues.extend(_token_issues(value, file))
    return issues


def _digest(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()


def parse(config: Config) -> ApiConfig:
    """The validated ``api:`` section as an :class:`ApiConfig` (call only after :func:`check` passed)."""
    section = dict(config.api or {})
    tokens = [TokenEntry(t.get("name", f"token{i}"), t["scope"],
                         t["sha256"].lower() if "sha256" in t else _digest(t["token"]))
              for i, t in enumerate(section.pop("tokens", []) or [])]
    if "sse_heartbeat_s" in section:
        section["sse_heartbeat_s"] = float(section["sse_heartbeat_s"])
    cfg = ApiConfig(tokens=tokens, **section)
    return cfg


def resolve_port(api: ApiConfig, config: Config) -> int:
    if api.port is not None:
        return api.port
    return 0 if config.websocket.port == 0 else DEFAULT_PORT


def resolve_token_file(api: ApiConfig, config: Config) -> str:
    """The token file: as configured (relative to the config file), else next to the SQLite database."""
    base = os.path.dirname(os.path.abspath(config.source)) if os.path.exists(config.source) else os.getcwd()
    if api.token_file:
        return api.token_file if os.path.isabs(api.token_file) else os.path.join(base, api.token_file)
    db = config.store.sqlite_path
    if config.store.backend == "sqlite" and db != ":memory:":
        db_dir = os.path.dirname(db if os.path.isabs(db) else os.path.join(base, db))
        return os.path.join(db_dir, "api-token")
    return os.path.join(base, "var", "api-token")
