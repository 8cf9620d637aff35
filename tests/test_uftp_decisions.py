"""The aggregator's decisions on UFTP messages, without the network (the end-to-end test with the
library's DSO participant is tests/test_uftp_aggregator.py): offers never promise the same
flexibility twice, orders must copy an offer, and a refused message leaves the limits alone."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from shapeshifter_uftp import (
    AcceptedRejected,
    FlexOffer,
    FlexOfferOption,
    FlexOfferOptionISP,
    FlexOrder,
    FlexOrderISP,
    FlexOrderResponse,
    FlexRequest,
    FlexRequestISP,
    FlexRequestResponse,
)
from shapeshifter_uftp.uftp.enums import AvailableRequested
from xsdata.models.datatype import XmlDate, XmlDuration

from csms.grid.config import parse_grid
from csms.grid.model.limits import LimitSignal, SignalError
from csms.grid.sources.uftp.aggregator import Aggregator
from profiles.flex_offer import DrawingSession
from profiles.model import SessionNeed

EAN = "ean.871234567890123456"
DSO = "dso.example"
KW = 16 * 3 * 230 / 1000.0
NOW = datetime(2026, 1, 6, 15, 50, tzinfo=UTC)  # 16:50 in Amsterdam: ISP 69 (17:00) starts in 10 minutes
PERIOD = date(2026, 1, 6)


class Fleet:
    def drawing_sessions(self, transformer_id: str, now: datetime) -> list[DrawingSession]:
        return [DrawingSession(SessionNeed(session_id=f"s{i}", max_current_a=16.0, energy_needed_kwh=40.0,
                                           departure_s=8 * 3600.0), KW) for i in range(3)]

    def base_load_kw(self, transformer_id: str, at: datetime) -> float:
        return 20.0

    def is_under(self, station_id: str, evse_id: int, transformer_id: str) -> bool:
        return True

    def clock_offset_s(self, station_id: str) -> float:
        return 0.0

    def headroom(self, transformer_id: str, now: datetime, until_s: float) -> list[tuple[float, float, float]]:
        return [(0.0, until_s, 180.0)]


class Intake:
    def __init__(self) -> None:
        self.signals: list[LimitSignal] = []
        self.refused: list[str] = []

    async def put_signal(self, signal: LimitSignal, *, via: str) -> bool:
        if signal.intervals[0][2] < 0:
            raise SignalError("negative")
        self.signals.append(signal)
        return True

    def refuse(self, tid: str, reason: str, signal_id: str | None, via: str) -> None:
        self.refused.append(reason)


def aggregator() -> tuple[Aggregator, Intake]:
    grid = parse_grid({"transformers": {"T1": {"capacity_kw": 200, "members": ["S-*"]}},
                       "uftp": {"domain": "agr.example", "signing_key": "A" * 86 + "==",
                                "participants": [{"domain": DSO, "endpoint": "http://127.0.0.1:1/x",
                                                  "public_key": "A" * 43 + "="}],
                                "congestion_points": {EAN: "T1"}}})
    assert grid.uftp is not None
    intake = Intake()
    return Aggregator(grid.uftp, grid, intake, Fleet(), None, None, CollectorRegistry(), lambda: NOW), intake


def flex_fields() -> dict[str, Any]:
    return {"isp_duration": XmlDuration("PT15M"), "time_zone": "Europe/Amsterdam", "period": XmlDate.from_date(PERIOD),
            "congestion_point": EAN, "sender_domain": DSO, "time_stamp": NOW.isoformat(),
            "message_id": str(uuid.uuid4()), "conversation_id": str(uuid.uuid4())}


def request(isps: dict[int, tuple[int, int]], **changes: Any) -> FlexRequest:
    return FlexRequest(**{**flex_fields(), **changes}, revision=1,
                       expiration_date_time=(NOW + timedelta(hours=1)).isoformat(),
                       isps=[FlexRequestISP(disposition=AvailableRequested.REQUESTED, min_power=lo, max_power=hi,
                                            start=n) for n, (lo, hi) in isps.items()])


def order_for(offer: FlexOffer, scale: float = 1.0, reference: str = "o-1") -> FlexOrder:
    return FlexOrder(**flex_fields(), flex_offer_message_id=offer.message_id, price=Decimal(1), currency="EUR",
                     order_reference=reference, isps=[FlexOrderISP(power=round(i.power * scale), start=i.start)
                                                      for i in offer.offer_options[0].isps])


async def test_offers_share_the_fleet_and_orders_become_limits() -> None:
    agr, intake = aggregator()
    first_request = request({69: (-30_000, -25_000), 70: (-30_000, -25_000)})
    out = await agr.on_flex_request(first_request)
    assert out[0].message.result == AcceptedRejected.ACCEPTED
    first = out[1].message
    assert isinstance(first, FlexOffer) and {i.start: i.power for i in first.offer_options[0].isps} == {
        69: -25_000, 70: -25_000}
    # The same request again (a DSO retrying): the same offer, not a second one.
    same = await agr.on_flex_request(first_request)
    assert [type(o.message).__name__ for o in same] == ["FlexRequestResponse", "FlexOffer"]
    assert same[1].message.message_id == first.message_id and len(agr.offers) == 1
    # A second request for the same ISPs: 33.12 kW of flexibility, 25 kW promised already.
    second = (await agr.on_flex_request(request({69: (-30_000, -25_000)})))[1].message
    [(start, power)] = [(i.start, i.power) for i in second.offer_options[0].isps]
    assert start == 69 and -8120 <= power <= -8119  # rounded towards less

    answer = (await agr.on_flex_order(order_for(first, 0.5)))[0].message
    assert isinstance(answer, FlexOrderResponse) and answer.result == AcceptedRejected.ACCEPTED, answer.rejection_reason
    signal = intake.signals[0]
    assert signal.source == "uftp:o-1" and [kw for _, _, kw in signal.intervals] == [pytest.approx(20 + 3 * KW - 12.5)] * 2
    assert signal.intervals[0][0] == datetime(2026, 1, 6, 16, 0, tzinfo=UTC)  # 17:00 local
    again = (await agr.on_flex_order(order_for(first, 0.5)))[0].message  # another message, the same reference
    assert again.result == AcceptedRejected.REJECTED and "already used" in again.rejection_reason


@pytest.mark.parametrize(("change", "reason"), [
    ({"congestion_point": "ean.1"}, "unknown CongestionPoint"),
    ({"time_stamp": (NOW - timedelta(hours=1)).isoformat()}, "stale"),
    ({"isp_duration": XmlDuration("PT7M")}, "ISP-Duration"),
    ({"time_zone": "Mars/Olympus"}, "unknown TimeZone"),
    ({"expiration_date_time": (NOW - timedelta(seconds=1)).isoformat()}, "expired"),
])
async def test_bad_requests_are_refused_with_a_reason(change: dict[str, Any], reason: str) -> None:
    agr, intake = aggregator()
    message = request({69: (-30_000, -25_000)})
    for key, value in change.items():
        setattr(message, key, value)
    out = await agr.on_flex_request(message)
    assert len(out) == 1 and isinstance(out[0].message, FlexRequestResponse)
    assert out[0].message.result == AcceptedRejected.REJECTED and reason in out[0].message.rejection_reason
    assert agr.refusals[-1]["reason"] == out[0].message.rejection_reason


async def test_past_isps_and_orders_that_differ_are_refused_and_nothing_changes() -> None:
    agr, intake = aggregator()
    out = await agr.on_flex_request(request({60: (-30_000, -25_000)}))  # 14:45 UTC: over
    assert "no requested ISP lies in the future" in out[0].message.rejection_reason
    offer = (await agr.on_flex_request(request({69: (-30_000, -25_000)})))[1].message
    bigger = order_for(offer, 1.2, "o-2")
    assert "only the offered power" in (await agr.on_flex_order(bigger))[0].message.rejection_reason
    other = order_for(offer, 1.0, "o-3")
    other.isps.append(FlexOrderISP(power=-1000, start=70))
    assert "differ from the offered" in (await agr.on_flex_order(other))[0].message.rejection_reason
    unknown = order_for(offer, 1.0, "o-4")
    unknown.flex_offer_message_id = "nope"
    assert "unknown FlexOfferMessageID" in (await agr.on_flex_order(unknown))[0].message.rejection_reason
    assert intake.signals == [] and agr.orders == {} and len(intake.refused) == 4


class Transactions:
    """A TransactionStore slice: one transaction drawing 12 kW on a station whose clock runs 2 minutes ahead."""

    def __init__(self, start: datetime) -> None:
        self.start = start

    async def list_transactions(self, **_: Any) -> list[Any]:
        from csms.domain.records import TransactionRecord
        return [TransactionRecord("S-1", "tx-1", 1, 1, None, self.start - timedelta(hours=1), None, True, "Charging",
                                  None, 0, None, "Started")]

    async def meter_samples(self, station_id: str, **_: Any) -> list[dict[str, Any]]:
        ahead = timedelta(minutes=2)
        out = []
        kwh = 10.0
        for k in range(0, 31):  # every minute (our clock): 22 kW until the ISP starts, then 12 kW; in kWh
            at = self.start - timedelta(minutes=10) + timedelta(minutes=k) + ahead
            out.append({"timestamp": at.isoformat(), "measurand": "Energy.Active.Import.Register", "phase": None,
                        "value": round(kwh, 6), "unit": "kWh"})
            kwh += (22.0 if k < 10 else 12.0) / 60.0
        return out


async def test_delivery_is_measured_from_the_meters_on_our_clock() -> None:
    agr, intake = aggregator()
    now = [NOW]
    agr.clock = lambda: now[0]

    class SkewedFleet(Fleet):
        def clock_offset_s(self, station_id: str) -> float:
            return 120.0

    agr.fleet = SkewedFleet()
    offer = (await agr.on_flex_request(request({69: (-30_000, -25_000)})))[1].message
    assert (await agr.on_flex_order(order_for(offer)))[0].message.result == AcceptedRejected.ACCEPTED
    isp_start = datetime(2026, 1, 6, 16, 0, tzinfo=UTC)
    agr.transactions = Transactions(isp_start)  # type: ignore[assignment]
    now[0] = isp_start + timedelta(minutes=15, seconds=5)
    assert await agr.measure(settle_after_s=10) == 0  # too early: meter data may still come
    now[0] += timedelta(seconds=10)
    assert await agr.measure(settle_after_s=10) == 1
    isp = agr.orders["o-1"]["isps"]["69"]
    assert isp["measured_kw"] == pytest.approx(12.0)
    assert isp["delivered_w"] == round((12.0 - 3 * KW) * 1000)  # baseline: three cars at 11.04 kW (no base load)


def test_a_dataclass_of_the_same_name_does_not_hijack_the_library_parser() -> None:
    """bench.study.flex has a dataclass named FlexOffer; xsdata would parse incoming FlexOffers into
    it (the last imported class of that name) unless the library's parser is confined to its models."""
    from nacl.bindings import crypto_sign_keypair
    from shapeshifter_uftp import transport

    import bench.study.flex  # noqa: F401 - imported for its FlexOffer dataclass
    import csms.grid.sources.uftp.service  # noqa: F401 - confines the parser on import

    public, private = crypto_sign_keypair()
    offer = FlexOffer(**flex_fields(), expiration_date_time=NOW.isoformat(), currency="EUR", unsolicited=True,
                      offer_options=[FlexOfferOption(option_reference="x", price=Decimal(1),
                                                     isps=[FlexOfferOptionISP(power=-1, start=1)])])
    offer.version = "3.1.0"
    body = transport.seal_message(offer, base64.b64encode(private).decode())
    assert type(transport.unseal_message(body, base64.b64encode(public).decode())) is FlexOffer


class Documents:
    """A DocumentStore in memory (the real ones are contract-tested elsewhere)."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, dict[str, Any]]] = {}

    async def put_document(self, scope: str, key: str, document: dict[str, Any]) -> None:
        self.docs.setdefault(scope, {})[key] = document

    async def delete_document(self, scope: str, key: str) -> bool:
        return self.docs.get(scope, {}).pop(key, None) is not None

    async def list_documents(self, scope: str, limit: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        return sorted(self.docs.get(scope, {}).items())[:limit]


async def test_offers_and_orders_survive_a_restart_and_old_unordered_offers_go() -> None:
    from csms.grid.effects.memory import GridMemory

    store = Documents()
    agr, intake = aggregator()
    agr.memory = GridMemory(store)  # type: ignore[arg-type]
    ordered = (await agr.on_flex_request(request({69: (-30_000, -25_000)})))[1].message
    order = order_for(ordered)
    await agr.on_flex_order(order)
    assert len(await agr.on_flex_request(request({70: (-30_000, -25_000)}))) == 2  # an offer never ordered
    await agr.memory.flush()
    assert len(store.docs["grid:uftp_offer"]) == 2 and len(store.docs["grid:uftp_order"]) == 1

    later, _ = aggregator()
    later.memory = GridMemory(store)  # type: ignore[arg-type]
    await later.restore()
    assert set(later.offers) == set(agr.offers) and set(later.orders) == {"o-1"}
    again = (await later.on_flex_order(order))[0].message  # the DSO re-sends the order: the same answer
    assert again.result == AcceptedRejected.ACCEPTED

    week = NOW + timedelta(days=8)
    aged, _ = aggregator()
    aged.clock = lambda: week
    aged.memory = GridMemory(store)  # type: ignore[arg-type]
    await aged.restore()
    await aged.memory.flush()
    assert set(aged.offers) == {ordered.message_id} and set(store.docs["grid:uftp_offer"]) == {ordered.message_id}


async def test_no_offer_when_the_limits_outside_the_window_leave_no_room_for_the_guarantees() -> None:
    agr, _ = aggregator()

    class Congested(Fleet):
        def drawing_sessions(self, transformer_id: str, now: datetime) -> list[DrawingSession]:
            return [DrawingSession(SessionNeed(session_id=f"s{i}", max_current_a=16.0, energy_needed_kwh=40.0,
                                               guaranteed_kwh=15.0, departure_s=2 * 3600.0), KW) for i in range(3)]

        def headroom(self, transformer_id: str, now: datetime, until_s: float) -> list[tuple[float, float, float]]:
            return [(0.0, until_s, 15.0)]  # 15 kW for three cars outside the window

    agr.fleet = Congested()
    out = await agr.on_flex_request(request({69: (-30_000, -25_000), 70: (-30_000, -25_000)}))
    assert [type(o.message).__name__ for o in out] == ["FlexRequestResponse"]  # accepted, nothing to offer
    agr.fleet = Fleet()  # the same cars without guarantees under a loose limit: an offer
    out = await agr.on_flex_request(request({69: (-30_000, -25_000), 70: (-30_000, -25_000)}))
    assert [type(o.message).__name__ for o in out] == ["FlexRequestResponse", "FlexOffer"]
