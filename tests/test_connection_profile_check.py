"""The SetChargingProfile request check refuses exactly what the full schema check refuses."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from csms.edge.connection import ProfileRequestCheck
from csms.ocpp.v201 import OCPP201
from csms.protocol import schemas
from csms.protocol.errors import InvalidRequest


def request(evse_id: Any = 1, profile_id: Any = 101, tx: Any = "tx-1", periods: Any = None) -> dict[str, Any]:
    periods = periods if periods is not None else [{"startPeriod": i * 900, "limit": 8.0 + i, "numberPhases": 3}
                                                   for i in range(4)]
    return {"evseId": evse_id, "chargingProfile": {
        "id": profile_id, "stackLevel": 1, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
        "transactionId": tx, "chargingSchedule": [{"id": profile_id, "startSchedule": "2026-01-01T00:00:00Z",
                                                   "chargingRateUnit": "A", "chargingSchedulePeriod": periods,
                                                   "duration": 3600}]}}


def full_verdict(payload: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    try:
        schemas.check_outgoing(OCPP201, "SetChargingProfile", payload)
    except InvalidRequest as exc:
        return exc.code, exc.details
    return None


def verdict(check: ProfileRequestCheck, payload: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    try:
        check(OCPP201, payload)
    except InvalidRequest as exc:
        return exc.code, exc.details
    return None


@pytest.mark.parametrize("payload", [
    request(evse_id="1"), request(evse_id=True), request(profile_id=1.5), request(tx="x" * 37), request(tx=7),
    request(evse_id=2, profile_id=102, tx="tx-2"),
])
def test_a_known_schedule_does_not_excuse_the_other_fields(payload: dict[str, Any]) -> None:
    check = ProfileRequestCheck()
    assert verdict(check, request()) is None  # its periods are now known good
    assert verdict(check, payload) == full_verdict(payload)


def test_other_fields_of_a_known_schedule_are_still_checked() -> None:
    check = ProfileRequestCheck()
    check(OCPP201, request())
    bad = request()
    bad["chargingProfile"]["chargingSchedule"][0]["chargingRateUnit"] = "kW"
    bad["chargingProfile"]["chargingSchedule"][0]["bogus"] = 1
    assert verdict(check, bad) == full_verdict(bad) is not None


@pytest.mark.parametrize("periods", [
    [{"startPeriod": 0, "limit": 8.0}, {"startPeriod": 900, "limit": "9"}],  # a bad later item
    [{"startPeriod": 0, "limit": 8.0}, {"startPeriod": 900, "limit": True}],  # bool is not a number
    [{"startPeriod": 0, "limit": 8.0}] * 1025,  # too many
    [],
])
def test_a_period_list_never_seen_gets_the_full_check(periods: list[dict[str, Any]]) -> None:
    check = ProfileRequestCheck()
    check(OCPP201, request(periods=[{"startPeriod": 0, "limit": 8.0}, {"startPeriod": 900, "limit": 9}]))
    payload = request(periods=periods)
    assert full_verdict(payload) is not None
    assert verdict(check, payload) == full_verdict(payload)


def test_a_refused_request_teaches_nothing() -> None:
    check = ProfileRequestCheck()
    periods = [{"startPeriod": 0, "limit": 8.0}, {"startPeriod": 900, "limit": 9.0}]
    bad = request(evse_id="x", periods=periods)
    assert verdict(check, bad) is not None
    assert check._key(OCPP201, bad) not in check._known  # noqa: SLF001 - the cache itself is what is tested


def test_the_request_is_not_modified() -> None:
    check = ProfileRequestCheck()
    first, second = request(), request(evse_id=2, profile_id=102, tx="tx-2")
    before = copy.deepcopy(second)
    check(OCPP201, first)
    check(OCPP201, second)
    assert second == before


@pytest.mark.parametrize("payload", [{"evseId": 1}, {"evseId": 1, "chargingProfile": None},
                                     {"evseId": 1, "chargingProfile": {"chargingSchedule": "x"}}])
def test_odd_shapes_get_the_full_check(payload: dict[str, Any]) -> None:
    assert verdict(ProfileRequestCheck(), payload) == full_verdict(payload) is not None
