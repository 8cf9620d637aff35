"""Block K, Smart charging: profiles through the API with the rules the CSMS must keep, reports,
external limits, and ISO 15118 schedule negotiation.

Covers TC_K_01/03/10/60 (K01 SetChargingProfile per purpose and EVSE), K01.FR.03 (a TxProfile
names its transaction), K01.FR.31 (the first period starts at 0), K01.FR.38 (no Relative
ChargingStationMaxProfile), TC_K_15 (a Rejected profile is kept as such), TC_K_29..36 (K09.FR.03:
GetChargingProfiles with ids or criteria, never without), TC_K_05/06/08 (K10.FR.02: ClearChargingProfile
with an id or criteria), TC_K_43/44 (K08 GetCompositeSchedule), TC_K_48..52 (K11..K13 external
limits answered), and TC_K_53/55/58 (K15/K16: NotifyEVChargingNeeds accepted, an EV schedule within
the TxProfile we sent is Accepted, one that exceeds it is Rejected and a renegotiation follows:
K15.FR.11/12/13, K16.FR.06/07/08; issue 17 item 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conformance.station import Rig, Station, rig, ts


def profile(id_: int, purpose: str, limits: list[tuple[int, float]], *, unit: str = "W", kind: str = "Relative",
            transaction_id: str | None = None, start: str | None = None, stack_level: int = 0) -> dict[str, Any]:
    schedule: dict[str, Any] = {"id": id_, "chargingRateUnit": unit, "chargingSchedulePeriod": [
        {"startPeriod": s, "limit": lim} for s, lim in limits]}
    if start is not None:
        schedule["startSchedule"] = start
    out: dict[str, Any] = {"id": id_, "stackLevel": stack_level, "chargingProfilePurpose": purpose,
                           "chargingProfileKind": kind, "chargingSchedule": [schedule]}
    if transaction_id is not None:
        out["transactionId"] = transaction_id
    return out


async def _charging(r: Rig, st: Station, tx: str) -> None:
    await r.id_token("K-CARD")
    await st.transaction("Started", tx, id_token={"idToken": "K-CARD", "type": "ISO14443"}, charging_state="Charging")


@pytest.mark.parametrize("evse, prof", [
    (1, profile(1, "TxDefaultProfile", [(0, 11000.0)])),  # TC_K_01
    (0, profile(2, "TxDefaultProfile", [(0, 11000.0)])),  # TC_K_10
    (0, profile(3, "ChargingStationMaxProfile", [(0, 22000.0)], kind="Absolute", start=ts())),  # TC_K_03
    (0, profile(4, "TxDefaultProfile", [(0, 16.0), (3600, 10.0)], unit="A", kind="Recurring", start=ts())
     | {"recurrencyKind": "Daily"}),  # TC_K_19
])
async def test_k01_set_charging_profile(tmp_path: Path, evse: int, prof: dict) -> None:
    async with rig(tmp_path) as r, r.station("K-1") as st:
        assert await r.command("K-1", "set-charging-profile", {"evse_id": evse, "profile": prof}) == {
            "status": "Accepted"}
        assert await st.expect("SetChargingProfile") == {"evseId": evse, "chargingProfile": prof}
        kept = (await r.get("/api/stations/K-1"))["charging_profiles"]
        assert kept[-1]["status"] == "Accepted" and kept[-1]["profile"]["id"] == prof["id"]


async def test_k01_tx_profile_for_the_ongoing_transaction(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("K-2") as st:  # TC_K_60
        await _charging(r, st, "K-TX2")
        prof = profile(5, "TxProfile", [(0, 7400.0)], transaction_id="K-TX2")
        assert await r.command("K-2", "set-charging-profile", {"evse_id": 1, "profile": prof}) == {
            "status": "Accepted"}
        assert (await st.expect("SetChargingProfile"))["chargingProfile"]["transactionId"] == "K-TX2"


@pytest.mark.parametrize("evse, prof, field", [
    (1, profile(6, "TxProfile", [(0, 7400.0)]), "profile.transactionId"),  # K01.FR.03
    (1, profile(7, "TxDefaultProfile", [(60, 7400.0)]), "profile.chargingSchedule[0].chargingSchedulePeriod[0]"
                                                         ".startPeriod"),  # K01.FR.31
    (0, profile(8, "ChargingStationMaxProfile", [(0, 22000.0)]), "profile.chargingProfileKind"),  # K01.FR.38
    (1, profile(9, "ChargingStationMaxProfile", [(0, 22000.0)], kind="Absolute", start=ts()), "evse_id"),
])
async def test_k01_profiles_breaking_the_rules_are_refused(tmp_path: Path, evse: int, prof: dict,
                                                           field: str) -> None:
    async with rig(tmp_path) as r, r.station("K-3") as st:
        await r.refused("K-3", "set-charging-profile", {"evse_id": evse, "profile": prof}, field=field)
        assert st.calls("SetChargingProfile") == []


async def test_k01_a_rejected_profile_is_kept_as_rejected(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("K-4", answers={"SetChargingProfile": {"status": "Rejected"}}):
        prof = profile(10, "TxDefaultProfile", [(0, 11000.0)])
        assert await r.command("K-4", "set-charging-profile", {"evse_id": 1, "profile": prof}) == {
            "status": "Rejected"}  # TC_K_15
        assert (await r.get("/api/stations/K-4"))["charging_profiles"][-1]["status"] == "Rejected"


@pytest.mark.parametrize("body, expected", [
    ({"request_id": 1, "evse_id": 0, "purpose": "TxDefaultProfile"},
     {"requestId": 1, "evseId": 0, "chargingProfile": {"chargingProfilePurpose": "TxDefaultProfile"}}),  # TC_K_29
    ({"request_id": 2, "profile_ids": [3, 4]}, {"requestId": 2, "chargingProfile": {"chargingProfileId": [3, 4]}}),
    ({"request_id": 3, "evse_id": 1, "stack_level": 2, "purpose": "TxProfile"},
     {"requestId": 3, "evseId": 1, "chargingProfile": {"stackLevel": 2, "chargingProfilePurpose": "TxProfile"}}),
    ({"request_id": 4, "evse_id": 1, "limit_source": ["EMS", "SO"]},
     {"requestId": 4, "evseId": 1, "chargingProfile": {"chargingLimitSource": ["EMS", "SO"]}}),  # TC_K_34
])
async def test_k09_get_charging_profiles_with_criteria(tmp_path: Path, body: dict, expected: dict) -> None:
    async with rig(tmp_path) as r, r.station("K-9", answers={"GetChargingProfiles": {"status": "Accepted"}}) as st:
        assert await r.command("K-9", "get-charging-profiles", body) == {"status": "Accepted"}
        assert await st.expect("GetChargingProfiles") == expected
        assert await st.send("ReportChargingProfiles", {
            "requestId": body["request_id"], "chargingLimitSource": "CSO", "evseId": 1, "tbc": False,
            "chargingProfile": [profile(3, "TxDefaultProfile", [(0, 11000.0)])]}) == {}


async def test_k09_k10_requests_without_criteria_are_refused(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("K-10") as st:
        await r.refused("K-10", "get-charging-profiles", {"request_id": 5, "evse_id": 1})  # K09.FR.03
        await r.refused("K-10", "clear-charging-profile", {})  # K10.FR.02
        assert st.calls("GetChargingProfiles") == [] and st.calls("ClearChargingProfile") == []
        assert await r.command("K-10", "clear-charging-profile", {"profile_id": 5}) == {"status": "Accepted"}
        assert await st.expect("ClearChargingProfile") == {"chargingProfileId": 5}  # TC_K_05
        await r.command("K-10", "clear-charging-profile", {"stack_level": 0, "purpose": "TxDefaultProfile"})
        assert await st.expect("ClearChargingProfile") == {"chargingProfileCriteria": {
            "chargingProfilePurpose": "TxDefaultProfile", "stackLevel": 0}}  # TC_K_06


@pytest.mark.parametrize("evse", [1, 0])
async def test_k08_get_composite_schedule(tmp_path: Path, evse: int) -> None:
    answer = {"status": "Accepted", "schedule": {"evseId": evse, "duration": 600, "scheduleStart": ts(),
                                                 "chargingRateUnit": "W",
                                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7000.0}]}}
    async with rig(tmp_path) as r, r.station("K-8", answers={"GetCompositeSchedule": answer}) as st:
        got = await r.command("K-8", "get-composite-schedule", {"evse_id": evse, "duration_s": 600, "unit": "W"})
        assert got == answer
        assert await st.expect("GetCompositeSchedule") == {"evseId": evse, "duration": 600, "chargingRateUnit": "W"}


async def test_k11_k13_external_limits_are_answered(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, r.station("K-11") as st:
        limit = {"chargingLimit": {"chargingLimitSource": "SO", "isGridCritical": True}, "evseId": 1,
                 "chargingSchedule": [{"id": 1, "chargingRateUnit": "W",
                                       "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 4000.0}]}]}
        assert await st.send("NotifyChargingLimit", limit) == {}
        assert await st.send("ClearedChargingLimit", {"chargingLimitSource": "SO", "evseId": 1}) == {}


async def test_k15_k16_ev_schedule_checked_against_the_tx_profile_we_sent(tmp_path: Path) -> None:
    """K15.FR.11 / K16.FR.06: within limits -> Accepted; K15.FR.12 / K16.FR.07: above -> Rejected, and
    K15.FR.13 / K16.FR.08: the CSMS starts a renegotiation with a new SetChargingProfile."""
    async with rig(tmp_path) as r, r.station("K-15") as st:
        await _charging(r, st, "K-TX15")
        answer = await st.send("NotifyEVChargingNeeds", {"evseId": 1, "maxScheduleTuples": 3, "chargingNeeds": {
            "requestedEnergyTransfer": "AC_three_phase",
            "acChargingParameters": {"energyAmount": 20000, "evMinCurrent": 6, "evMaxCurrent": 32,
                                     "evMaxVoltage": 400}}})
        assert answer["status"] in ("Accepted", "Processing")  # K15.FR.02/03/05
        start = ts()
        sent = profile(20, "TxProfile", [(0, 11000.0), (1800, 7000.0)], kind="Absolute", start=start,
                       transaction_id="K-TX15")
        await r.command("K-15", "set-charging-profile", {"evse_id": 1, "profile": sent})
        await st.expect("SetChargingProfile")

        def ev(limits: list[tuple[int, float]]) -> dict:
            return {"timeBase": start, "evseId": 1, "chargingSchedule": {
                "id": 1, "chargingRateUnit": "W",
                "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in limits]}}

        assert (await st.send("NotifyEVChargingSchedule", ev([(0, 11000.0), (1800, 6000.0)])))["status"] == "Accepted"
        assert st.calls("SetChargingProfile") == [{"evseId": 1, "chargingProfile": sent}]
        # 9 kW after 30 minutes is above the 7 kW the TxProfile allows then.
        refused = await st.send("NotifyEVChargingSchedule", ev([(0, 11000.0), (1800, 9000.0)]))
        assert refused["status"] == "Rejected"
        renegotiation = await st.expect("SetChargingProfile")
        assert renegotiation["evseId"] == 1
        again = renegotiation["chargingProfile"]
        assert again["chargingProfilePurpose"] == "TxProfile" and again["transactionId"] == "K-TX15"
        periods = again["chargingSchedule"][0]["chargingSchedulePeriod"]
        assert periods[0]["startPeriod"] == 0 and max(p["limit"] for p in periods) <= 11000.0


async def test_k15_ev_schedule_in_amperes_against_a_watt_profile(tmp_path: Path) -> None:
    """Units differ: the check converts (230 V per phase, the schedule's or three phases)."""
    async with rig(tmp_path) as r, r.station("K-16") as st:
        await _charging(r, st, "K-TX16")
        start = ts()
        await r.command("K-16", "set-charging-profile", {"evse_id": 1, "profile": profile(
            21, "TxProfile", [(0, 11040.0)], kind="Absolute", start=start, transaction_id="K-TX16")})
        ok = {"timeBase": start, "evseId": 1, "chargingSchedule": {"id": 2, "chargingRateUnit": "A",
                                                                   "chargingSchedulePeriod": [
                                                                       {"startPeriod": 0, "limit": 16.0,
                                                                        "numberPhases": 3}]}}
        assert (await st.send("NotifyEVChargingSchedule", ok))["status"] == "Accepted"  # 16 A x 3 x 230 V = 11.04 kW
        too_much = {**ok, "chargingSchedule": {**ok["chargingSchedule"], "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 32.0, "numberPhases": 3}]}}
        assert (await st.send("NotifyEVChargingSchedule", too_much))["status"] == "Rejected"
