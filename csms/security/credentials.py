"""Registering a station's security profile and password (operator API, CLI, tests)."""

from __future__ import annotations

from csms.domain.identity import MAX_IDENTITY_LENGTH, valid_identity
from csms.domain.records import StationRecord
from csms.security import passwords
from csms.security.auth import NEXT_PASSWORD_KEY
from csms.store.base import StationStore

PROFILES = (1, 2, 3)


class RegistrationError(ValueError):
    """The station id, profile or password cannot be registered (message says which and why)."""


def check_identity(station_id: str) -> None:
    if not isinstance(station_id, str) or not valid_identity(station_id):
        raise RegistrationError(f"station id must be 1-{MAX_IDENTITY_LENGTH} characters without spaces, control "
                                f"characters or '/', got {station_id!r}")


async def register_station(store: StationStore, station_id: str, profile: int,
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
    record = await store.get_station(station_id) or StationRecord(station_id)
    record.registered = True
    record.security_profile = profile
    record.password_hash = hashed
    record.extra.pop(NEXT_PASSWORD_KEY, None)
    await store.put_station(record)
    return generated
