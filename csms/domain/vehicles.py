"""Who the car is, as far as a station says: keys the grid learns car behaviour under.

A key is ``"<kind>:<value>"``: ``evccid:`` for the EV's communication controller id (ISO 15118;
an idToken of type MacAddress is one, as Autocharge uses it), ``vehicle:`` for a vehicle id a
station reports (the device model's ``ConnectedEV.VehicleId`` in NotifyEvent, or ``vehicleId`` /
``evccid`` in a TransactionEvent's customData), ``token:`` for the idToken the session was
authorised with (a driver's card: usually one car; a MacAddress token gives both keys, since the
transaction record, read back after a restart, keeps only the token). Tokens that name nobody
(NoAuthorization, Central, empty) give no key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ANONYMOUS_TOKEN_TYPES = frozenset({"NoAuthorization", "Central"})
MAC_TOKEN_TYPES = frozenset({"MacAddress"})
MAX_KEY_CHARS = 255
_CUSTOM_KEYS = (("evccid", "evccid"), ("EVCCID", "evccid"), ("vehicleId", "vehicle"), ("vehicle_id", "vehicle"))


def token_key(id_token: str | None) -> str | None:
    """The key of a stored transaction's idToken (its type is not kept there)."""
    return key("token", id_token)


def key(kind: str, value: Any) -> str | None:
    """``kind:value`` for a non-empty string value of sane length, else None."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_KEY_CHARS:
        return None
    return f"{kind}:{value.strip()}"


def _custom(data: Any) -> list[str]:
    if not isinstance(data, Mapping):
        return []
    return [k for name, kind in _CUSTOM_KEYS if (k := key(kind, data.get(name))) is not None]


def from_transaction_event(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """The keys a 2.0.1/2.1 TransactionEventRequest names (its idToken and customData)."""
    found: list[str] = []
    token = payload.get("idToken")
    if isinstance(token, Mapping):
        kind = token.get("type")
        if kind in MAC_TOKEN_TYPES:
            found.append(key("evccid", token.get("idToken")) or "")
        if kind not in ANONYMOUS_TOKEN_TYPES:  # also for a MAC: the stored record keeps the token alone
            found.append(key("token", token.get("idToken")) or "")
    found += _custom(payload.get("customData"))
    found += _custom((payload.get("transactionInfo") or {}).get("customData"))
    return tuple(dict.fromkeys(k for k in found if k))


def from_notify_event(event: Mapping[str, Any]) -> tuple[int, str] | None:
    """(evse id, key) when a NotifyEvent's eventData reports ``ConnectedEV.VehicleId`` on an EVSE."""
    component = event.get("component") or {}
    variable = event.get("variable") or {}
    if not isinstance(component, Mapping) or not isinstance(variable, Mapping):
        return None
    if component.get("name") != "ConnectedEV" or variable.get("name") != "VehicleId":
        return None
    evse = (component.get("evse") or {}).get("id") if isinstance(component.get("evse"), Mapping) else None
    value = key("vehicle", event.get("actualValue"))
    if not isinstance(evse, int) or isinstance(evse, bool) or evse <= 0 or value is None:
        return None
    return evse, value
