"""Registering a station's security profile and password (operator API, CLI, tests)."""

from __future__ import annotations

import re
from typing import Any

from csms.gateway import MAX_IDENTITY_LENGTH
from csms.security import passwords
from csms.security.auth import NEXT_PASSWORD_KEY
from csms.store.base import StationRecord, Store

PROFILES = (1, 2, 3)
_BAD_IDENTITY = re.compile(r"[\x00-\x20\x7f/]")


class RegistrationError(ValueError):
    """The station id, profile or password cannot be registered (message says which and why)."""


def _store_of(daemon_or_store: Any) -> Store:
    return daemon_or_store if isinstance(daemon_or_store, Store) else daemon_or_store.store


def check_identity(station_id: str) -> None:
    if not isinstance(station_id, str) or not 1 <= len(station_id) <= MAX_IDENTITY_LENGTH \
            or _BAD_IDENTITY.search(station_id):
        raise RegistrationError(f"station id must be 1-{MAX_IDENTITY_LENGTH} characters without spaces, control "
                                f"characters or '/', got {station_id!r}")


async def register_station(daemon_or_store: Any, station_id: str, profile: int,
                           password: str | None = None) -> str | None:
    """Register (or re-register) a station at ``profile`` and return a generated password.

    Profiles 1 and 2 need a password: pass one, or get a generated one back (shown once: only its
    scrypt hash is stored). Profile 3 authenticates by client certificate; a password is refused
    and any stored one is dropped. Re-registering replaces credentials and may lower the profile;
    a rotation in progress is cancelled. Returns None when no password was generated.
    """
    check_identity(station_id)
    if profile not in PROFILES:
        raise RegistrationError(f"security profile must be 1, 2 or 3, got {profile!r}")
    generated = None
    if profile == 3:
        if password is not None:
            raise RegistrationError("profile 3 stations authenticate with a client certificate, not a password")
        hashed = None
    else:
        if password is None:
            password = generated = passwords.generate()
        try:
            hashed = await passwords.hash_password_async(password)
        except passwords.PasswordError as exc:
            raise RegistrationError(str(exc)) from None
    store = _store_of(daemon_or_store)
    record = await store.get_station(station_id) or StationRecord(station_id)
    record.registered = True
    record.security_profile = profile
    record.password_hash = hashed
    record.extra.pop(NEXT_PASSWORD_KEY, None)
    await store.put_station(record)
    return generated
