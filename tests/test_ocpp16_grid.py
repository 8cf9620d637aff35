"""Grid control of OCPP 1.6J stations (the `ocpp` package's v16 ChargePoint) through the version
layer, with the daemon run as an operator runs it (its own process, the operator API):

- an operator limit posted through the API becomes 1.6 TxProfiles carrying each transaction's integer
  id, in the rate unit each station lists in ``ChargingScheduleAllowedChargingRateUnit``, within its
  ``ChargeProfileMaxStackLevel`` and ``ChargingScheduleMaxPeriods``, and what the stations then
  allow themselves stays within the limit; the fail-safe is a 1.6 TxDefaultProfile on connector 0;
- typed operator commands work where 1.6 has the action and are refused (422) where it has not;
- integer transaction ids stay unique when the daemon is killed and started again.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.grid_outside import Api, Site, cli, daemon
from tests.ocpp16_station import Lib16Station
from tests.waiting import until

TOLERANCE_KW = 0.05
GRID: dict[str, Any] = {
    "transformers": {"T1": {"capacity_kw": 200, "members": [{"station": "V16-*"}]}},
    "planning": {"slot_s": 900, "horizon_slots": 8, "replan_interval_s": 1, "min_push_interval_s": 0,
                 "verify_after_s": 60},
    "session_defaults": {"energy_kwh": 40, "dwell_h": 8, "guaranteed_kwh": 0},
}
ONLY_16 = {"websocket": {"subprotocols": ["ocpp1.6"]}}


def fleet() -> list[Lib16Station]:
    return [Lib16Station("V16-AMPS", meter_interval_s=0.3),
            Lib16Station("V16-WATTS", rate_units="Power", meter_interval_s=0.3),
            Lib16Station("V16-PLAIN", stack_levels=0, max_periods=1, meter_interval_s=0.3)]


def allowed_kw(stations: list[Lib16Station]) -> float:
    return sum(st.power_kw() for st in stations)


async def test_operator_limit_yields_16_tx_profiles_within_the_limit(tmp_path: Path) -> None:
    site = Site(tmp_path, GRID)
    stations = fleet()
    async with daemon(site), Api(site) as api:
        try:
            for st in stations:
                assert await st.connect(site.ws_url) == "ocpp1.6"
            tx = {st.station_id: await st.start_transaction(1) for st in stations}
            await until(lambda: _sessions(api, len(stations)), 15, "every 1.6 session known to the grid")
            await until(lambda: allowed_kw(stations) >= 3 * 11.04 - TOLERANCE_KW, 5, "every car at full power")

            for n, limit in enumerate((20.0, 9.0)):
                status, body = await api.post("/api/grid/transformers/T1/limit",
                                              {"signal_id": f"v16-{n}", "limit_kw": limit, "source": "operator"})
                assert status == 202, body
                await until(lambda lim=limit: allowed_kw(stations) <= lim + TOLERANCE_KW, 8,
                            f"1.6 stations under {limit} kW")
                await asyncio.sleep(2.0)  # refined plans follow every second: none may exceed the limit
                assert allowed_kw(stations) <= limit + TOLERANCE_KW

            for st in stations:
                tx_pushes = [(c, p, v) for c, p, v in st.pushes if p["charging_profile_purpose"] == "TxProfile"]
                assert tx_pushes, st.station_id
                for connector, profile, verdict in tx_pushes:
                    assert verdict == "Accepted", (st.station_id, profile)
                    assert connector == 1 and profile["transaction_id"] == tx[st.station_id]
                    schedule = profile["charging_schedule"]
                    assert schedule["charging_rate_unit"] == ("W" if st.station_id == "V16-WATTS" else "A")
                    assert profile["stack_level"] <= st.stack_levels
                    assert len(schedule["charging_schedule_period"]) <= st.max_periods
                fail_safe = [p for c, p, v in st.pushes if p["charging_profile_purpose"] == "TxDefaultProfile"]
                assert fail_safe and all(c == 0 for c, p, v in st.pushes
                                         if p["charging_profile_purpose"] == "TxDefaultProfile")

            listed = {s["station_id"]: s for s in (await api.get("/api/stations"))["stations"]}
            assert all(listed[st.station_id]["ocpp_version"] == "ocpp1.6" for st in stations)
            await _operator_commands(api, stations[0])
        finally:
            for st in stations:
                await st.stop()


async def _sessions(api: Api, n: int) -> bool:
    return len(await api.sessions()) == n


async def _operator_commands(api: Api, st: Lib16Station) -> None:
    base = f"/api/stations/{st.station_id}"
    cap = {"evse_id": 0, "profile": {"id": 5, "stackLevel": 0, "chargingProfilePurpose": "ChargingStationMaxProfile",
                                     "chargingProfileKind": "Absolute", "chargingSchedule": [{
                                         "id": 5, "startSchedule": "2024-01-01T00:00:00Z", "chargingRateUnit": "A",
                                         "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0}]}]}}
    status, body = await api.post(f"{base}/commands/set-charging-profile", cap)
    assert status == 200 and body["response"]["status"] == "Accepted", body
    assert st.pushes[-1][1]["charging_profile_purpose"] == "ChargePointMaxProfile"
    status, body = await api.post(f"{base}/commands/clear-charging-profile", {"profile_id": 5})
    assert status == 200 and body["response"]["status"] == "Accepted", body
    assert 5 not in st.profiles

    status, body = await api.post(f"{base}/commands/get-variables", {"items": [
        {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "RateUnit"}}]})
    assert status == 200, body
    assert body["response"]["getVariableResult"][0]["attributeValue"] == "A,W"
    for name, payload, action in (("reset", {"type": "Immediate"}, "Reset"),
                                  ("unlock-connector", {"evse_id": 1, "connector_id": 1}, "UnlockConnector"),
                                  ("change-availability", {"status": "Inoperative", "evse_id": 1}, "ChangeAvailability"),
                                  ("trigger-message", {"requested_message": "SignChargingStationCertificate"},
                                   "ExtendedTriggerMessage"),
                                  ("trigger-message", {"requested_message": "DiagnosticsStatusNotification"},
                                   "TriggerMessage"),
                                  ("request-start-transaction", {"id_token": "TAG-16", "evse_id": 1},
                                   "RemoteStartTransaction")):
        status, body = await api.post(f"{base}/commands/{name}", payload)
        assert status == 200, (name, body)
        assert st.calls.get(action) == 1, (name, st.calls)
    listed = await api.get(f"/api/commands?station_id={st.station_id}")
    assert listed["version"] == "ocpp1.6" and "GetConfiguration" in listed["generic_actions"]
    assert "GetVariables" not in listed["generic_actions"]
    status, body = await api.post(f"{base}/call/GetConfiguration", {"key": ["ChargeProfileMaxStackLevel"]})
    assert status == 200 and body["response"]["configurationKey"][0]["value"] == "8", body

    # Actions OCPP 1.6 does not have: a clear 4xx before anything is sent.
    for name, payload in (("get-transaction-status", {}), ("get-base-report", {}),
                          ("get-charging-profiles", {"purpose": "TxProfile"})):
        status, body = await api.post(f"{base}/commands/{name}", payload)
        assert status == 422 and "does not exist in OCPP 1.6" in body["error"], (name, status, body)
    status, body = await api.post(f"{base}/commands/trigger-message", {"requested_message": "TransactionEvent"})
    assert status == 422 and body["field"] == "requestedMessage", body
    status, body = await api.post(f"{base}/call/GetVariables", {"getVariableData": []})
    assert status == 422 and "does not exist in ocpp1.6" in body["error"], body  # an action of another version


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def test_transaction_ids_stay_unique_across_a_daemon_restart(tmp_path: Path, backend: str) -> None:
    site = Site(tmp_path, GRID, backend=backend, extra=ONLY_16)
    seen: list[int] = []
    for round_ in range(2):
        async with daemon(site) as running:
            st = Lib16Station("V16-RESTART", connectors=2)
            try:
                assert await st.connect(site.ws_url) == "ocpp1.6"
                seen.append(await st.start_transaction(1))
                seen.append(await st.start_transaction(2))
            finally:
                await st.stop()
            # Killed right after the answers: the ids were stored before the station heard them.
            await running.stop(signal.SIGKILL if round_ == 0 else signal.SIGTERM)
    await site.cleanup()
    assert len(set(seen)) == len(seen) == 4, seen
    assert seen == sorted(seen), seen


def _pem() -> str:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Netbewust test root")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


async def test_operations_are_sent_as_16_spells_them(tmp_path: Path) -> None:
    site = Site(tmp_path, GRID)
    st = Lib16Station("OPS16")
    async with daemon(site), Api(site) as api:
        try:
            await st.connect(site.ws_url)
            status, body = await api.post("/api/id-tokens", {"id_token": "DRIVER-1", "type": "ISO14443",
                                                             "status": "Accepted", "group_id": "FLEET"})
            assert status in (200, 201), body
            base = "/api/stations/OPS16/commands"
            pem = _pem()
            sent = (
                ("send-local-list", {"update_type": "Full", "id_tokens": ["DRIVER-1"]}, "SendLocalList", "Accepted"),
                ("get-local-list-version", {}, "GetLocalListVersion", None),
                ("reserve-now", {"id_token": "DRIVER-1", "evse_id": 1, "expiry_s": 600}, "ReserveNow", "Accepted"),
                ("update-firmware", {"location": "https://fw.example/a.bin"}, "UpdateFirmware", "Accepted"),
                ("update-firmware", {"location": "https://fw.example/b.bin", "signing_certificate": pem,
                                     "signature": "c2lnbmF0dXJl"}, "SignedUpdateFirmware", "Accepted"),
                ("get-log", {"log_type": "SecurityLog", "remote_location": "https://logs.example/up"}, "GetLog",
                 "Accepted"),
                ("install-certificate", {"certificate_type": "CSMSRootCertificate", "certificate": pem},
                 "InstallCertificate", "Accepted"),
                ("get-installed-certificate-ids", {"certificate_types": ["CSMSRootCertificate"]},
                 "GetInstalledCertificateIds", "Accepted"),
                ("clear-cache", {}, "ClearCache", "Accepted"),
            )
            for name, payload, action, answer in sent:
                status, body = await api.post(f"{base}/{name}", payload)
                assert status == 200, (name, status, body)
                assert st.calls.get(action, 0) >= 1, (name, st.calls)
                if answer is not None:
                    assert body["response"]["status"] == answer, (name, body)
            assert st.local_list == (1, ["DRIVER-1"])
            local = await api.get("/api/stations/OPS16/local-list")
            assert local["version"] == 1 and local["reported_version"] == 1, local
            certs = await api.get("/api/stations/OPS16/certificates")
            assert "1f" in str(certs), certs

            # Operations 1.6 has no counterpart for: a clear 422, nothing sent.
            before = dict(st.calls)
            for name, payload in (("set-display-message", {"content": "hi", "priority": "NormalCycle"}),
                                  ("publish-firmware", {"location": "https://fw.example/a", "checksum": "0" * 32}),
                                  ("get-installed-certificate-ids", {"certificate_types": ["V2GRootCertificate"]})):
                status, body = await api.post(f"{base}/{name}", payload)
                assert status == 422 and "1.6" in body["error"], (name, status, body)
            assert st.calls == before
        finally:
            await st.stop()


async def test_mixed_versions_under_one_transformer_limit(tmp_path: Path) -> None:
    """Our simulator's 1.6 and 2.0.1 stations and a third party's 1.6 charge point behind one transformer:
    an operator limit holds for all of them."""
    from simulators.clock import Clock
    from simulators.ev import EV
    from simulators.models import EVModel, StationModel
    from simulators.station import SimStation

    site = Site(tmp_path, GRID)
    sims = [SimStation(f"V16-SIM-{i}", site.ws_url, StationModel(
        name=f"sim-{version}", ocpp_version=version, meter_interval_s=0.5, tick_s=0.1, message_attempt_interval_s=0.2),
        clock=Clock(), call_timeout_s=5, reconnect_base_s=0.1, reconnect_max_s=0.5)
        for i, version in enumerate(("1.6", "2.0.1", "1.6", "2.0.1"))]
    lib = Lib16Station("V16-LIB", meter_interval_s=0.3)

    def total_kw() -> float:
        return sum(sum(s.power_w.values()) for s in sims) / 1000.0 + lib.power_kw()

    async with daemon(site), Api(site) as api:
        tasks = [asyncio.create_task(s.run()) for s in sims]
        try:
            await asyncio.wait_for(asyncio.gather(*(s.accepted.wait() for s in sims)), 15)
            await lib.connect(site.ws_url)
            for s in sims:
                s.plug_in(1, EV(EVModel(name="ev", battery_kwh=60, max_current_a=16), soc=0.3, target_soc=0.9))
            await lib.start_transaction(1)
            await until(lambda: _sessions(api, 5), 15, "every session known")
            versions = {s["station_id"]: s["ocpp_version"] for s in (await api.get("/api/stations"))["stations"]}
            assert versions == {"V16-SIM-0": "ocpp1.6", "V16-SIM-1": "ocpp2.0.1", "V16-SIM-2": "ocpp1.6",
                                "V16-SIM-3": "ocpp2.0.1", "V16-LIB": "ocpp1.6"}
            code, out, err = await cli(site, "stations")
            assert code == 0, err
            rows = {line.split("\t")[0]: line.split("\t") for line in out.splitlines() if line.startswith("V16-")}
            assert rows["V16-LIB"][2] == "1.6" and rows["V16-SIM-1"][2] == "2.0.1", out  # piped: tab-separated
            code, out, err = await cli(site, "show", "V16-LIB")
            assert code == 0 and "OCPP ocpp1.6" in out, (out, err)
            await until(lambda: total_kw() > 40.0, 10, "everyone charging")
            status, body = await api.post("/api/grid/transformers/T1/limit",
                                          {"signal_id": "mix-1", "limit_kw": 25.0, "source": "operator"})
            assert status == 202, body
            await until(lambda: total_kw() <= 25.0 + TOLERANCE_KW, 8, "mixed fleet under 25 kW")
            await asyncio.sleep(2.0)
            assert total_kw() <= 25.0 + TOLERANCE_KW
        finally:
            for s in sims:
                s.stop()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
            await lib.stop()


async def test_16_sessions_stay_under_control_across_a_daemon_kill(tmp_path: Path) -> None:
    """Killed and started again on the same store, the daemon rebuilds the 1.6 sessions from their stored
    transactions; the stations come back without booting (1.6 cannot list its profiles, so each session
    gets its plan again) and a new limit reaches them."""
    site = Site(tmp_path, GRID, extra=ONLY_16)
    stations = [Lib16Station("V16-K1", meter_interval_s=0.3), Lib16Station("V16-K2", meter_interval_s=0.3)]
    try:
        async with daemon(site) as running, Api(site) as api:
            for st in stations:
                await st.connect(site.ws_url)
                await st.start_transaction(1)
            await until(lambda: _sessions(api, 2), 15, "sessions known")
            status, _ = await api.post("/api/grid/transformers/T1/limit",
                                       {"signal_id": "k-1", "limit_kw": 15.0, "source": "operator"})
            assert status == 202
            await until(lambda: allowed_kw(stations) <= 15.0 + TOLERANCE_KW, 8, "under 15 kW")
            await running.stop(signal.SIGKILL)
        async with daemon(site), Api(site) as api:
            for st in stations:
                await st.connect(site.ws_url, boot=False)
            await until(lambda: _sessions(api, 2), 15, "sessions rebuilt")
            assert allowed_kw(stations) <= 15.0 + TOLERANCE_KW  # what they hold still keeps the old limit
            status, _ = await api.post("/api/grid/transformers/T1/limit",
                                       {"signal_id": "k-2", "limit_kw": 8.0, "source": "operator"})
            assert status == 202
            await until(lambda: allowed_kw(stations) <= 8.0 + TOLERANCE_KW, 8, "under 8 kW after the restart")
            await asyncio.sleep(2.0)
            assert allowed_kw(stations) <= 8.0 + TOLERANCE_KW
    finally:
        for st in stations:
            await st.stop()
