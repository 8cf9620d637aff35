"""The ``grid.openadr`` section: how the VEN reaches the DSO's VTN and which groups its EANs feed.

Only :mod:`csms.configcheck` is imported here (csms/grid/config.py reads this section), so the
section can be checked with the rest of the file before anything starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from csms.configcheck import Issues, bounds, build

EAN18 = re.compile(r"^\d{18}$")
SPEC_VERSIONS = ("3.0.1", "3.1.0")


def ean18_check_digit_ok(ean: str) -> bool:
    """GS1 mod-10 check digit of an EAN-18 (every Dutch connection EAN carries one)."""
    if not EAN18.match(ean):
        return False
    digits = [int(c) for c in ean]
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits[:-1])))
    return (10 - total % 10) % 10 == digits[-1]


@dataclass(frozen=True)
class OpenAdrConfig:
    """One VTN, one VEN identity, the programs to follow and the EAN-18 codes behind each group."""

    vtn_url: str  # base URL, e.g. https://vtn.dso.example/openadr3/3.0.1
    client_id: str
    ven_name: str  # an eMI3 operator id in GAC (NL-XYZ)
    programs: tuple[str, ...]  # programName of each program to follow
    spec_version: Literal["3.0.1", "3.1.0"] = "3.0.1"
    client_secret: str | None = None
    client_secret_file: str | None = None
    token_url: str | None = None  # default: 3.1.0 asks GET auth/server; else <vtn_url>/auth/token
    token_auth: Literal["form", "basic"] = "form"  # client credentials in the form body or HTTP Basic
    scope: str | None = None  # OAuth2 scope to ask for (default: what the VTN grants the client)
    poll_interval_s: float = field(default=60.0, metadata=bounds(0.1, 3600))
    request_timeout_s: float = field(default=10.0, metadata=bounds(0.1, 300))
    backoff_max_s: float = field(default=300.0, metadata=bounds(0.1, 3600))
    # The VTN may be unreachable this long before the DSO's safe limit applies (GAC safe mode).
    link_timeout_s: float = field(default=300.0, metadata=bounds(0.1, 86400))
    # The safe limit while no SAFE_MODE event is known for a group (None: the group's safe_limit_kw).
    fallback_limit_kw: float | None = field(default=None, metadata=bounds(0, 1e6))
    safe_mode_event_name: str = "SAFE_MODE"
    register_ven: bool = True
    # Where the VTN calls back (our API port, path /openadr/notify, as the VTN reaches it); None: poll only.
    webhook_url: str | None = None
    # group id -> EAN-18 codes of the grid connection(s) behind it (parsed by hand: a mapping)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    secret: str = field(default="", repr=False)  # read from client_secret or client_secret_file

    @property
    def token_endpoint(self) -> str:
        """The configured token URL, or the spec's default path (3.1.0 may tell another: auth/server)."""
        return self.token_url or f"{self.vtn_url.rstrip('/')}/auth/token"

    def groups_of(self, eans: set[str]) -> list[str]:
        """The groups behind any of ``eans``, in config order."""
        return [tid for tid, codes in self.groups.items() if eans & set(codes)]

    @property
    def eans(self) -> list[str]:
        return list(dict.fromkeys(ean for codes in self.groups.values() for ean in codes))


def _url(value: str, path: str, issues: Issues) -> bool:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        issues.add(path, f"expected an http(s) URL, got {value!r}")
        return False
    return True


def _groups(raw: Any, known: set[str], path: str, issues: Issues) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict) or not raw:
        issues.add(path, "expected a mapping of capacity group -> list of EAN-18 codes, e.g. {T1: ['8712...']}")
        return {}
    out: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for tid, codes in raw.items():
        where = f"{path}.{tid}"
        if tid not in known:
            issues.add(where, f"unknown capacity group {tid!r} (known: {', '.join(sorted(known)) or 'none'})")
            continue
        codes = [codes] if isinstance(codes, str) else codes
        if not isinstance(codes, list) or not codes:
            issues.add(where, f"expected a list of EAN-18 codes, got {codes!r}")
            continue
        good = []
        for i, code in enumerate(codes):
            text = str(code) if isinstance(code, int) and not isinstance(code, bool) else code
            if not isinstance(text, str) or not ean18_check_digit_ok(text):
                issues.add(f"{where}[{i}]", f"expected an EAN-18 code (18 digits, valid GS1 check digit; quote it "
                                            f"in YAML), got {code!r}")
                continue
            if text in owner and owner[text] != tid:
                issues.add(f"{where}[{i}]", f"EAN {text} is already mapped to group {owner[text]!r}")
                continue
            owner[text] = tid
            good.append(text)
        if good:
            out[str(tid)] = tuple(dict.fromkeys(good))
    return out


def openadr_section(raw: Any, group_ids: set[str], issues: Issues, path: str = "grid.openadr") -> OpenAdrConfig | None:
    """The section (problems go to ``issues``); None when it is absent or unusable."""
    if raw is None:
        return None
    kwargs = build(OpenAdrConfig, raw, path, issues, skip=("groups", "secret"))
    if kwargs is None:
        return None
    ok = all(key in kwargs for key in ("vtn_url", "client_id", "ven_name", "programs"))
    if "secret" in raw:
        issues.add(f"{path}.secret", "unknown key (use client_secret or client_secret_file)")
        ok = False
    for key in ("vtn_url", "token_url", "webhook_url"):
        if kwargs.get(key) is not None and not _url(kwargs[key], f"{path}.{key}", issues):
            ok = False
    if "programs" in kwargs and not kwargs["programs"]:
        issues.add(f"{path}.programs", "name at least one program (its programName)")
        ok = False
    secret = kwargs.get("client_secret")
    secret_file = kwargs.get("client_secret_file")
    if (secret is None) == (secret_file is None):
        issues.add(f"{path}.client_secret", "give exactly one of client_secret or client_secret_file")
        ok = False
    elif secret_file is not None:
        try:
            secret = Path(secret_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            issues.add(f"{path}.client_secret_file", f"cannot read {secret_file}: {exc.strerror or exc}")
            ok = False
        else:
            if not secret:
                issues.add(f"{path}.client_secret_file", f"{secret_file} is empty")
                ok = False
    kwargs["groups"] = _groups(raw.get("groups"), group_ids, f"{path}.groups", issues)
    if not kwargs["groups"]:
        ok = False
    kwargs["secret"] = secret or ""
    return OpenAdrConfig(**kwargs) if ok else None
