"""The ``grid.uftp`` config section: who we are (domain, signing key, endpoint), whom we talk to
(the DSOs' endpoints and public keys: an address book, no DNS), and which capacity group each
congestion point (EAN) is. Parsing only; nothing here imports the UFTP library."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csms.configcheck import Issues, bounds, build

DEFAULT_PATH = "/shapeshifter/api/v3/message"
VERSIONS = ("3.0.0", "3.1.0")
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class UftpParticipant:
    """A DSO we accept messages from and send to (endpoint and NaCl public key, base64)."""

    domain: str
    endpoint: str
    public_key: str
    role: str = "DSO"


@dataclass(frozen=True)
class UftpConfig:
    domain: str = ""
    signing_key: str = ""  # base64 of the 64-byte NaCl signing key (or signing_key_file)
    signing_key_file: str | None = None
    host: str = "127.0.0.1"
    port: int = field(default=8081, metadata=bounds(0, 65535))
    path: str = DEFAULT_PATH
    version: str = "3.1.0"
    participants: tuple[UftpParticipant, ...] = ()
    congestion_points: dict[str, str] = field(default_factory=dict)  # EAN (as in the messages) -> group id
    price_eur_per_mwh: float = field(default=100.0, metadata=bounds(0, 1e6))
    offer_validity_s: float = field(default=3600.0, metadata=bounds(1, 7 * 86400))
    min_offer_w: int = field(default=1000, metadata=bounds(0, 10**9))
    # A message whose TimeStamp is older than this is stale and refused.
    max_message_age_s: float = field(default=900.0, metadata=bounds(1, 86400))
    request_timeout_s: float = field(default=5.0, metadata=bounds(0.1, 120))
    retry_max_s: float = field(default=30.0, metadata=bounds(0.1, 3600))
    settlement_tolerance_w: int = field(default=1000, metadata=bounds(0, 10**9))
    settlement_tolerance_share: float = field(default=0.1, metadata=bounds(0, 1))
    measure_interval_s: float = field(default=10.0, metadata=bounds(0.1, 3600))

    def group_of(self, congestion_point: str) -> str | None:
        return self.congestion_points.get(congestion_point)


def _base64_key(value: Any, size: int, path: str, issues: Issues) -> bool:
    try:
        ok = isinstance(value, str) and len(base64.b64decode(value, validate=True)) == size
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        issues.add(path, f"expected base64 of a {size}-byte NaCl key")
    return ok


def uftp_section(raw: Any, groups: set[str], issues: Issues, path: str = "grid.uftp") -> UftpConfig | None:
    """Parse the section; every problem goes to ``issues`` with its key path."""
    kwargs = build(UftpConfig, raw, path, issues, skip=("participants", "congestion_points"))
    if kwargs is None:
        return None
    assert isinstance(raw, dict)
    if not _DOMAIN_RE.match(str(kwargs.get("domain", ""))):
        issues.add(f"{path}.domain", "required: our participant domain (a host name such as agr.example.com)")
    if kwargs.get("version", "3.1.0") not in VERSIONS:
        issues.add(f"{path}.version", f"expected one of {', '.join(VERSIONS)}, got {kwargs.get('version')!r}")
    key_file = kwargs.get("signing_key_file")
    if key_file is not None:
        if kwargs.get("signing_key"):
            issues.add(f"{path}.signing_key_file", "give signing_key or signing_key_file, not both")
        try:
            kwargs["signing_key"] = Path(key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            issues.add(f"{path}.signing_key_file", f"cannot read: {exc.strerror or exc}")
    if "signing_key" not in kwargs or not kwargs["signing_key"]:
        issues.add(f"{path}.signing_key", "required (or signing_key_file): base64 of a 64-byte NaCl signing key")
    else:
        _base64_key(kwargs["signing_key"], 64, f"{path}.signing_key", issues)
    participants: list[UftpParticipant] = []
    items = raw.get("participants") or []
    if not isinstance(items, list):
        issues.add(f"{path}.participants", f"expected a list, got {type(items).__name__}")
        items = []
    for i, item in enumerate(items):
        where = f"{path}.participants[{i}]"
        fields = build(UftpParticipant, item, where, issues)
        if fields is None or not all(k in fields for k in ("domain", "endpoint", "public_key")):
            continue
        if fields.get("role", "DSO") != "DSO":
            issues.add(f"{where}.role", f"only DSO participants are served, got {fields['role']!r}")
            continue
        if not str(fields["endpoint"]).startswith(("http://", "https://")):
            issues.add(f"{where}.endpoint", f"expected an http(s) URL, got {fields['endpoint']!r}")
            continue
        if _base64_key(fields["public_key"], 32, f"{where}.public_key", issues):
            participants.append(UftpParticipant(**fields))
    if not participants:
        issues.add(f"{path}.participants", "needs at least one DSO (domain, endpoint, public_key)")
    points: dict[str, str] = {}
    raw_points = raw.get("congestion_points")
    if not isinstance(raw_points, dict) or not raw_points:
        issues.add(f"{path}.congestion_points", "required: a mapping of congestion point (EAN) -> capacity group id")
    else:
        for ean, group in raw_points.items():
            if group not in groups:
                issues.add(f"{path}.congestion_points.{ean}", f"unknown capacity group {group!r} "
                                                              f"(known: {', '.join(sorted(groups))})")
            else:
                points[str(ean)] = group
    kwargs["participants"] = tuple(participants)
    kwargs["congestion_points"] = points
    return UftpConfig(**kwargs)
