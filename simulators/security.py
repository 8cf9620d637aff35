"""OCPP security profiles 1-3 for simulated stations: credentials, TLS contexts, log redaction.

A scenario (or the CLI) gives each station model a `SecuritySettings`: the profile, a password
or a per-station password template, the CA file that vouches for the central system, and
per-station client certificate/key templates. `StationCredentials` turns that into the
arguments of `websockets.connect` for one station and holds the live password, which a
`SetVariables SecurityCtrlr.BasicAuthPassword` (use case A01) replaces. Like the rest of the
package it knows nothing about our daemon: it implements OCPP 2.0.1 part 2, A00-A01.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import ssl
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.errors import ScenarioError

PASSWORD_MIN, PASSWORD_MAX = 16, 40  # OCPP 2.0.1 SecurityCtrlr.BasicAuthPassword
_PASSWORD_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))  # printable ASCII, no space
_FIELDS = ("profile", "password", "password_template", "ca_file", "cert_template", "key_template")
_TEMPLATE_FIELD = "station_id"


@dataclass(frozen=True)
class SecuritySettings:
    """How the stations of one model authenticate. Paths are absolute or relative to the cwd."""

    profile: int
    password: str | None = None
    password_template: str | None = None  # e.g. "{station_id}-secret-password-0001"
    ca_file: str | None = None  # trust anchor for the CSMS's server certificate (None: system store)
    cert_template: str | None = None  # e.g. "pki/{station_id}.pem" (profile 3)
    key_template: str | None = None  # e.g. "pki/{station_id}.key" (profile 3)

    @property
    def uses_tls(self) -> bool:
        return self.profile >= 2

    @property
    def uses_password(self) -> bool:
        return self.profile in (1, 2)

    def password_for(self, station_id: str) -> str | None:
        if not self.uses_password:
            return None
        if self.password_template is not None:
            return self.password_template.format(station_id=station_id)
        return self.password

    def cert_files_for(self, station_id: str) -> tuple[str, str] | None:
        if self.profile != 3 or self.cert_template is None or self.key_template is None:
            return None
        return (self.cert_template.format(station_id=station_id), self.key_template.format(station_id=station_id))


def password_problem(password: str) -> str | None:
    """Why OCPP's BasicAuthPassword cannot carry `password`, or None if it can."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return f"must be {PASSWORD_MIN}-{PASSWORD_MAX} characters (OCPP BasicAuthPassword), got {len(password)}"
    if not set(password) <= _PASSWORD_CHARS:
        return "may only contain printable ASCII characters without spaces"
    return None


# ---------------------------------------------------------------------------------------------- parsing


def parse_security(data: Any, *, file: str | None, key: str, base_dir: Path | None = None) -> SecuritySettings:
    """Build settings from a mapping; relative paths resolve against `base_dir`. Errors name file and key."""
    if not isinstance(data, dict):
        raise ScenarioError("expected a mapping with profile, password or password_template, ca_file, "
                            "cert_template, key_template", file=file, key=key)
    for name in data:
        if name not in _FIELDS:
            raise ScenarioError(f"unknown key; expected one of {', '.join(_FIELDS)}", file=file, key=f"{key}.{name}")
    profile = data.get("profile")
    if isinstance(profile, bool) or profile not in (1, 2, 3):
        raise ScenarioError(f"must be 1, 2 or 3, got {profile!r}", file=file, key=f"{key}.profile")
    values: dict[str, str | None] = {}
    for name in _FIELDS[1:]:
        value = data.get(name)
        if value is not None and not (isinstance(value, str) and value):
            raise ScenarioError(f"expected a non-empty string, got {value!r}", file=file, key=f"{key}.{name}")
        values[name] = value
    for name in ("password_template", "cert_template", "key_template"):
        if values[name] is not None:
            _check_template(values[name], file=file, key=f"{key}.{name}")
    settings = SecuritySettings(profile=profile, **resolve_paths(values, base_dir))
    check_settings(settings, file=file, key=key)
    return settings


@dataclass(frozen=True)
class SecurityLayer:
    """One place that sets security fields: the scenario, its defaults, a station model, the command line."""

    file: str | None
    key: str  # e.g. "security", "station_models.kerbside.security"
    values: dict[str, Any]  # relative paths already resolved
    keys: dict[str, str] | None = None  # explicit key per field, e.g. the command line's "--ca"

    def key_of(self, field: str) -> str:
        if self.keys is not None and field in self.keys:
            return self.keys[field]
        return f"{self.key}.{field}" if self.key else field


Origins = dict[str, tuple[str | None, str]]  # field -> (file, key) it was set at


def merge_security(layers: list[SecurityLayer]) -> tuple[SecuritySettings | None, Origins]:
    """Later layers override earlier ones field by field; an error names the file and key that set the field."""
    merged: dict[str, Any] = {}
    origins: Origins = {}
    for layer in layers:
        for name, value in layer.values.items():
            merged[name] = value
            origins[name] = (layer.file, layer.key_of(name))
    if not merged:
        return None, origins
    present = [layer for layer in layers if layer.values] or layers
    try:
        return parse_security(merged, file=None, key="@"), origins
    except ScenarioError as exc:
        field = exc.key[2:] if exc.key and exc.key.startswith("@.") else None
        if field is not None and field in origins:
            file, key = origins[field]
        else:
            file, key = present[-1].file, present[-1].key_of(field) if field else present[-1].key or "security"
        raise ScenarioError(exc.detail, file=file, key=key) from None


def resolve_paths(values: dict[str, Any], base_dir: Path | None) -> dict[str, Any]:
    """Make the file fields of one layer absolute against the directory of the file that holds them."""
    if base_dir is None:
        return dict(values)
    return {name: str(base_dir / value) if name in ("ca_file", "cert_template", "key_template")
            and isinstance(value, str) and value and not os.path.isabs(value) else value
            for name, value in values.items()}


def check_settings(settings: SecuritySettings, *, file: str | None, key: str) -> None:
    """What a profile needs, and a CA file that really loads; raises ScenarioError."""
    if settings.uses_password:
        if settings.password is None and settings.password_template is None:
            raise ScenarioError(f"profile {settings.profile} needs password or password_template", file=file,
                                key=f"{key}.password_template")
        if settings.password is not None and settings.password_template is not None:
            raise ScenarioError("give password or password_template, not both", file=file,
                                key=f"{key}.password_template")
        if settings.password is not None and (problem := password_problem(settings.password)):
            raise ScenarioError(problem, file=file, key=f"{key}.password")
    if settings.profile == 3 and (settings.cert_template is None or settings.key_template is None):
        missing = "cert_template" if settings.cert_template is None else "key_template"
        raise ScenarioError("profile 3 needs cert_template and key_template (the station's client certificate, "
                            "CN = station id)", file=file, key=f"{key}.{missing}")
    if settings.ca_file is not None:
        if not settings.uses_tls:
            raise ScenarioError("profile 1 is plain ws://: a CA file has no use (did you mean profile 2?)",
                                file=file, key=f"{key}.ca_file")
        try:
            server_trust(settings.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ScenarioError(f"cannot load CA file {settings.ca_file}: {_reason(exc)}", file=file,
                                key=f"{key}.ca_file") from None


def check_station(settings: SecuritySettings, station_id: str, origins: Origins) -> None:
    """Per-station checks of the templates: the expanded password and the certificate files."""
    def where(field: str) -> dict[str, Any]:
        file, key = origins.get(field, (None, f"security.{field}"))
        return {"file": file, "key": key}

    password = settings.password_for(station_id)
    problem = password_problem(password) if settings.password_template is not None and password is not None else None
    if problem:
        raise ScenarioError(f"for station {station_id} the password {problem}", **where("password_template"))
    files = settings.cert_files_for(station_id)
    for name, path in zip(("cert_template", "key_template"), files or ()):
        if not os.path.isfile(path):
            raise ScenarioError(f"no file {path} for station {station_id}", **where(name))


def _check_template(template: str, *, file: str | None, key: str) -> None:
    try:
        fields = [name for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ScenarioError(f"malformed template {template!r}: {exc}", file=file, key=key) from None
    unknown = [name for name in fields if name != _TEMPLATE_FIELD]
    if unknown:
        raise ScenarioError(f"unknown placeholder {{{unknown[0]}}}; only {{station_id}} is filled in "
                            "(write {{ and }} for literal braces)", file=file, key=key)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# ---------------------------------------------------------------------------------------------- connecting

_TRUST_CACHE: dict[str | None, ssl.SSLContext] = {}


def server_trust(ca_file: str | None) -> ssl.SSLContext:
    """A client TLS context trusting `ca_file` (or the system store); shared by stations without a cert."""
    context = _TRUST_CACHE.get(ca_file)
    if context is None:
        context = ssl.create_default_context(cafile=ca_file)
        _TRUST_CACHE[ca_file] = context
    return context


class StationCredentials:
    """One station's credentials for `websockets.connect`; the password changes when the CSMS rotates it."""

    def __init__(self, station_id: str, settings: SecuritySettings) -> None:
        self.station_id = station_id
        self.settings = settings
        self.password = settings.password_for(station_id)
        self._context: ssl.SSLContext | None = None

    @property
    def profile(self) -> int:
        return self.settings.profile

    def check_url(self, url: str) -> str | None:
        """Why `url` does not fit the profile (ws:// for 1, wss:// for 2 and 3), or None."""
        scheme = url.split("://", 1)[0].lower()
        wanted = "wss" if self.settings.uses_tls else "ws"
        if scheme != wanted:
            return f"security profile {self.profile} needs a {wanted}:// URL, got {scheme}://"
        return None

    def connect_kwargs(self) -> dict[str, Any]:
        """`additional_headers` (profiles 1, 2) and `ssl` (profiles 2, 3). Raises OSError/ssl.SSLError."""
        kwargs: dict[str, Any] = {}
        if self.password is not None:
            token = base64.b64encode(f"{self.station_id}:{self.password}".encode()).decode()
            kwargs["additional_headers"] = {"Authorization": f"Basic {token}"}
        if self.settings.uses_tls:
            kwargs["ssl"] = self._tls_context()
        return kwargs

    def _tls_context(self) -> ssl.SSLContext:
        files = self.settings.cert_files_for(self.station_id)
        if files is None:
            return server_trust(self.settings.ca_file)
        if self._context is None:  # per station: its own client certificate; built once, on first connect
            context = ssl.create_default_context(cafile=self.settings.ca_file)
            context.load_cert_chain(*files)
            self._context = context
        return self._context

    def set_password(self, value: str) -> None:
        """The CSMS gave a new BasicAuthPassword: use it from the next connect on."""
        self.password = value


# ---------------------------------------------------------------------------------------------- logging

_SECRET_VALUE = re.compile(r'("attributeValue":\s*")(?:[^"\\]|\\.)*"')
_SECRET_VALUE_16 = re.compile(r'("value":\s*")(?:[^"\\]|\\.)*"')  # 1.6 ChangeConfiguration AuthorizationKey
_AUTH_HEADER = re.compile(r"(Authorization:\s*Basic\s+)\S+", re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Hide Basic credentials and, in frames about BasicAuthPassword / AuthorizationKey (1.6), every
    attributeValue / value (-v, DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _AUTH_HEADER.sub(r"\1<redacted>", message)
        if "BasicAuthPassword" in redacted:
            redacted = _SECRET_VALUE.sub(r'\1<redacted>"', redacted)
        if "AuthorizationKey" in redacted:
            redacted = _SECRET_VALUE_16.sub(r'\1<redacted>"', redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_log_redaction(*logger_names: str) -> None:
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


__all__ = [
    "PASSWORD_MAX",
    "PASSWORD_MIN",
    "SecurityLayer",
    "SecuritySettings",
    "StationCredentials",
    "check_settings",
    "check_station",
    "install_log_redaction",
    "merge_security",
    "parse_security",
    "password_problem",
    "resolve_paths",
    "server_trust",
]
