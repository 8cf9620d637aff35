"""The ``api:`` config section: where the operator API listens and who may use it.

Tokens are never written in the config as plain text unless the operator insists; a token is
given by its SHA-256 (``sha256:``) or in the generated token file next to the SQLite database.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from csms.configcheck import ConfigIssue, Issues, bounds, build

DEFAULT_PORT = 9080
SCOPES = ("read", "admin")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class TokenEntry:
    name: str
    scope: str  # read | admin
    sha256: str  # hex digest of the token


@dataclass(frozen=True)
class TokenSpec:
    """One entry of ``api.tokens`` as written: exactly one of ``sha256`` (hex digest) or ``token``."""

    scope: Literal["read", "admin"]
    name: str | None = None
    sha256: str | None = None
    token: str | None = None


@dataclass(frozen=True)
class ApiConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    # None: 9080, unless the station port is ephemeral (0, as in tests); then the API's is too.
    port: int | None = field(default=None, metadata=bounds(0, 65535))
    token_file: str | None = None  # None: "api-token" next to the SQLite database
    generate_token: bool = True  # create the token file with a fresh admin token if it is missing
    tokens: tuple[TokenEntry, ...] = ()
    metrics_public: bool = False  # serve /metrics without a token (for a scraper on a trusted network)
    dashboard: bool = True
    sse_heartbeat_s: float = field(default=15.0, metadata=bounds(0.1, 3600))


def _tokens(raw: Any, issues: Issues) -> tuple[TokenEntry, ...]:
    if not isinstance(raw, list):
        issues.add("api.tokens", f"expected a list of {{name, scope, sha256|token}}, got {raw!r}")
        return ()
    out = []
    for i, item in enumerate(raw):
        path = f"api.tokens[{i}]"
        kwargs = build(TokenSpec, item, path, issues)
        if kwargs is None:
            continue
        sha256, token = kwargs.get("sha256"), kwargs.get("token")
        if ("sha256" in item) == ("token" in item):
            issues.add(path, "give exactly one of sha256 (hex digest) or token")
        elif sha256 is not None and not _HEX64.match(sha256.lower()):
            issues.add(f"{path}.sha256", "must be 64 hexadecimal characters")
        elif token is not None and len(token) < MIN_TOKEN_LENGTH:
            issues.add(f"{path}.token", f"must be a string of at least {MIN_TOKEN_LENGTH} characters")
        elif "scope" in kwargs and (sha256 or token):
            digest = sha256.lower() if sha256 is not None else hashlib.sha256((token or "").encode()).hexdigest()
            out.append(TokenEntry(kwargs.get("name") or f"token{i}", kwargs["scope"], digest))
    return tuple(out)


def api_section(raw: Any, issues: Issues) -> ApiConfig:
    """The ``api:`` section (problems go to ``issues``; what is invalid keeps its default)."""
    if raw is None:
        return ApiConfig()
    kwargs = build(ApiConfig, raw, "api", issues, skip=("tokens",))
    if kwargs is None:
        return ApiConfig()
    if "tokens" in raw:
        kwargs["tokens"] = _tokens(raw["tokens"], issues)
    return ApiConfig(**kwargs)


def check(raw: Any, file: str) -> list[ConfigIssue]:
    """Every problem in an ``api:`` section on its own (empty list: it is valid)."""
    issues = Issues(file)
    api_section(raw, issues)
    return issues.items
