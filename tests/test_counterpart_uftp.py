"""The UFTP DSO participant against the library's own AGR service, over loopback, signed both ways.

The aggregator here is a minimal stand-in (it offers exactly what is requested, at a fixed price); the
daemon's real aggregator will take its place. It uses the same library roles the daemon will.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from shapeshifter_uftp import (
    AcceptedRejected,
    FlexOffer,
    FlexOfferOption,
    FlexOfferOptionISP,
    FlexOfferResponse,
    FlexOrder,
    FlexOrderResponse,
    FlexOrderSettlementStatus,
    FlexRequest,
    FlexRequestResponse,
    FlexSettlement,
    FlexSettlementResponse,
    PayloadMessage,
    ShapeshifterAgrService,
)
from shapeshifter_uftp.exceptions import ClientTransportException
from shapeshifter_uftp.uftp.enums import AcceptedDisputed, AvailableRequested

from simulators.uftp_dso import (
    ConfigError,
    Participant,
    UftpDso,
    UftpDsoConfig,
    expand_isps,
    generate_keypair,
    isp_start,
    isps_in_day,
    public_key_of,
)

DSO_DOMAIN = "dso.netbewust.test"
AGR_DOMAIN = "agr.netbewust.test"
CONGESTION_POINT = "ean.871234567890123456"
PERIOD = date.today() + timedelta(days=1)
PRICE = Decimal("12.5000")
M = TypeVar("M", bound=PayloadMessage)


class FixedOfferAggregator(ShapeshifterAgrService):
    """Answers a FlexRequest with one option covering every requested ISP at its MaxPower, for PRICE;
    accepts orders that copy that option and settlements of them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.received: list[PayloadMessage] = []
        self.offers: dict[str, FlexOffer] = {}
        self.cond = threading.Condition()

    def record(self, message: PayloadMessage) -> None:
        with self.cond:
            self.received.append(message)
            self.cond.notify_all()

    def wait_for(self, kind: type[M], where: Callable[[M], bool] | None = None, timeout: float = 10.0) -> M:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                hit = next((m for m in self.received if isinstance(m, kind) and (where is None or where(m))), None)
                if hit is not None:
                    return hit
                if time.monotonic() > deadline:
                    raise AssertionError(f"aggregator got no {kind.__name__}")
                self.cond.wait(deadline - time.monotonic())

    def process_flex_request(self, message: FlexRequest) -> None:
        self.record(message)
        client = self.dso_client(message.sender_domain)
        client.send_flex_request_response(FlexRequestResponse(
            conversation_id=message.conversation_id, flex_request_message_id=message.message_id,
            result=AcceptedRejected.ACCEPTED))
        requested = [i for i in message.isps if i.disposition == AvailableRequested.REQUESTED]
        offer = FlexOffer(
            conversation_id=message.conversation_id, flex_request_message_id=message.message_id,
            isp_duration=message.isp_duration, time_zone=message.time_zone, period=message.period,
            congestion_point=message.congestion_point,
            expiration_date_time=(datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            offer_options=[FlexOfferOption(option_reference="cut", price=PRICE, isps=[
                FlexOfferOptionISP(power=i.max_power, start=i.start, duration=i.duration) for i in requested])])
        self.offers[str(uuid.uuid4())] = offer
        client.send_flex_offer(offer)

    def process_flex_order(self, message: FlexOrder) -> None:
        self.record(message)
        offer = next((o for o in self.offers.values() if o.message_id == message.flex_offer_message_id), None)
        copied = offer is not None and expand_isps(message.isps) == expand_isps(offer.offer_options[0].isps)
        self.dso_client(message.sender_domain).send_flex_order_response(FlexOrderResponse(
            conversation_id=message.conversation_id, flex_order_message_id=message.message_id,
            result=AcceptedRejected.ACCEPTED if copied else AcceptedRejected.REJECTED,
            rejection_reason=None if copied else "ISPs differ from the offer"))

    def process_flex_settlement(self, message: FlexSettlement) -> None:
        self.record(message)
        self.dso_client(message.sender_domain).send_flex_settlement_response(FlexSettlementResponse(
            conversation_id=message.conversation_id, flex_settlement_message_id=message.message_id,
            result=AcceptedRejected.ACCEPTED, flex_order_settlement_statuses=[
                FlexOrderSettlementStatus(order_reference=s.order_reference, disposition=AcceptedDisputed.ACCEPTED)
                for s in message.flex_order_settlements]))

    def process_flex_offer_response(self, message: FlexOfferResponse) -> None:
        self.record(message)

    def process_d_prognosis_response(self, message: Any) -> None:
        self.record(message)

    def process_flex_offer_revocation_response(self, message: Any) -> None:
        self.record(message)

    def process_flex_reservation_update(self, message: Any) -> None:
        self.record(message)

    def process_metering_response(self, message: Any) -> None:
        self.record(message)

    def process_agr_portfolio_query_response(self, message: Any) -> None:
        self.record(message)

    def process_agr_portfolio_update_response(self, message: Any) -> None:
        self.record(message)


def start_pair(auto_order: bool = False) -> tuple[UftpDso, FixedOfferAggregator]:
    """A DSO and an aggregator that know each other's endpoint and public key from config, not DNS."""
    dso_key, agr_key = generate_keypair(), generate_keypair()
    endpoints: dict[tuple[str, str], str] = {}
    agr = FixedOfferAggregator(sender_domain=AGR_DOMAIN, signing_key=agr_key[0], host="127.0.0.1", port=0,
                               key_lookup_function=lambda d, r: {(DSO_DOMAIN, "DSO"): dso_key[1]}.get((d, str(r))),
                               endpoint_lookup_function=lambda d, r: endpoints[(d, str(r))])
    agr.run_in_thread()
    agr_port = agr.server.servers[0].sockets[0].getsockname()[1]
    config = UftpDsoConfig.from_mapping({
        "domain": DSO_DOMAIN, "signing_key": dso_key[0], "auto_order": auto_order, "participants": [
            {"domain": AGR_DOMAIN, "role": "AGR", "public_key": agr_key[1],
             "endpoint": f"http://127.0.0.1:{agr_port}/shapeshifter/api/v3/message"}]})
    dso = UftpDso(config).start()
    endpoints[(DSO_DOMAIN, "DSO")] = dso.endpoint
    assert dso.public_key == dso_key[1] and dso.endpoint.startswith("http://127.0.0.1:")
    return dso, agr


@pytest.fixture
def pair() -> Iterator[tuple[UftpDso, FixedOfferAggregator]]:
    dso, agr = start_pair()
    try:
        yield dso, agr
    finally:
        dso.stop()
        agr.stop()
        agr.inbound_executor.shutdown(wait=True)
        agr.outbound_executor.shutdown(wait=True)


def test_request_offer_order_settlement_round_trip(pair: tuple[UftpDso, FixedOfferAggregator]) -> None:
    dso, agr = pair
    requested = {70: (-100_000, -50_000), 71: (-100_000, -40_000)}
    request = dso.send_flex_request(AGR_DOMAIN, CONGESTION_POINT, PERIOD, requested=requested,
                                    available={69: (-20_000, 80_000), 72: (-20_000, 80_000)})
    got = agr.wait_for(FlexRequest, lambda m: m.message_id == request.message_id)
    assert got.congestion_point == CONGESTION_POINT and str(got.isp_duration) == "PT15M"
    assert {i.start: (i.disposition, i.min_power, i.max_power) for i in got.isps}[70] == (
        AvailableRequested.REQUESTED, -100_000, -50_000)

    response = dso.wait_for(FlexRequestResponse, lambda m: m.flex_request_message_id == request.message_id)
    assert response.result == AcceptedRejected.ACCEPTED
    offer = dso.wait_for(FlexOffer, lambda m: m.flex_request_message_id == request.message_id)
    assert dso.offer_verdicts[offer.message_id] is None
    assert expand_isps(offer.offer_options[0].isps) == {70: -50_000, 71: -40_000}
    offer_response = agr.wait_for(FlexOfferResponse, lambda m: m.flex_offer_message_id == offer.message_id)
    assert offer_response.result == AcceptedRejected.ACCEPTED

    order = dso.send_flex_order(offer)
    ordered = agr.wait_for(FlexOrder, lambda m: m.message_id == order.message_id)
    assert (ordered.price, ordered.currency, ordered.option_reference) == (PRICE, "EUR", "cut")
    assert ordered.conversation_id == request.conversation_id
    order_response = dso.wait_for(FlexOrderResponse, lambda m: m.flex_order_message_id == order.message_id)
    assert order_response.result == AcceptedRejected.ACCEPTED, order_response.rejection_reason

    ref = order.order_reference
    settlement = dso.send_flex_settlement(AGR_DOMAIN, [order], baseline_w={ref: {70: 300_000, 71: 300_000}},
                                          actual_w={ref: {70: 240_000, 71: 280_000}},
                                          penalty_per_kwh=Decimal("0.50"))
    settled = agr.wait_for(FlexSettlement, lambda m: m.message_id == settlement.message_id).flex_order_settlements[0]
    rows = {i.start: (i.ordered_flex_power, i.delivered_flex_power, i.power_deficiency) for i in settled.isps}
    assert rows == {70: (-50_000, -60_000, 0), 71: (-40_000, -20_000, 20_000)}
    assert settled.penalty == Decimal("2.5000") and settled.net_settlement == PRICE - Decimal("2.5")  # 5 kWh short
    settlement_response = dso.wait_for(FlexSettlementResponse,
                                       lambda m: m.flex_settlement_message_id == settlement.message_id)
    assert settlement_response.result == AcceptedRejected.ACCEPTED
    assert [s.order_reference for s in settlement_response.flex_order_settlement_statuses] == [ref]


def test_auto_order_and_refusals() -> None:
    dso, agr = start_pair(auto_order=True)
    try:
        request = dso.send_flex_request(AGR_DOMAIN, CONGESTION_POINT, PERIOD, requested={80: (-60_000, -30_000)})
        order = agr.wait_for(FlexOrder)
        assert expand_isps(order.isps) == {80: -30_000}
        assert dso.wait_for(FlexOrderResponse).result == AcceptedRejected.ACCEPTED

        # An offer for a request this DSO never sent is answered Rejected, and never ordered.
        client = agr.dso_client(DSO_DOMAIN)
        stray = FlexOffer(flex_request_message_id=str(uuid.uuid4()), isp_duration="PT15M", period=request.period,
                          congestion_point=CONGESTION_POINT,
                          expiration_date_time=(datetime.now(UTC) + timedelta(hours=1)).isoformat(),
                          offer_options=[FlexOfferOption(option_reference="x", price=1,
                                                         isps=[FlexOfferOptionISP(power=-1, start=80)])])
        client.send_flex_offer(stray)
        verdict = agr.wait_for(FlexOfferResponse, lambda m: m.flex_offer_message_id == stray.message_id)
        assert verdict.result == AcceptedRejected.REJECTED and "unknown FlexRequestMessageID" in verdict.rejection_reason
        assert len([m for m in agr.received if isinstance(m, FlexOrder)]) == 1

        # A message signed with a key the DSO does not have for that sender is refused at transport (401).
        client.signing_key = generate_keypair()[0]
        with pytest.raises(ClientTransportException) as refused:
            client.send_flex_offer(stray)
        assert refused.value.response.status_code == 401
        # A sender missing from the config is refused too (419: no key to check it with).
        dso.participants.clear()
        with pytest.raises(ClientTransportException) as unknown:
            agr.dso_client(DSO_DOMAIN).send_flex_offer(stray)
        assert unknown.value.response.status_code == 419
    finally:
        dso.stop()
        agr.stop()
        agr.inbound_executor.shutdown(wait=True)
        agr.outbound_executor.shutdown(wait=True)


def test_config_errors_name_the_key() -> None:
    private, public = generate_keypair()
    assert public_key_of(private) == public
    good = {"domain": DSO_DOMAIN, "signing_key": private,
            "participants": [{"domain": AGR_DOMAIN, "role": "AGR", "endpoint": "http://127.0.0.1:1/x",
                              "public_key": public}]}
    assert UftpDsoConfig.from_mapping(good).participants[0] == Participant(AGR_DOMAIN, "AGR", "http://127.0.0.1:1/x",
                                                                           public)
    cases = [({"signing_key": "short"}, "signing_key"), ({"domain": ""}, "domain"),
             ({"participants": [{"domain": AGR_DOMAIN, "role": "AGR", "endpoint": "x"}]}, "participants[0].public_key"),
             ({"participants": [{**good["participants"][0], "role": "BRP"}]}, "participants[0].role"),
             ({"version": "2.0"}, "version")]
    for change, key in cases:
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            UftpDsoConfig.from_mapping({**good, **change})


def test_isp_numbering_follows_the_local_day() -> None:
    assert isps_in_day(date(2025, 1, 6)) == 96
    assert isps_in_day(date(2025, 3, 30)) == 92 and isps_in_day(date(2025, 10, 26)) == 100
    assert isp_start(date(2025, 1, 6), 1) == datetime(2025, 1, 5, 23, 0, tzinfo=UTC)
    assert isp_start(date(2025, 1, 6), 69) == datetime(2025, 1, 6, 16, 0, tzinfo=UTC)  # 17:00 in Amsterdam
    with pytest.raises(ValueError):
        isp_start(date(2025, 3, 30), 93)
