"""The ``security:`` config section: TLS, the station CA, and the limits of the hardened edge.

With no ``security`` section at all the daemon runs in lab mode (plain ``ws://``, no station
authentication) and says so at startup. As soon as the section exists, every station must
authenticate; plain ``ws://`` (profile 1) then needs ``allow_plain_ws: true``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csms.configcheck import ConfigIssue, Issues, bounds, build
from csms.security.ca import CaConfig, CaError, CertificateAuthority
from csms.security.tls import TlsConfig, TlsError, server_context


@dataclass(frozen=True)
class AuthFailureLimits:
    per_address: int = field(default=20, metadata=bounds(1, 1_000_000))  # failed handshakes per address per window
    per_identity: int = field(default=5, metadata=bounds(1, 1_000_000))  # ... per station identity per window
    window_s: float = field(default=60.0, metadata=bounds(0.1, 86400))


@dataclass(frozen=True)
class MessageRateLimits:
    per_second: float = field(default=20.0, metadata=bounds(0.01, 100_000))  # sustained CALLs per second per station
    burst: int = field(default=100, metadata=bounds(1, 1_000_000))  # CALLs at once (after reconnecting with a queue)
    close_after: int = field(default=50, metadata=bounds(1, 1_000_000))  # refusals in a row before closing (1008)


@dataclass(frozen=True)
class SecurityConfig:
    allow_plain_ws: bool = False
    tls: TlsConfig | None = None
    ca: CaConfig | None = None
    auth_failures: AuthFailureLimits = field(default_factory=AuthFailureLimits)
    message_rate: MessageRateLimits = field(default_factory=MessageRateLimits)
    # Close a socket that sent no CALL for this long (more than the heartbeat interval).
    idle_timeout_s: float = field(default=900.0, metadata=bounds(1, 86400 * 7))


def _resolve(path: str, base: Path | None) -> str:
    p = Path(path).expanduser()
    return str(base / p) if base is not None and not p.is_absolute() else str(p)


def _base_dir(file: str) -> Path | None:
    """Relative file names resolve against the config file's folder (like the store path)."""
    if file.startswith("<"):
        return None
    return Path(file).resolve().parent


_FILES = {"tls": ("cert_file", "key_file", "client_ca_file"), "ca": ("cert_file", "key_file")}


def _with_files(kwargs: dict[str, Any] | None, part: str, base: Path | None) -> dict[str, Any] | None:
    if kwargs is None or any(name not in kwargs for name in ("cert_file", "key_file")):
        return None  # reported as missing
    return {**kwargs, **{name: _resolve(kwargs[name], base) for name in _FILES[part] if kwargs.get(name)}}


def security_section(raw: Any, issues: Issues) -> SecurityConfig | None:
    """The ``security:`` section; None (lab mode) when there is none. Key material is loaded too,
    so a wrong path or a key not matching its certificate is a config error."""
    if not raw:
        return None
    base = _base_dir(issues.file)
    top = build(SecurityConfig, raw, "security", issues, skip=("tls", "ca", "auth_failures", "message_rate"))
    if top is None:
        return None
    tls = ca = None
    if "tls" in raw:
        tls_kwargs = _with_files(build(TlsConfig, raw["tls"], "security.tls", issues), "tls", base)
        tls = TlsConfig(**tls_kwargs) if tls_kwargs is not None else None
    if "ca" in raw:
        ca_kwargs = _with_files(build(CaConfig, raw["ca"], "security.ca", issues), "ca", base)
        ca = CaConfig(**ca_kwargs) if ca_kwargs is not None else None
    failures = AuthFailureLimits(**(build(AuthFailureLimits, raw.get("auth_failures", {}), "security.auth_failures",
                                          issues) or {}))
    rate = MessageRateLimits(**(build(MessageRateLimits, raw.get("message_rate", {}), "security.message_rate",
                                      issues) or {}))
    cfg = SecurityConfig(allow_plain_ws=top.get("allow_plain_ws", False), tls=tls, ca=ca, auth_failures=failures,
                         message_rate=rate, idle_timeout_s=top.get("idle_timeout_s", 900.0))
    if "tls" not in raw and not cfg.allow_plain_ws:
        issues.add("security.tls", "required: stations connect over wss:// (set allow_plain_ws: true for a lab "
                                   "with profile-1 stations over plain ws://)")
    if "tls" in raw and cfg.allow_plain_ws and (tls is None or tls.port is None):
        issues.add("security.allow_plain_ws",
                   "with tls, plain ws:// needs a listener of its own: give tls.port (wss:// there, ws:// on "
                   "websocket.port), or remove one of them")
    if not issues.items:
        _load(cfg, issues)
    return cfg


def _load(cfg: SecurityConfig, issues: Issues) -> None:
    if cfg.tls is not None:
        try:
            server_context(cfg.tls)
        except TlsError as exc:
            issues.add("security.tls", str(exc))
    if cfg.ca is not None:
        try:
            CertificateAuthority.load(cfg.ca)
        except CaError as exc:
            issues.add("security.ca", str(exc))


def check(raw: Any, file: str) -> list[ConfigIssue]:
    """Every problem of a ``security`` section on its own (empty section = lab mode, nothing to check)."""
    issues = Issues(file)
    security_section(raw, issues)
    return issues.items
