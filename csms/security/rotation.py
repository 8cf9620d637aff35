"""Password rotation (OCPP 2.0.1 use case A01): the CSMS sets SecurityCtrlr.BasicAuthPassword.

The new password's hash is stored as the station's *next* password before the SetVariables is
sent, so the station may reconnect with it at any moment; the current one keeps working until
the station logs in with the new one (auth.py then drops the old). The password itself is never
logged or stored: the command record and the trace show it redacted.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Protocol

from csms.interfaces import Commands, ConnectionRegistry
from csms.protocol.errors import CallTimeout, OcppError, StationOffline
from csms.security import passwords
from csms.security.auth import NEXT_PASSWORD_KEY
from csms.security.credentials import RegistrationError
from csms.store.base import StationStore

log = logging.getLogger("csms.security")


class RotationResult(str, Enum):
    ACCEPTED = "Accepted"  # the station took it; it will use it at its next connect
    REBOOT_REQUIRED = "RebootRequired"  # the station took it but applies it after a reboot
    UNCERTAIN = "Uncertain"  # no answer in time: both passwords stay valid until the next login


class RotationError(Exception):
    """The password was not rotated (station rejected it, is offline, or has no password profile)."""


class RotationDeps(Protocol):
    """What a rotation uses (the daemon has all three)."""

    @property
    def store(self) -> StationStore: ...

    @property
    def connections(self) -> ConnectionRegistry: ...

    @property
    def commands(self) -> Commands: ...


async def rotate_password(daemon: RotationDeps, station_id: str, new_password: str | None = None) -> RotationResult:
    """Give a connected profile-1/2 station a new password (generated unless given)."""
    store = daemon.store
    record = await store.get_station(station_id)
    if record is None or record.security_profile not in (1, 2) or not record.password_hash:
        raise RotationError(f"{station_id} has no password to rotate (register it at profile 1 or 2 first)")
    if station_id not in daemon.connections:
        raise RotationError(f"{station_id} is not connected; a password can only be rotated on a live connection")
    password = new_password if new_password is not None else passwords.generate()
    try:
        hashed = await passwords.hash_password_async(password)
    except passwords.PasswordError as exc:
        raise RegistrationError(str(exc)) from None
    record = await store.get_station(station_id) or record  # fresh: hashing took a while
    record.extra[NEXT_PASSWORD_KEY] = hashed
    await store.put_station(record)
    item = {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"},
            "attributeValue": password}
    try:
        response = await daemon.commands.set_variables(station_id, [item])
    except CallTimeout:
        log.warning("%s did not answer the password rotation; old and new password both stay valid", station_id)
        return RotationResult.UNCERTAIN
    except (OcppError, StationOffline) as exc:
        await _cancel(store, station_id)
        raise RotationError(f"{station_id} did not take the new password: {exc}") from None
    status = response["setVariableResult"][0]["attributeStatus"]
    if status in ("Accepted", "RebootRequired"):
        log.info("%s accepted a new BasicAuthPassword (%s)", station_id, status)
        return RotationResult(status)
    await _cancel(store, station_id)
    raise RotationError(f"{station_id} answered {status} to SecurityCtrlr.BasicAuthPassword; password unchanged")


async def _cancel(store: StationStore, station_id: str) -> None:
    record = await store.get_station(station_id)
    if record is not None and record.extra.pop(NEXT_PASSWORD_KEY, None) is not None:
        await store.put_station(record)
