"""The daemon as a UFTP aggregator against the `shapeshifter-uftp` library's own DSO participant.

End to end over loopback, signed both ways, keys and endpoints from config (no DNS): a FlexRequest
for two ISPs is answered with a FlexOffer computed from the fleet (five sessions on stations built
from the `ocpp` package), the DSO orders it, the order becomes a limit per ISP that the stations
obey, the daemon is killed and restarted inside the first ordered ISP and the limit holds, the
delivered flexibility per ISP is measured from the stations' meter data and a FlexSettlement is
accepted (and an inflated one disputed). Also: malformed, stale and unknown messages refused with a
reason while the limit in force stays, and the DSO going silent (answers retried, then given up).

ISPs last one minute here (the DSO's ISP-Duration PT1M) so the test takes minutes, not hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from shapeshifter_uftp import (
    AcceptedRejected,
    FlexOffer,
    FlexOrder,
    FlexOrderISP,
    FlexOrderResponse,
    FlexRequest,
    FlexRequestISP,
    FlexRequestResponse,
    FlexSettlementResponse,
)
from shapeshifter_uftp.uftp.enums import AcceptedDisputed, AvailableRequested
from xsdata.models.datatype import XmlDate, XmlDuration

from simulators.uftp_dso import UftpDso, UftpDsoConfig, generate_keypair, isp_start, isps_in_day
from tests.grid_outside import REPO, Api, Site, daemon, free_port
from tests.ocpp_station import LibStation
from tests.waiting import until

DSO = "dso.netbewust.test"
AGR = "agr.netbewust.test"
EAN = "ean.871234567890123456"
TZ = "Europe/Amsterdam"
ISP_MIN = 1
PATH = "/shapeshifter/api/v3/message"
KW_PER_EVSE = 16 * 3 * 230 / 1000.0  # 11.04 kW


def grid_config(dso_endpoint: str, dso_public: str, agr_key: str, agr_port: int) -> dict[str, Any]:
    return {
        "transformers": {"T1": {"capacity_kw": 200, "members": [{"station": "UF-*"}]}},
        "planning": {"slot_s": 60, "horizon_slots": 30, "replan_interval_s": 1, "min_push_interval_s": 0,
                     "verify_after_s": 2},
        "session_defaults": {"energy_kwh": 40, "dwell_h": 8, "guaranteed_kwh": 5},
        "uftp": {"domain": AGR, "signing_key": agr_key, "host": "127.0.0.1", "port": agr_port,
                 "participants": [{"domain": DSO, "endpoint": dso_endpoint, "public_key": dso_public}],
                 "congestion_points": {EAN: "T1"}, "price_eur_per_mwh": 200, "measure_interval_s": 1,
                 "max_message_age_s": 120, "retry_max_s": 1, "request_timeout_s": 2},
    }


def dso_config(dso_key: str, agr_public: str, agr_port: int, port: int) -> UftpDsoConfig:
    return UftpDsoConfig.from_mapping({
        "domain": DSO, "signing_key": dso_key, "port": port, "isp_minutes": ISP_MIN, "time_zone": TZ,
        "request_timeout_s": 5,
        "participants": [{"domain": AGR, "role": "AGR", "public_key": agr_public,
                          "endpoint": f"http://127.0.0.1:{agr_port}{PATH}"}]})


def next_isps(lead_s: float) -> tuple[Any, int]:
    """(local date, number) of the first one-minute ISP starting at least ``lead_s`` from now."""
    now = datetime.now(UTC) + timedelta(seconds=lead_s)
    local = now.astimezone(ZoneInfo(TZ))
    day = local.date()
    minute = local.hour * 60 + local.minute + 1  # ISP numbers of one-minute ISPs: minute of the day + 1
    number = minute + 1
    if number + 3 > isps_in_day(day, TZ, ISP_MIN):  # the test uses four ISPs: not across midnight
        return day + timedelta(days=1), 1
    return day, number


class Registers:
    """The stations' own energy registers sampled over time: the DSO's 'metering' in this test."""

    def __init__(self, stations: list[LibStation]) -> None:
        self.stations = stations
        self.samples: list[tuple[datetime, float]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for st in self.stations:
                st.tick()
            self.samples.append((datetime.now(UTC), sum(e.energy_wh for st in self.stations
                                                        for e in st.evses.values())))
            await asyncio.sleep(0.2)

    def average_w(self, start: datetime, end: datetime) -> int:
        before = max((s for s in self.samples if s[0] <= start), key=lambda s: s[0])
        after = min((s for s in self.samples if s[0] >= end), key=lambda s: s[0])
        return round((after[1] - before[1]) / ((after[0] - before[0]).total_seconds() / 3600.0))


async def uftp_status(api: Api) -> dict[str, Any]:
    status: dict[str, Any] = (await api.get("/api/grid"))["sources"]["uftp"]
    return status


@pytest.mark.timeout(480)
async def test_request_offer_order_restart_settle_against_the_library_dso(tmp_path: Path) -> None:
    dso_key, agr_key = generate_keypair(), generate_keypair()
    agr_port, dso_port = free_port(), free_port()
    dso = UftpDso(dso_config(dso_key[0], agr_key[1], agr_port, dso_port)).start()
    site = Site(tmp_path, grid_config(dso.endpoint, dso.public_key, agr_key[0], agr_port))
    stations = [LibStation(f"UF-{i}", evses=2 if i == 3 else 1, meter_interval_s=0.3) for i in range(4)]
    registers: Registers | None = None
    figures: dict[str, Any] = {}
    try:
        async with daemon(site) as running, Api(site) as api:
            for st in stations:
                await st.connect(site.ws_url)
                for evse_id in st.evses:
                    await st.start_transaction(evse_id)
            await until(lambda: _measured(api, 5 * KW_PER_EVSE), 20, "the daemon sees five cars at 11 kW")
            registers = Registers(stations)
            period, first = next_isps(lead_s=30)
            isps = [first, first + 1]
            bounds = {n: (isp_start(period, n, TZ, ISP_MIN), isp_start(period, n, TZ, ISP_MIN) + timedelta(minutes=1))
                      for n in isps}

            # Request -> offer from the fleet's flexibility -> order.
            request = await asyncio.to_thread(dso.send_flex_request, AGR, EAN, period,
                                              requested={n: (-40_000, -20_000) for n in isps},
                                              available={first + 2: (-10_000, 10_000)})
            answer = await dso.expect(FlexRequestResponse, lambda m: m.flex_request_message_id == request.message_id)
            assert answer.result == AcceptedRejected.ACCEPTED, answer.rejection_reason
            offer = await dso.expect(FlexOffer, lambda m: m.flex_request_message_id == request.message_id)
            assert dso.offer_verdicts[offer.message_id] is None  # the DSO finds nothing wrong with it
            offered = {i.start: i.power for i in offer.offer_options[0].isps}
            assert offered == {n: -20_000 for n in isps}  # what was needed at least, and no more
            assert offer.offer_options[0].price == Decimal("0.1333")  # 2 x 20 kW x 1 min at EUR 200/MWh
            before_order = time.monotonic()
            order = await asyncio.to_thread(dso.send_flex_order, offer)
            verdict = await dso.expect(FlexOrderResponse, lambda m: m.flex_order_message_id == order.message_id)
            assert verdict.result == AcceptedRejected.ACCEPTED, verdict.rejection_reason
            status = await uftp_status(api)
            record = next(o for o in status["orders"] if o["order_reference"] == order.order_reference)
            limits = {int(n): i["limit_kw"] for n, i in record["isps"].items()}
            baseline = {int(n): i["baseline_kw"] for n, i in record["isps"].items()}
            assert all(abs(baseline[n] - 5 * KW_PER_EVSE) < 1.0 for n in isps), baseline
            assert all(abs(limits[n] - (baseline[n] - 20.0)) < 0.01 for n in isps), limits
            figures.update(baseline_kw=baseline, limit_kw=limits)
            source = f"signal:uftp:{order.order_reference}:{order.message_id}"

            # Refused: an order for an offer never made, one that changes the ISPs, a stale request,
            # an unknown congestion point, a body that is no UFTP at all, a message signed with
            # another key. The orders (and so the limits) stay as they were.
            await _refusals(dso, api, offer, period, first)

            # The DSO goes silent: a request from it (sent by a second instance with its key) cannot
            # be answered; the answer is retried, the DSO marked unreachable, the order stays binding.
            dso.stop()
            ghost = UftpDso(dso_config(dso_key[0], agr_key[1], agr_port, 0)).start()
            try:
                await asyncio.to_thread(ghost.send_flex_request, AGR, EAN, period,
                                        requested={first + 3: (-5000, -2000)}, expires_in=timedelta(seconds=5))
                state = await until(lambda: _dso_state(api, reachable=False), 20, "the DSO marked unreachable")
                figures["silent_dso_error"] = state["last_error"]
            finally:
                ghost.stop()

            # The ordered ISPs: the stations are held under the limit, also across a restart (SIGKILL).
            start = bounds[first][0]
            await _sleep_until(start + timedelta(seconds=3))
            group = await api.group()
            assert group["limit_source"] == source and abs(group["limit_kw"] - limits[first]) < 0.01, group
            await until(lambda: sum(st.power_kw() for st in stations) <= limits[first], 15,
                        "the stations under the ordered limit")
            pushes = sum(len(st.tx_pushes(before_order)) for st in stations)
            assert pushes >= 5, pushes  # a TxProfile for each of the five sessions at least
            figures["tx_profiles_after_order"] = pushes
            await _sleep_until(start + timedelta(seconds=20))
            assert await running.stop(signal.SIGKILL) != 0

        async with daemon(site) as running, Api(site) as api:
            group = await api.group()
            assert group["limit_source"] == source, group  # restored before the first plan
            assert abs(group["limit_kw"] - limits[first]) < 0.01, group
            figures["restored_limit_kw"] = group["limit_kw"]
            for st in stations:
                await st.connect(site.ws_url)
            await until(lambda: sum(st.power_kw() for st in stations) <= limits[first] + 0.05, 20,
                        "the stations under the ordered limit after the restart")
            end = bounds[isps[-1]][1]
            await _sleep_until(end + timedelta(seconds=2))
            group = await api.group()
            assert not group["limit_source"].startswith("signal:uftp"), group  # the order ended with its last ISP
            # Delivered flexibility per ISP, measured from the meter data in the store.
            record = await until(lambda: _measured_order(api, order.order_reference), 30, "ISPs measured")
            delivered = {int(n): i["delivered_w"] for n, i in record["isps"].items()}
            figures["delivered_w"] = delivered
            figures["measured_kw"] = {int(n): i["measured_kw"] for n, i in record["isps"].items()}
            assert all(d <= -18_000 for d in delivered.values()), delivered  # about the ordered 20 kW or more

            # Settlement from the DSO's own metering (the stations' registers): accepted; inflated: disputed.
            actual = {n: registers.average_w(*bounds[n]) for n in isps}
            figures["dso_metered_w"] = actual
            dso2 = UftpDso(dso_config(dso_key[0], agr_key[1], agr_port, dso_port)).start()
            try:
                ref = order.order_reference
                base_w = {n: round(baseline[n] * 1000) for n in isps}
                honest = await asyncio.to_thread(dso2.send_flex_settlement, AGR, [order], baseline_w={ref: base_w},
                                                 actual_w={ref: actual})
                reply = await dso2.expect(FlexSettlementResponse,
                                          lambda m: m.flex_settlement_message_id == honest.message_id, timeout=20)
                verdict_of = reply.flex_order_settlement_statuses[0]
                assert verdict_of.disposition == AcceptedDisputed.ACCEPTED, verdict_of.dispute_reason
                inflated = await asyncio.to_thread(dso2.send_flex_settlement, AGR, [order], baseline_w={ref: base_w},
                                                   actual_w={ref: dict.fromkeys(isps, 0)})
                reply = await dso2.expect(FlexSettlementResponse,
                                          lambda m: m.flex_settlement_message_id == inflated.message_id, timeout=20)
                verdict_of = reply.flex_order_settlement_statuses[0]
                assert verdict_of.disposition == AcceptedDisputed.DISPUTED
                assert "we measured" in (verdict_of.dispute_reason or "")
            finally:
                dso2.stop()
            status, metrics = await api.request("GET", "/metrics")
            assert status == 200
            # (counters restart with the process: these are the second daemon's)
            assert 'csms_uftp_messages_total{type="FlexSettlement",verdict="accepted"} 1.0' in metrics
            assert 'csms_uftp_messages_total{type="FlexSettlement",verdict="disputed"} 1.0' in metrics
            assert 'csms_uftp_delivered_kw{congestion_point="' + EAN + '"}' in metrics
        print("UFTP figures:", figures)
    finally:
        if registers is not None:
            registers.task.cancel()
        for st in stations:
            await st.stop()
        with contextlib.suppress(Exception):
            dso.stop()


async def _refusals(dso: UftpDso, api: Api, offer: FlexOffer, period: Any, first: int) -> None:
    before = await uftp_status(api)
    fields = {"isp_duration": XmlDuration(f"PT{ISP_MIN}M"), "time_zone": TZ, "period": XmlDate.from_date(period),
              "congestion_point": EAN}
    stray = FlexOrder(**fields, isps=[FlexOrderISP(power=-20_000, start=first)], flex_offer_message_id="nope",
                      price=Decimal(1), currency="EUR", order_reference="stray-1")
    await asyncio.to_thread(dso._send, stray, AGR, lambda c, m: c.send_flex_order(m))
    got = await dso.expect(FlexOrderResponse, lambda m: m.flex_order_message_id == stray.message_id)
    assert got.result == AcceptedRejected.REJECTED and "unknown FlexOfferMessageID" in got.rejection_reason

    changed = FlexOrder(**fields, isps=[FlexOrderISP(power=-30_000, start=first, duration=2)],
                        flex_offer_message_id=offer.message_id, price=Decimal(1), currency="EUR",
                        order_reference="bigger-1")
    await asyncio.to_thread(dso._send, changed, AGR, lambda c, m: c.send_flex_order(m))
    got = await dso.expect(FlexOrderResponse, lambda m: m.flex_order_message_id == changed.message_id)
    assert got.result == AcceptedRejected.REJECTED and "offered" in got.rejection_reason

    stale = FlexRequest(**fields, revision=1, expiration_date_time=(datetime.now(UTC) + timedelta(hours=1)).isoformat(),
                        isps=[FlexRequestISP(disposition=AvailableRequested.REQUESTED, min_power=-1000, max_power=-500,
                                             start=first)],
                        time_stamp=(datetime.now(UTC) - timedelta(hours=2)).isoformat())
    await asyncio.to_thread(dso._send, stale, AGR, lambda c, m: c.send_flex_request(m))
    got = await dso.expect(FlexRequestResponse, lambda m: m.flex_request_message_id == stale.message_id)
    assert got.result == AcceptedRejected.REJECTED and got.rejection_reason.startswith("stale")

    unknown_point = FlexRequest(**{**fields, "congestion_point": "ean.000000000000000000"}, revision=1,
                                expiration_date_time=(datetime.now(UTC) + timedelta(hours=1)).isoformat(),
                                isps=[FlexRequestISP(disposition=AvailableRequested.REQUESTED, min_power=-1000,
                                                     max_power=-500, start=first)])
    await asyncio.to_thread(dso._send, unknown_point, AGR, lambda c, m: c.send_flex_request(m))
    got = await dso.expect(FlexRequestResponse, lambda m: m.flex_request_message_id == unknown_point.message_id)
    assert got.result == AcceptedRejected.REJECTED and "unknown CongestionPoint" in got.rejection_reason

    endpoint = (await uftp_status(api))["endpoint"]
    async with aiohttp.ClientSession() as http:
        async with http.post(endpoint, data=b"<not-uftp/>", headers={"Content-Type": "text/xml"}) as r:
            assert 400 <= r.status < 500, r.status
    client = dso.client(AGR)
    client.signing_key = generate_keypair()[0]  # signed with a key that is not the DSO's
    with pytest.raises(Exception) as refused:
        await asyncio.to_thread(client.send_flex_order, FlexOrder(**fields, isps=[FlexOrderISP(power=-1, start=first)],
                                                                  flex_offer_message_id=offer.message_id,
                                                                  price=Decimal(1), currency="EUR",
                                                                  order_reference="forged-1"))
    assert refused.value.response.status_code == 401  # type: ignore[attr-defined]

    after = await uftp_status(api)
    reasons = [r["reason"] for r in after["refusals"]][len(before["refusals"]):]
    assert len(reasons) == 4, reasons
    assert [o["order_reference"] for o in after["orders"]] == [o["order_reference"] for o in before["orders"]]


async def _measured(api: Api, kw: float) -> bool:
    group = await api.group()
    return abs(group["measured_ev_kw"] - kw) < 0.5 and len(group["sessions"]) == 5


async def _dso_state(api: Api, *, reachable: bool) -> dict[str, Any] | None:
    state: dict[str, Any] = (await uftp_status(api))["dso"][DSO]
    return state if state["reachable"] is reachable and state["last_error"] else None


async def _measured_order(api: Api, reference: str) -> dict[str, Any] | None:
    record = next(o for o in (await uftp_status(api))["orders"] if o["order_reference"] == reference)
    return record if all(i["delivered_w"] is not None for i in record["isps"].values()) else None


async def _sleep_until(at: datetime) -> None:
    await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))


@pytest.mark.timeout(120)
async def test_a_graceful_stop_with_the_uftp_endpoint_and_a_config_error(tmp_path: Path) -> None:
    dso_key, agr_key = generate_keypair(), generate_keypair()
    agr_port = free_port()
    site = Site(tmp_path, grid_config("http://127.0.0.1:9/x", dso_key[1], agr_key[0], agr_port))
    async with daemon(site) as running, Api(site) as api:
        status = await uftp_status(api)
        assert status["endpoint"] == f"http://127.0.0.1:{agr_port}{PATH}" and status["orders"] == []
        assert await running.stop(signal.SIGTERM) == 0
    assert "uftp: aggregator agr.netbewust.test listening" in running.text()

    site.grid["uftp"]["congestion_points"] = {EAN: "T9"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "csms", "serve", "--config",
                                                str(site.write_config()), stderr=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.DEVNULL, cwd=REPO)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0 and "grid.uftp.congestion_points." + EAN in err.decode()


@pytest.mark.timeout(120)
async def test_the_uftp_port_in_use_stops_the_start_with_a_reason(tmp_path: Path) -> None:
    dso_key, agr_key = generate_keypair(), generate_keypair()
    agr_port = free_port()
    site = Site(tmp_path, grid_config("http://127.0.0.1:9/x", dso_key[1], agr_key[0], agr_port))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", agr_port))
        taken.listen()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "csms", "serve", "--config",
                                                    str(site.write_config()), stderr=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.DEVNULL, cwd=REPO)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0 and f"grid.uftp: cannot listen on 127.0.0.1:{agr_port}" in err.decode()
