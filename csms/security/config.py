"""The ``security:`` config section: TLS, the station CA, and the limits of the hardened edge.

With no ``security`` section at all the daemon runs in lab mode (plain ``ws://``, no station
authentication) and says so at startup. As soon as the section exists, every station must
authenticate; plain ``ws://`` (profile 1) then needs ``allow_plain_ws: true``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csms.configcheck import ConfigIssue
from csms.security.ca import CaConfig, CaError, CertificateAuthority
from csms.security.tls import TlsConfig, TlsError, server_context


@dataclass(frozen=True)
class AuthFailureLimits:
    per_address: int = 20  # failed handshakes per source address per window
    per_identity: int = 5  # failed handshakes per station identity per window
    window_s: float = 60.0


@dataclass(frozen=True)
class MessageRateLimits:
    per_second: float = 20.0  # sustained CALLs per second per station
    burst: int = 100  # CALLs a station may send at once (e.g. after reconnecting with a queue)
    close_after: int = 50  # refused CALLs in a row before the socket is closed with 1008


@dataclass(frozen=True)
class SecurityConfig:
    allow_plain_ws: bool = False
    tls: TlsConfig | None = None
    ca: CaConfig | None = None
    auth_failures: AuthFailureLimits = field(default_factory=AuthFailureLimits)
    message_rate: MessageRateLimits = field(default_factory=MessageRateLimits)
    idle_timeout_s: float = 900.0  # close a socket that sent no CALL for this long (> heartbeat interval)


_TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

# key -> (type, required, (min, max) or None)
_SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], bool, tuple[float, float] | None]]] = {
    "": {"allow_plain_ws": (bool, False, None), "tls": (dict, False, None), "ca": (dict, False, None),
         "auth_failures": (dict, False, None), "message_rate": (dict, False, None),
         "idle_timeout_s": ((int, float), False, (1, 86400 * 7))},
    "tls": {"cert_file": (str, True, None), "key_file": (str, True, None), "client_ca_file": (str, False, None),
            "min_version": (str, False, None)},
    "ca": {"cert_file": (str, True, None), "key_file": (str, True, None),
           "validity_days": (int, False, (1, 3650))},
    "auth_failures": {"per_address": (int, False, (1, 1_000_000)), "per_identity": (int, False, (1, 1_000_000)),
                      "window_s": ((int, float), False, (0.1, 86400))},
    "message_rate": {"per_second": ((int, float), False, (0.01, 100_000)), "burst": (int, False, (1, 1_000_000)),
                     "close_after": (int, False, (1, 1_000_000))},
}


def _check_keys(data: Any, sub: str, file: str, issues: list[ConfigIssue]) -> dict[str, Any]:
    """Type/range-check one mapping of the section; returns only the valid entries."""
    prefix = "security" + (f".{sub}" if sub else "")
    if not isinstance(data, dict):
        issues.append(ConfigIssue(file, prefix, f"expected a mapping, got {type(data).__name__}"))
        return {}
    schema = _SCHEMA[sub]
    good: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}"
        if key not in schema:
            issues.append(ConfigIssue(file, path, f"unknown key (known: {', '.join(sorted(schema))})"))
            continue
        tp, _, bounds = schema[key]
        if isinstance(value, bool) and tp is not bool or not isinstance(value, tp):
            names = " or ".join(t.__name__ for t in (tp if isinstance(tp, tuple) else (tp,)))
            issues.append(ConfigIssue(file, path, f"expected {names}, got {value!r}"))
            continue
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            issues.append(ConfigIssue(file, path, f"must be between {bounds[0]:g} and {bounds[1]:g}, got {value!r}"))
            continue
        good[key] = value
    for key, (_, required, _) in schema.items():
        if required and key not in data:
            issues.append(ConfigIssue(file, f"{prefix}.{key}", "required"))
    return good


def _resolve(path: str, base: Path | None) -> str:
    p = Path(path).expanduser()
    return str(base / p) if base is not None and not p.is_absolute() else str(p)


def _base_dir(file: str) -> Path | None:
    """Relative file names resolve against the config file's folder (like the store path)."""
    if file.startswith("<"):
        return None
    return Path(file).resolve().parent


def _parse(section: dict[str, Any], file: str, issues: list[ConfigIssue]) -> SecurityConfig:
    base = _base_dir(file)
    top = _check_keys(section, "", file, issues)
    tls = ca = None
    if "tls" in section:
        t = _check_keys(section["tls"], "tls", file, issues)
        if t.get("min_version", "1.2") not in _TLS_VERSIONS:
            issues.append(ConfigIssue(file, "security.tls.min_version",
                                      f"must be one of {', '.join(_TLS_VERSIONS)}, got {t['min_version']!r}"))
        elif "cert_file" in t and "key_file" in t:
            tls = TlsConfig(cert_file=_resolve(t["cert_file"], base), key_file=_resolve(t["key_file"], base),
                            client_ca_file=_resolve(t["client_ca_file"], base) if "client_ca_file" in t else None,
                            min_version=t.get("min_version", "1.2"))
    if "ca" in section:
        c = _check_keys(section["ca"], "ca", file, issues)
        if "cert_file" in c and "key_file" in c:
            ca = CaConfig(cert_file=_resolve(c["cert_file"], base), key_file=_resolve(c["key_file"], base),
                          validity_days=c.get("validity_days", 365))
    failures = AuthFailureLimits(**_check_keys(section.get("auth_failures", {}), "auth_failures", file, issues))
    rate = MessageRateLimits(**_check_keys(section.get("message_rate", {}), "message_rate", file, issues))
    cfg = SecurityConfig(allow_plain_ws=top.get("allow_plain_ws", False), tls=tls, ca=ca,
                         auth_failures=failures, message_rate=rate,
                         idle_timeout_s=float(top.get("idle_timeout_s", 900.0)))
    if "tls" not in section and not cfg.allow_plain_ws:
        issues.append(ConfigIssue(file, "security.tls",
                                  "required: stations connect over wss:// (set allow_plain_ws: true for a lab "
                                  "with profile-1 stations over plain ws://)"))
    if "tls" in section and cfg.allow_plain_ws:
        issues.append(ConfigIssue(file, "security.allow_plain_ws",
                                  "cannot be combined with tls: the daemon has one listener (remove one of them)"))
    return cfg


def _load_issues(cfg: SecurityConfig, file: str) -> list[ConfigIssue]:
    """Load the key material now, so a wrong path or a key not matching its certificate is a config error."""
    issues: list[ConfigIssue] = []
    if cfg.tls is not None:
        try:
            server_context(cfg.tls)
        except TlsError as exc:
            issues.append(ConfigIssue(file, "security.tls", str(exc)))
    if cfg.ca is not None:
        try:
            CertificateAuthority.load(cfg.ca)
        except CaError as exc:
            issues.append(ConfigIssue(file, "security.ca", str(exc)))
    return issues


def parse_security(section: dict[str, Any], file: str = "<config>") -> SecurityConfig:
    """The section as dataclasses (call :func:`check` first; invalid entries fall back to defaults)."""
    return _parse(section, file, [])


def check(section: dict[str, Any], file: str) -> list[ConfigIssue]:
    """Every problem of the ``security`` section (empty section = lab mode, nothing to check)."""
    if not section:
        return []
    issues: list[ConfigIssue] = []
    cfg = _parse(section, file, issues)
    if not issues:
        issues.extend(_load_issues(cfg, file))
    return issues
