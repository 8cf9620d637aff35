"""The daemon's OpenADR 3 VEN end to end: the spec-following VTN stand-in (simulators/openadr) on an
ephemeral port as the DSO, the real daemon in its own process (tests/grid_outside.py), stations
built from the `ocpp` package. Event -> limit in the book -> profiles the stations obey; a restart
in the middle of an event; malformed events refused while the last good limit holds; the VTN going
silent -> the DSO's safe limit after the link timeout, lifted when it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from simulators.openadr import capacity_limit_event, make_ean18
from simulators.openadr.vtn import ClientCredentials, Vtn, VtnConfig
from tests.grid_outside import Api, Site, daemon
from tests.ocpp_station import LibStation
from tests.waiting import until

pytestmark = pytest.mark.timeout(120)

EAN = make_ean18("87123456789012345")
VEN_NAME = "NL-XYZ"
PROGRAM = "netbewust-gac"
SOURCE = f"openadr:{PROGRAM}"
CLIENTS = [ClientCredentials("ven1", "ven-secret", "ven"), ClientCredentials("dso", "dso-secret", "bl")]
TOLERANCE_KW = 0.05


def grid_config(vtn: Vtn, **openadr: Any) -> dict[str, Any]:
    return {
        "transformers": {"T1": {"capacity_kw": 200, "members": [{"station": "OA-*"}]}},
        "planning": {"slot_s": 900, "horizon_slots": 8, "replan_interval_s": 1, "min_push_interval_s": 0,
                     "verify_after_s": 2},
        "session_defaults": {"energy_kwh": 40, "dwell_h": 8, "guaranteed_kwh": 0},
        "openadr": {"vtn_url": vtn.url, "spec_version": vtn.version, "client_id": "ven1",
                    "client_secret": "ven-secret", "ven_name": VEN_NAME, "programs": [PROGRAM],
                    "groups": {"T1": [EAN]}, "poll_interval_s": 0.3, "request_timeout_s": 1,
                    "backoff_max_s": 1, "link_timeout_s": 3, **openadr},
    }


@contextlib.asynccontextmanager
async def vtn_running(version: str = "3.0.1") -> AsyncIterator[Vtn]:
    vtn = await Vtn(VtnConfig(version=version, clients=CLIENTS)).start()
    try:
        yield vtn
    finally:
        await vtn.stop()


def limit_event(vtn: Vtn, program_id: str, limits_kw: list[float], *, minutes: int = 30) -> dict[str, Any]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    return capacity_limit_event(vtn.version, program_id, limits_kw=limits_kw, start=start,
                                interval=timedelta(minutes=minutes), eans=[EAN], ven_name=VEN_NAME)


async def openadr_limit(api: Api, kw: float) -> dict[str, Any] | None:
    """The group when the limit in force is ``kw`` from the OpenADR source."""
    group = await api.group()
    if group["limit_kw"] == kw and str(group["limit_source"]).startswith(f"signal:{SOURCE}:"):
        return group
    return None


async def vtn_status(api: Api) -> dict[str, Any]:
    return (await api.get("/api/grid"))["sources"]["openadr"]  # type: ignore[no-any-return]


def obeyed(stations: list[LibStation], limit_kw: float) -> bool:
    for st in stations:
        st.tick()
    return sum(st.power_kw() for st in stations) <= limit_kw + TOLERANCE_KW


@contextlib.asynccontextmanager
async def charging(site: Site, count: int = 3) -> AsyncIterator[list[LibStation]]:
    stations = [LibStation(f"OA-{i}", meter_interval_s=0.3) for i in range(count)]
    try:
        for st in stations:
            await st.connect(site.ws_url)
            await st.start_transaction(1)
        yield stations
    finally:
        for st in stations:
            await st.stop()


def seed(vtn: Vtn) -> dict[str, Any]:
    """The DSO's set-up: the GAC program with its safe-mode event (40 kW); in 3.1.0 BL also creates
    the VEN's ven object and grants it our EAN (object privacy: otherwise the VEN sees no event)."""
    if vtn.version != "3.0.1":
        vtn.create("ven", {"objectType": "BL_VEN_REQUEST", "clientID": "ven1", "venName": VEN_NAME,
                           "targets": [EAN]})
    program, _ = vtn.seed_gac(eans=[EAN], ven_name=VEN_NAME, safe_limit_kw=40)
    return program


@pytest.mark.parametrize("version", ["3.0.1", "3.1.0"])
async def test_event_limits_the_group_and_malformed_events_keep_the_last_good_limit(tmp_path: Path,
                                                                                    version: str) -> None:
    async with vtn_running(version) as vtn:
        program = seed(vtn)
        site = Site(tmp_path, grid_config(vtn))
        async with Api(site) as api, daemon(site) as running, charging(site) as stations:
            await until(lambda: obeyed(stations, 200) and sum(st.power_kw() for st in stations) > 30, 15,
                        "three cars charging at full power")
            status = await until(lambda: _registered(api), 10, "VEN registered and polling")
            assert status["reachable"] and not status["fallback"]
            assert status["programs"][PROGRAM]["safe_limits_kw"] == {"T1": 40.0}

            # 1. The DSO's event: 22 kW for the connection now -> the limit book -> the stations obey.
            event = vtn.create("event", limit_event(vtn, program["id"], [22, 22]))
            await until(lambda: openadr_limit(api, 22), 10, "the event's 22 kW in force")
            await until(lambda: obeyed(stations, 22), 15, "stations under 22 kW")

            # 2. Malformed events: outside the GAC profile (W, priority, two values), outside the
            #    schema, a cut-off JSON body; then the good event updated into a broken one.
            bad_gac = vtn.inject_malformed_event(program["id"], "gac", template=limit_event(vtn, program["id"], [1]))
            bad_schema = vtn.inject_malformed_event(program["id"], "schema")
            vtn.inject_malformed_event(program["id"], "json")
            broken = limit_event(vtn, program["id"], [5, 5])
            broken["payloadDescriptors"][0]["units"] = "W"
            vtn.update("event", event["id"], broken)
            # (3.1.0 privacy hides the schema-broken one from the VEN: its targets are not a list.)
            expected = {bad_gac, event["id"]} | ({bad_schema} if version == "3.0.1" else set())
            status = await until(lambda: _refused(api, expected), 10, "the malformed events refused with a reason")
            reasons = {r["event_id"]: r for r in status["refused"]}
            assert "priority" in reasons[bad_gac]["reason"], reasons
            assert "KW" in reasons[event["id"]]["reason"] and reasons[event["id"]]["kept_last_good"] is True
            if version == "3.0.1":
                assert "targets" in reasons[bad_schema]["reason"], reasons
            assert status["failures"] >= 1  # the cut-off body: a failed poll, nothing applied from it
            await asyncio.sleep(1.0)  # several polls later
            group = await openadr_limit(api, 22)
            assert group is not None, await api.group()
            assert obeyed(stations, 22)
            rejections = await api.events("signal_rejected")
            assert any(bad_gac in str(r) for r in rejections), rejections[-3:]

            # 3. The VTN rotates its keys (every token void), then the DSO fixes the event at 15 kW:
            #    the VEN fetches a new token by itself; the fix is applied and obeyed.
            vtn.revoke_tokens()
            vtn.update("event", event["id"], limit_event(vtn, program["id"], [15, 15]))
            await until(lambda: openadr_limit(api, 15), 10, "the corrected 15 kW in force")
            await until(lambda: obeyed(stations, 15), 15, "stations under 15 kW")

            # 4. The DSO deletes the event: the OpenADR limit leaves the book.
            vtn.delete("event", event["id"])
            await until(lambda: _capacity_only(api), 10, "back to the rated capacity")
            metrics = await _metrics(site)
            assert "csms_grid_openadr_vtn_reachable 1.0" in metrics
            assert 'csms_grid_openadr_events_total{outcome="refused"}' in metrics
            assert running.proc.returncode is None


async def test_restart_mid_event_keeps_the_limit_while_the_vtn_is_away(tmp_path: Path) -> None:
    async with vtn_running() as vtn:
        program, _ = vtn.seed_gac(eans=[EAN], ven_name=VEN_NAME, safe_limit_kw=40)
        vtn.create("event", limit_event(vtn, program["id"], [25]))
        site = Site(tmp_path, grid_config(vtn, link_timeout_s=20))
        async with Api(site) as api:
            async with daemon(site) as first:
                await until(lambda: openadr_limit(api, 25), 15, "the event's 25 kW in force")
                await until(lambda: _stored(api), 5, "the VEN's round stored")
                assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
            # The VTN is unreachable while the daemon comes back: the limit can only come from the store.
            await vtn.go_silent(8, "refuse")
            async with daemon(site) as second, charging(site, 2) as stations:
                group = await openadr_limit(api, 25)
                assert group is not None, (await api.group(), second.text()[-4000:])
                status = await vtn_status(api)
                assert not status["reachable"] and not status["fallback"]
                assert status["programs"][PROGRAM]["events"], status
                await until(lambda: obeyed(stations, 25), 15, "stations under 25 kW after the restart")
                await until(lambda: _reachable(api), 20, "the VTN answering again")
                assert await openadr_limit(api, 25) is not None
                assert second.proc.returncode is None


async def test_silent_vtn_falls_back_to_the_dso_safe_limit_after_the_link_timeout(tmp_path: Path) -> None:
    async with vtn_running() as vtn:
        program, _ = vtn.seed_gac(eans=[EAN], ven_name=VEN_NAME, safe_limit_kw=40)
        vtn.create("event", limit_event(vtn, program["id"], [120]))
        site = Site(tmp_path, grid_config(vtn, link_timeout_s=2))
        async with Api(site) as api, daemon(site):
            await until(lambda: openadr_limit(api, 120), 15, "the event's 120 kW in force")
            await vtn.go_silent(9, "hang")  # accepts connections, answers nothing
            silent_at = asyncio.get_running_loop().time()
            await until(lambda: openadr_limit(api, 120), 1, "still the event within the grace period")
            group = await until(lambda: openadr_limit(api, 40), 10, "the DSO's safe limit of 40 kW")
            waited = asyncio.get_running_loop().time() - silent_at
            assert waited >= 2.0, waited  # not before the link timeout
            status = await vtn_status(api)
            assert status["fallback"] and not status["reachable"] and status["last_error"], status
            assert "csms_grid_openadr_fallback 1.0" in await _metrics(site)
            assert group["limit_source"].startswith(f"signal:{SOURCE}:")
            await until(lambda: openadr_limit(api, 120), 20, "the event's limit again once the VTN answers")
            assert not (await vtn_status(api))["fallback"]


async def _registered(api: Api) -> dict[str, Any] | None:
    status = await vtn_status(api)
    return status if status["ven_id"] and status["polls"] > 0 else None


async def _refused(api: Api, ids: set[str | None]) -> dict[str, Any] | None:
    status = await vtn_status(api)
    return status if ids <= {r["event_id"] for r in status["refused"]} else None


async def _stored(api: Api) -> bool:
    return (await vtn_status(api))["stored_at"] is not None


async def _reachable(api: Api) -> bool:
    return bool((await vtn_status(api))["reachable"])


async def _capacity_only(api: Api) -> bool:
    group = await api.group()
    return group["limit_kw"] == 200 and group["limit_source"] == "capacity"  # type: ignore[no-any-return]


async def _metrics(site: Site) -> str:
    async with Api(site) as api:
        status, body = await api.request("GET", "/metrics")
    assert status == 200, body
    return str(body)


async def test_webhook_notification_applies_an_event_without_waiting_for_the_poll(tmp_path: Path) -> None:
    async with vtn_running("3.1.0") as vtn:
        program = seed(vtn)
        site = Site(tmp_path, {})
        site.grid = grid_config(vtn, poll_interval_s=60, webhook_url=f"{site.api_url}/openadr/notify")
        async with Api(site) as api, daemon(site):
            status = await until(lambda: _subscribed(api), 15, "subscribed to the program")
            polls = status["polls"]
            assert [s["clientName"] for s in vtn.store.objects["subscription"].values()] == [VEN_NAME]
            event = vtn.create("event", limit_event(vtn, program["id"], [33]))
            await until(lambda: openadr_limit(api, 33), 10, "the event applied on the notification")
            status = await vtn_status(api)
            assert status["notifications"] >= 1 and status["polls"] <= polls + 3, status  # not by the 60 s poll
            assert all(d.status == 200 for d in vtn.deliveries), vtn.deliveries
            vtn.delete("event", event["id"])
            await until(lambda: _capacity_only(api), 10, "the deletion applied on the notification")
            # A caller without the subscription's bearer token is refused and changes nothing.
            forged = {"objectType": "EVENT", "operation": "CREATE", "object": {"id": "x"}}
            async with aiohttp.ClientSession() as session:
                for headers in ({}, {"Authorization": "Bearer guessed"}):
                    async with session.post(f"{site.api_url}/openadr/notify", json=forged, headers=headers) as r:
                        assert r.status == 401, await r.text()
            assert (await vtn_status(api))["notifications"] == status["notifications"] + 1


async def _subscribed(api: Api) -> dict[str, Any] | None:
    status = await vtn_status(api)
    return status if status["subscriptions"].get(PROGRAM) else None


@pytest.mark.parametrize("version", ["3.0.1", "3.1.0"])
async def test_usage_reports_answer_the_events_report_descriptors(tmp_path: Path, version: str) -> None:
    async with vtn_running(version) as vtn:
        program = seed(vtn)
        site = Site(tmp_path, grid_config(vtn))
        async with Api(site) as api, daemon(site), charging(site) as stations:
            await until(lambda: sum(st.power_kw() for st in stations) > 30, 15, "three cars charging")
            await until(lambda: _group_load(api, 30), 10, "the group's load measured")
            start = datetime.now(UTC).replace(microsecond=0)
            body = capacity_limit_event(vtn.version, program["id"], limits_kw=[150, 150], start=start,
                                        interval=timedelta(seconds=4), eans=[EAN], ven_name=VEN_NAME)
            body["reportDescriptors"] = [{"payloadType": "DEMAND", "units": "KW"},
                                         {"payloadType": "USAGE", "units": "KWH"}]
            event = vtn.create("event", body)
            reports = await until(lambda: len(vtn.reports()) >= 2 and vtn.reports(), 20, "a report per interval")
            assert (await vtn_status(api))["reports_sent"] == 2
            for report, interval_id in zip(sorted(reports, key=lambda r: r["reportName"]), (0, 1), strict=True):
                assert report["eventID"] == event["id"] and report["clientName"] == VEN_NAME
                resource = report["resources"][0]
                assert resource["resourceName"] == EAN and resource["intervals"][0]["id"] == interval_id
                values = {p["type"]: p["values"][0] for p in resource["intervals"][0]["payloads"]}
                assert 25 <= values["DEMAND"] <= 40, values  # three cars at about 11 kW
                assert values["USAGE"] == pytest.approx(values["DEMAND"] * 4 / 3600, abs=0.002), values


async def _group_load(api: Api, kw: float) -> bool:
    return bool((await api.group())["measured_kw"] >= kw)


async def test_a_restart_during_the_fallback_keeps_the_safe_limit_until_the_vtn_answers(tmp_path: Path) -> None:
    async with vtn_running() as vtn:
        program = seed(vtn)
        vtn.create("event", limit_event(vtn, program["id"], [120]))
        site = Site(tmp_path, grid_config(vtn, link_timeout_s=1.5))
        async with Api(site) as api:
            async with daemon(site) as first:
                await until(lambda: openadr_limit(api, 120), 15, "the event's 120 kW in force")
                await vtn.go_silent(15, "refuse")
                await until(lambda: openadr_limit(api, 40), 10, "the DSO's safe limit of 40 kW")
                await until(lambda: _stored_fallback(api), 5, "the fallback stored")
                assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
            async with daemon(site):
                assert await openadr_limit(api, 40) is not None, await api.group()
                assert (await vtn_status(api))["fallback"]
                await until(lambda: openadr_limit(api, 120), 30, "the event's limit once the VTN answers")
                assert not (await vtn_status(api))["fallback"]


async def _stored_fallback(api: Api) -> bool:
    status = await vtn_status(api)
    return bool(status["fallback"] and status["stored_at"] and status["stored_at"] >= status["fallback_since"])
