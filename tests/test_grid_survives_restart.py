"""The grid guarantee survives a restart of the daemon (SIGTERM and SIGKILL, SQLite, Redis and PostgreSQL).

Stations are built from the `ocpp` package (tests/ocpp_station.py), not from our simulator. A limit
is posted through the operator API; the daemon is stopped or killed and started again on the same
store; the stations reconnect and, as OCPP 2.0.1 allows, report their running transactions with
``Updated`` events that carry no ``evse``. Then the limit must still be in force, every running
session must be known (with its EVSE, meter reading and need), and a new limit must reach every
station. Also here: safe mode, non-retained MQTT signals, expiry and clearing survive a restart,
and a reconnecting station is asked what it holds and sent only what differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.grid_outside import Api, Site, cli, daemon
from tests.ocpp_station import LibStation
from tests.waiting import until

KW_PER_STATION_MAX = 16 * 3 * 230 / 1000.0  # 11.04 kW: every car takes 16 A on three phases
TOLERANCE_KW = 0.05
REPORT_LATE_S = 4.0  # < the grid's wait for a report (csms/grid/effects/setup.py, REPORT_WAIT_S)


def grid(**transformer: Any) -> dict[str, Any]:
    return {
        "transformers": {"T1": {"capacity_kw": 200, "members": [{"station": "RST-*"}], **transformer}},
        "planning": {"slot_s": 900, "horizon_slots": 8, "replan_interval_s": 1, "min_push_interval_s": 0,
                     "verify_after_s": 2},
        "session_defaults": {"energy_kwh": 40, "dwell_h": 8, "guaranteed_kwh": 0},
    }


@dataclass
class Rig:
    site: Site
    stations: list[LibStation]
    transactions: dict[tuple[str, int], str]  # (station, evse) -> transaction id

    def power_kw(self) -> float:
        return sum(st.power_kw() for st in self.stations)

    async def reconnect_all(self) -> None:
        await asyncio.gather(*(st.connect(self.site.ws_url) for st in self.stations))


@contextlib.asynccontextmanager
async def stations_charging(site: Site) -> AsyncIterator[Rig]:
    """Four stations, the last with two EVSEs: five sessions at up to 11 kW each (55 kW)."""
    stations = [LibStation(f"RST-{i}", evses=2 if i == 3 else 1, meter_interval_s=0.3) for i in range(4)]
    try:
        for st in stations:
            await st.connect(site.ws_url)
        transactions = {}
        for st in stations:
            for evse_id in st.evses:
                transactions[(st.station_id, evse_id)] = await st.start_transaction(evse_id)
        yield Rig(site, stations, transactions)
    finally:
        for st in stations:
            await st.stop()


async def _obeyed(rig: Rig, limit_kw: float) -> bool:
    for st in rig.stations:
        st.tick()
    return rig.power_kw() <= limit_kw + TOLERANCE_KW


async def _at_planned_setpoints(api: Api, rig: Rig) -> bool:
    sessions = await api.sessions()
    for sid, evse_id in rig.transactions:
        station = next(st for st in rig.stations if st.station_id == sid)
        planned = sessions.get((sid, evse_id), {}).get("setpoint_a")
        if planned is None or abs(station.limit_a(evse_id) - planned) > 0.1:
            return False
    return True


async def _known(api: Api, rig: Rig) -> bool:
    sessions = await api.sessions()
    return all(sessions.get(key, {}).get("transaction_id") == tx for key, tx in rig.transactions.items())


async def _watch_power(rig: Rig, cap: list[float], seen: list[tuple[float, float]], stop: asyncio.Event) -> None:
    """Sample what the stations really draw, against the strictest limit posted so far."""
    while not stop.is_set():
        for st in rig.stations:
            st.tick()
        seen.append((cap[0], rig.power_kw()))
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis),
                                     pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_limit_and_sessions_survive_a_restart(tmp_path: Path, backend: str, how: int) -> None:
    site = Site(tmp_path, grid(), backend=backend)
    await site.prepare()
    try:
        async with Api(site) as api:
            first = daemon(site)
            running = await first.__aenter__()
            try:
                async with stations_charging(site) as rig:
                    await until(lambda: _known(api, rig), 15, "every session known before the restart")
                    await until(lambda: _delivered(api, rig), 10, "energy metered for every session")
                    departure = datetime.now(UTC) + timedelta(hours=5)
                    status, _ = await api.post("/api/grid/sessions/RST-1/1/need",
                                               {"energy_kwh": 12.5, "departure": departure.isoformat()})
                    assert status == 200
                    await rig.stations[2].send_needs(1, 21000, departure)
                    await until(lambda: _need_source(api, ("RST-2", 1), "ev"), 10, "EV needs taken")

                    # 1. The operator's limit, obeyed by the stations themselves.
                    status, body = await api.post("/api/grid/transformers/T1/limit",
                                                  {"signal_id": "op-22", "limit_kw": 22, "source": "operator"})
                    assert status == 202, body
                    await until(lambda: _obeyed(rig, 22), 10, "stations under 22 kW")
                    before = {k: s["delivered_kwh"] for k, s in (await api.sessions()).items()}
                    cap, seen, stop = [22.0], [], asyncio.Event()
                    watcher = asyncio.create_task(_watch_power(rig, cap, seen, stop))

                    # 2. Stop or kill the daemon; the stations lose their link and keep charging.
                    code = await running.stop(how)
                    assert code == (-signal.SIGKILL if how == signal.SIGKILL else 0), running.text()[-3000:]
                    await first.__aexit__(None, None, None)
                    first = None
                    for st in rig.stations:
                        await st.wait_gone()

                    # 3. Start again on the same store: before any station is back, the limit and the
                    #    sessions are there, needs included.
                    second = daemon(site)
                    running = await second.__aenter__()
                    first = second
                    g = await api.group()
                    assert g["limit_kw"] == 22.0 and g["limit_source"] == "signal:operator:op-22", g
                    sessions = await api.sessions()
                    assert {k: s["transaction_id"] for k, s in sessions.items()} == rig.transactions
                    assert sessions[("RST-1", 1)]["need_kwh"] == 12.5
                    assert sessions[("RST-1", 1)]["need_source"] == "api"
                    assert sessions[("RST-2", 1)]["need_source"] == "ev"
                    assert all(sessions[k]["delivered_kwh"] >= kwh for k, kwh in before.items()), (before, sessions)

                    # 4. The stations reconnect without booting; their Updated events carry no evse.
                    await rig.reconnect_all()
                    await until(lambda: _known(api, rig), 10, "every session known after the reconnect")
                    await until(lambda: _all_measured(api, rig), 10, "fresh readings attributed")
                    g = await api.group()
                    assert g["limit_kw"] == 22.0 and g["limit_source"] == "signal:operator:op-22"

                    # 5. A new, stricter limit reaches every station.
                    posted = time.monotonic()
                    status, _ = await api.post("/api/grid/transformers/T1/limit",
                                               {"signal_id": "op-11", "limit_kw": 11, "source": "operator"})
                    assert status == 202
                    # Profiles go out only where a setpoint changes (a session already at the setpoint
                    # the new plan gives it keeps its profile): some, not necessarily every one.
                    await until(lambda: any(st.tx_pushes(posted) for st in rig.stations), 10,
                                "TxProfiles after the new limit")
                    await until(lambda: _obeyed(rig, 11), 10, "stations under 11 kW")
                    # ... and every station holds what the plan says for its session.
                    await until(lambda: _at_planned_setpoints(api, rig), 10, "every station at its planned setpoint")
                    cap[0], switched = 11.0, len(seen)
                    await until(lambda: len(seen) >= switched + 20, 5, "a second of samples under the new limit")
                    stop.set()
                    await watcher
                    over = [(limit, kw) for limit, kw in seen if kw > limit + TOLERANCE_KW]
                    assert not over, f"stations drew more than the limit in force: {over[:5]}"
            finally:
                if first is not None:
                    await first.__aexit__(None, None, None)
    finally:
        await site.cleanup()


async def _delivered(api: Api, rig: Rig) -> bool:
    sessions = await api.sessions()
    return all(sessions.get(key, {}).get("delivered_kwh", 0) > 0 for key in rig.transactions)


async def _need_source(api: Api, key: tuple[str, int], source: str) -> bool:
    return (await api.sessions()).get(key, {}).get("need_source") == source


async def _all_measured(api: Api, rig: Rig) -> bool:
    """Every session shows the power its station reports since the reconnect (attributed without evse)."""
    sessions = await api.sessions()
    for sid, evse_id in rig.transactions:
        station = next(st for st in rig.stations if st.station_id == sid)
        actual = sessions.get((sid, evse_id), {}).get("actual_kw")
        expected = station._power_w(station.evses[evse_id]) / 1000.0
        if actual is None or abs(actual - expected) > 0.2:
            return False
    return True


async def test_safe_mode_survives_a_restart(tmp_path: Path) -> None:
    site = Site(tmp_path, grid(signal_timeout_s=2, safe_limit_kw=15))
    async with Api(site) as api:
        async with daemon(site) as running:
            await until(lambda: _safe(api, True), 10, "safe mode after 2 s of silence")
            await running.stop(signal.SIGKILL)
        async with daemon(site):
            # The first answer after the start: still in safe mode, not in a fresh grace period.
            g = await api.group()
            assert g["safe_mode"] is True and g["limit_kw"] == 15.0 and g["limit_source"] == "safe_mode", g
            # A live signal ends it, and that is durable too.
            status, _ = await api.post("/api/grid/transformers/T1/limit",
                                       {"signal_id": "live-1", "limit_kw": 120, "source": "dso"})
            assert status == 202
            assert (await api.group())["safe_mode"] is False


async def _safe(api: Api, on: bool) -> bool:
    return (await api.group())["safe_mode"] is on


async def test_an_expired_limit_is_not_restored_and_a_valid_one_keeps_its_end(tmp_path: Path) -> None:
    site = Site(tmp_path, grid())
    async with Api(site) as api:
        async with daemon(site) as running:
            now = datetime.now(UTC)
            for sid, kw, until_s, source in (("short", 50, 2, "dso"), ("long", 80, 3600, "gopacs")):
                status, body = await api.post("/api/grid/transformers/T1/limit", {
                    "signal_id": sid, "limit_kw": kw, "source": source,
                    "valid_until": (now + timedelta(seconds=until_s)).isoformat()})
                assert status == 202, body
            assert (await api.group())["limit_kw"] == 50.0
            await running.stop(signal.SIGKILL)
        await until(lambda: datetime.now(UTC) > now + timedelta(seconds=2.5), 5, "the short one ended")
        async with daemon(site):
            g = await api.group()
            assert g["limit_kw"] == 80.0 and g["limit_source"] == "signal:gopacs:long", g


async def test_clear_removes_the_operator_limit_through_cli_and_api_for_good(tmp_path: Path) -> None:
    site = Site(tmp_path, grid())
    async with Api(site) as api:
        async with daemon(site) as running:
            code, out, err = await cli(site, "limit", "T1", "30")
            assert code == 0, err
            status, _ = await api.post("/api/grid/transformers/T1/limit",
                                       {"signal_id": "dso-1", "limit_kw": 90, "source": "dso"})
            assert status == 202
            assert (await api.group())["limit_kw"] == 30.0
            code, out, err = await cli(site, "limit", "T1", "--clear")
            assert code == 0, out + err
            g = await api.group()
            assert g["limit_kw"] == 90.0 and g["limit_source"] == "signal:dso:dso-1", g  # only the operator's went
            code, out, err = await cli(site, "limit", "T1", "--clear")
            assert code == 5, out + err  # nothing left to clear: not found
            await running.stop(signal.SIGKILL)
        async with daemon(site) as running:
            g = await api.group()
            assert g["limit_kw"] == 90.0, g  # the cleared limit did not come back
            # The API equivalent, for any source.
            status, body = await api.request("DELETE", "/api/grid/transformers/T1/limit?source=dso")
            assert status == 200, body
            assert (await api.group())["limit_source"] == "capacity"
            status, _ = await api.request("DELETE", "/api/grid/transformers/T1/limit?source=dso")
            assert status == 404
            status, _ = await api.request("DELETE", "/api/grid/transformers/T9/limit")
            assert status == 404
            await running.stop(signal.SIGTERM)
        async with daemon(site):
            assert (await api.group())["limit_source"] == "capacity"


@pytest.mark.mqtt
async def test_a_non_retained_mqtt_signal_survives_a_restart(tmp_path: Path) -> None:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    site = Site(tmp_path, {**grid(), "mqtt": {"topic_prefix": prefix, "broker_grace_s": 3600}})
    async with Api(site) as api:
        async with daemon(site) as running:
            await until(lambda: _mqtt_up(api), 10, "daemon subscribed")
            async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"dso-{uuid.uuid4().hex[:8]}") as dso:
                await dso.subscribe(f"{prefix}/grid/T1/signal-status", qos=1)
                payload = {"signal_id": "mqtt-1", "source": "dso", "limit_kw": 42,
                           "timestamp": datetime.now(UTC).isoformat()}
                await dso.publish(f"{prefix}/grid/T1/limit", json.dumps(payload), qos=1, retain=False)
                await until(lambda: _limit(api, 42.0), 10, "MQTT limit applied")
                # In force at once, answered once stored: the verdict is the answer (docs/decisions.md).
                await asyncio.wait_for(_verdict(dso, "mqtt-1"), 10)
            await running.stop(signal.SIGKILL)
        async with daemon(site):
            g = await api.group()
            assert g["limit_kw"] == 42.0 and g["limit_source"] == "signal:dso:mqtt-1", g


async def _verdict(client: aiomqtt.Client, signal_id: str) -> None:
    async for message in client.messages:
        if json.loads(bytes(message.payload)).get("signal_id") == signal_id:
            return


async def _mqtt_up(api: Api) -> bool:
    status, text = await api.request("GET", "/metrics")
    return status == 200 and "csms_grid_mqtt_connected 1.0" in str(text)


async def _limit(api: Api, kw: float) -> bool:
    return (await api.group())["limit_kw"] == kw


async def test_a_reconnecting_station_is_asked_what_it_holds_and_sent_only_what_differs(tmp_path: Path) -> None:
    site = Site(tmp_path, grid())
    async with Api(site) as api:
        stations = [LibStation(f"RST-{i}", meter_interval_s=0.3, forget_profiles_on_reconnect=(i == 0))
                    for i in range(3)]
        try:
            async with daemon(site) as running:
                await _charging_under_a_limit(site, api, stations, "op-20", 20)
                await until(lambda: sum(st.power_kw() for st in stations) <= 20 + TOLERANCE_KW, 10, "under 20 kW")
                await running.stop(signal.SIGKILL)
            for st in stations:
                await st.wait_gone()
            async with daemon(site):
                reconnected = time.monotonic()
                for st in stations:
                    await st.connect(site.ws_url)
                await until(lambda: all(st.calls["GetChargingProfiles"] or st.calls["GetCompositeSchedule"]
                                        for st in stations), 10, "every station asked what it holds")
                # The station that lost its profiles gets its plan again ...
                await until(lambda: stations[0].tx_pushes(reconnected), 10, "the forgetful station re-planned")
                # ... and after a few plans the others, which still hold it, got nothing new.
                plans = (await api.get("/api/grid"))["plans"]
                await until(lambda: _plans_since(api, plans, 3), 15, "three more plans")
                for st in stations[1:]:
                    assert not st.tx_pushes(reconnected), (st.station_id, [p.profile for p in st.tx_pushes(reconnected)])
                assert sum(st.power_kw() for st in stations) <= 20 + TOLERANCE_KW
        finally:
            for st in stations:
                await st.stop()


async def test_a_station_back_without_booting_obeys_a_stricter_limit_before_it_says_what_it_holds(
        tmp_path: Path) -> None:
    """Its set-up is known from this boot, so it is steerable at once on what it held when the daemon
    went down; its report (late here, and made before the cut reached it) does not undo the cut."""
    site = Site(tmp_path, grid())
    async with Api(site) as api:
        stations = [LibStation(f"RST-LATE-{i}", meter_interval_s=0.3, report_delay_s=REPORT_LATE_S) for i in range(2)]
        try:
            await _killed_while_charging(site, api, stations, "op-20", 20)
            async with daemon(site):
                for st in stations:
                    await st.connect(site.ws_url)
                await until(lambda: all(st.calls["GetChargingProfiles"] for st in stations), 10,
                            "every station asked what it holds")
                posted = time.monotonic()
                status, _ = await api.post("/api/grid/transformers/T1/limit",
                                           {"signal_id": "op-8", "limit_kw": 8, "source": "operator"})
                assert status == 202
                await until(lambda: all(st.tx_pushes(posted) for st in stations), REPORT_LATE_S - 1,
                            "the stricter limit's TxProfiles before the late reports")
                assert not any(st.reports for st in stations), "a report came first: the test proves nothing"
                await until(lambda: all(st.reports for st in stations), REPORT_LATE_S + 2, "the late reports")
                plans = (await api.get("/api/grid"))["plans"]
                await until(lambda: _plans_since(api, plans, 2), 15, "two more plans")
                assert sum(st.power_kw() for st in stations) <= 8 + TOLERANCE_KW
                # The reports showed the schedules from before the cut; taken as what the stations hold,
                # they would have been sent the cut's schedule once more.
                assert not any(st.identical_pushes for st in stations), [st.identical_pushes for st in stations]
        finally:
            for st in stations:
                await st.stop()


async def _killed_while_charging(site: Site, api: Api, stations: list[LibStation], signal_id: str,
                                 kw: float) -> None:
    """A daemon with every station charging under an operator limit, SIGKILLed; the stations gone."""
    async with daemon(site) as running:
        await _charging_under_a_limit(site, api, stations, signal_id, kw)
        await running.stop(signal.SIGKILL)
    for st in stations:
        await st.wait_gone()


async def _charging_under_a_limit(site: Site, api: Api, stations: list[LibStation], signal_id: str,
                                  kw: float) -> None:
    """Every station connected with a transaction on EVSE 1, an operator limit set, TxProfiles installed."""
    for st in stations:
        await st.connect(site.ws_url)
        await st.start_transaction(1)
    status, _ = await api.post("/api/grid/transformers/T1/limit",
                               {"signal_id": signal_id, "limit_kw": kw, "source": "operator"})
    assert status == 202
    await until(lambda: all(st.tx_pushes() for st in stations), 10, "TxProfiles installed")


async def _plans_since(api: Api, before: int, more: int) -> bool:
    return (await api.get("/api/grid"))["plans"] >= before + more


@pytest.mark.mqtt
async def test_a_signal_sent_while_the_daemon_is_down_arrives_after_its_restart(tmp_path: Path) -> None:
    """With a configured client id the daemon keeps a persistent MQTT session: the broker holds a
    QoS 1 signal published during a crash and delivers it when the daemon is back."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    client_id = f"csms-{uuid.uuid4().hex[:10]}"
    site = Site(tmp_path, {**grid(), "mqtt": {"topic_prefix": prefix, "broker_grace_s": 3600,
                                              "client_id": client_id}})
    async with Api(site) as api:
        async with daemon(site) as running:
            await until(lambda: _mqtt_up(api), 10, "daemon subscribed")
            await running.stop(signal.SIGKILL)
        async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"dso-{uuid.uuid4().hex[:8]}") as dso:
            payload = {"signal_id": "while-down", "source": "dso", "limit_kw": 37,
                       "timestamp": datetime.now(UTC).isoformat()}
            await dso.publish(f"{prefix}/grid/T1/limit", json.dumps(payload), qos=1, retain=False)
        async with daemon(site):
            await until(lambda: _limit(api, 37.0), 10, "the signal sent while down applied")
            assert (await api.group())["limit_source"] == "signal:dso:while-down"
    async with aiomqtt.Client("127.0.0.1", 1883, identifier=client_id, clean_session=True):
        pass  # leave no persistent session behind on the broker


async def test_set_ups_are_read_back_after_a_restart_and_asked_again_after_a_boot(tmp_path: Path) -> None:
    site = Site(tmp_path, grid())
    async with Api(site) as api:
        stations = [LibStation(f"RST-U{i}", meter_interval_s=0.3) for i in range(2)]
        try:
            await _killed_while_charging(site, api, stations, "op-30", 20)
            asked = [st.calls["GetVariables"] for st in stations]
            defaults = [sum(p.purpose == "TxDefaultProfile" for p in st.pushes) for st in stations]
            assert asked == [1, 1] and defaults == [1, 1]
            stations[1].booted = False  # it reboots while we are down: what it said before may not hold
            async with daemon(site):
                reconnected = time.monotonic()
                for st in stations:
                    await st.connect(site.ws_url)
                status, _ = await api.post("/api/grid/transformers/T1/limit",
                                           {"signal_id": "op-31", "limit_kw": 18, "source": "operator"})
                assert status == 202
                await until(lambda: all(st.tx_pushes(reconnected) for st in stations), 10, "controlled again")
                # The one that did not boot is not asked again, nor sent its fail-safe again ...
                assert stations[0].calls["GetVariables"] == 1
                assert sum(p.purpose == "TxDefaultProfile" for p in stations[0].pushes) == 1
                # ... the one that booted is set up anew.
                assert stations[1].calls["GetVariables"] == 2
                assert sum(p.purpose == "TxDefaultProfile" for p in stations[1].pushes) == 2
        finally:
            for st in stations:
                await st.stop()
