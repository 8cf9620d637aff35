"""The aggregator's decisions on each UFTP message, on the daemon's event loop.

- FlexRequest -> FlexRequestResponse (Rejected with the reason when the request is bad or stale)
  and, when the fleet has flexibility in the requested ISPs, one FlexOffer (profiles.flex_offer);
  the offer and the baseline it was computed from are stored before it is sent.
- FlexOrder -> checked against the stored offer (same congestion point, period and ISPs, scaled
  by the activation factor at most, not expired), turned into a limit per ordered ISP in the limit
  book (source ``uftp:<order reference>``, stored, restored after a restart), then answered.
  A refused order changes nothing: the limits in force stay.
- FlexSettlement -> each order's delivered flexibility per ISP, measured from the stations' meter
  data in the store, compared with the DSO's figures: Accepted or Disputed with the reason.
- FlexOfferResponse, FlexReservationUpdate and the rest are recorded (and answered where UFTP asks).

Handlers return the messages to send; the service (csms/grid/sources/uftp/service.py) sends them
from its own threads with retries, so the loop never waits on the DSO.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
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
    FlexReservationUpdate,
    FlexReservationUpdateResponse,
    FlexSettlement,
    FlexSettlementResponse,
    PayloadMessage,
)
from shapeshifter_uftp.uftp.enums import AcceptedDisputed, AvailableRequested

from csms.domain.meter import in_base_unit
from csms.grid.config import GridConfig
from csms.grid.effects.memory import GridMemory
from csms.grid.model.limits import LimitSignal, SignalError
from csms.grid.sources.uftp.config import UftpConfig
from csms.grid.sources.uftp.isp import IspError, isp_bounds, isp_seconds, zone
from csms.interfaces import Clock
from csms.store.base import TransactionStore
from profiles.flex_offer import (
    DrawingSession,
    Isp,
    Requested,
    average_kw,
    delivered_w,
    fleet_flexibility,
    offer_isps,
    offer_price,
    order_limits_kw,
    settles,
)

log = logging.getLogger("csms.grid.uftp")

OFFER = "uftp_offer"  # key: FlexOffer message id
ORDER = "uftp_order"  # key: order reference
RECENT = 50
OFFER_KEPT = timedelta(days=7)  # offers that were not ordered are forgotten this long after expiry
ENERGY = "Energy.Active.Import.Register"


class Refused(Exception):
    """A message we answer Rejected (or Disputed); ``reason`` goes to the DSO and the operator."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Fleet(Protocol):
    """What the aggregator reads of the fleet (csms.grid.service.Grid has it)."""

    def drawing_sessions(self, transformer_id: str, now: datetime) -> list[DrawingSession]: ...

    def base_load_kw(self, transformer_id: str, at: datetime) -> float: ...

    def is_under(self, station_id: str, evse_id: int, transformer_id: str) -> bool: ...

    def clock_offset_s(self, station_id: str) -> float:
        """The station's clock minus ours (its meter timestamps are shifted back by this)."""
        ...

    def headroom(self, transformer_id: str, now: datetime, until_s: float) -> list[tuple[float, float, float]]:
        """(start s, end s, kW) slots from now: what the limits leave for EV charging."""
        ...


class SignalIntake(Protocol):
    async def put_signal(self, signal: LimitSignal, *, via: str) -> bool: ...

    def refuse(self, tid: str, reason: str, signal_id: str | None, via: str) -> None: ...


@dataclass(frozen=True)
class Outgoing:
    """A message to send to ``domain`` until ``deadline`` (then it is given up and reported)."""

    domain: str
    message: PayloadMessage
    deadline: datetime
    offer_id: str | None = None  # a FlexOffer: its record says whether it got out


class UftpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter("csms_uftp_messages_total", "UFTP messages received, by type and verdict",
                                ["type", "verdict"], registry=registry)
        self.sent = Counter("csms_uftp_sent_total", "UFTP messages sent, by type and outcome",
                            ["type", "outcome"], registry=registry)
        self.active_orders = Gauge("csms_uftp_active_orders", "FlexOrders whose ISPs have not all ended",
                                   registry=registry)
        self.delivered = Gauge("csms_uftp_delivered_kw", "Delivered flexibility of the last measured ISP "
                               "(baseline minus measured, kW), per congestion point", ["congestion_point"],
                               registry=registry)


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def _when(text: str | None, what: str) -> datetime:
    if not text:
        raise Refused(f"{what} is missing")
    try:
        at = datetime.fromisoformat(str(text))
    except ValueError:
        raise Refused(f"{what} is not an ISO 8601 date-time: {text!r}") from None
    if at.tzinfo is None:
        raise Refused(f"{what} needs a UTC offset: {text!r}")
    return at.astimezone(UTC)


def _spread(isps: Sequence[Any]) -> dict[int, int]:
    """ISP number -> power (W) from elements with start, duration and power."""
    out: dict[int, int] = {}
    for isp in isps:
        for n in range(isp.start, isp.start + (isp.duration or 1)):
            out[n] = int(isp.power)
    return out


class Aggregator:
    """The AGR role's state (offers, orders, verdicts) and decisions. Not thread-safe: runs on the loop."""

    def __init__(self, cfg: UftpConfig, grid: GridConfig, intake: SignalIntake, fleet: Fleet,
                 memory: GridMemory | None, transactions: TransactionStore | None, registry: CollectorRegistry,
                 clock: Clock) -> None:
        self.cfg = cfg
        self.grid = grid
        self.intake = intake
        self.fleet = fleet
        self.memory = memory
        if memory is not None:
            memory.prioritise(OFFER, ORDER)  # an order is stored before its limit, and answered after both
        self.transactions = transactions
        self.metrics = UftpMetrics(registry)
        self.clock = clock
        self.offers: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.refusals: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.dso: dict[str, dict[str, Any]] = {p.domain: {"last_heard": None, "reachable": None, "last_error": None,
                                                          "last_sent": None} for p in cfg.participants}

    # Durable state --------------------------------------------------------------------------------
    async def restore(self) -> None:
        if self.memory is None:
            return
        now = self.clock()
        for key, record in (await self.memory.load(OFFER)).items():
            if record.get("status") != "ordered" and now - datetime.fromisoformat(record["expires_at"]) > OFFER_KEPT:
                self.memory.delete(OFFER, key)  # never ordered and long gone: nothing will refer to it
                continue
            self.offers[key] = record
        for key, record in (await self.memory.load(ORDER)).items():
            self.orders[key] = record
        self._count_active()
        if self.offers or self.orders:
            log.info("uftp: restored %d offers and %d orders", len(self.offers), len(self.orders))

    def _save(self, kind: str, key: str, record: dict[str, Any]) -> asyncio.Future[None] | None:
        return self.memory.put(kind, key, record) if self.memory is not None else None

    async def _saved(self, kind: str, key: str, record: dict[str, Any]) -> None:
        write = self._save(kind, key, record)
        if write is not None:
            await write

    # Common checks --------------------------------------------------------------------------------
    def _heard(self, message: PayloadMessage, kind: str) -> None:
        state = self.dso.setdefault(message.sender_domain or "?", {"last_heard": None, "reachable": None,
                                                                     "last_error": None, "last_sent": None})
        state["last_heard"] = _iso(self.clock())
        log.info("uftp: %s %s from %s", kind, message.message_id, message.sender_domain)

    def _fresh(self, message: PayloadMessage) -> None:
        sent = _when(message.time_stamp, "TimeStamp")
        age = (self.clock() - sent).total_seconds()
        if age > self.cfg.max_message_age_s:
            raise Refused(f"stale: sent at {sent.isoformat()}, {age:.0f} s ago (at most "
                          f"{self.cfg.max_message_age_s:g} s)")
        if age < -60:
            raise Refused(f"TimeStamp {sent.isoformat()} lies {-age:.0f} s in the future")

    def _where(self, message: Any) -> tuple[str, date, Any, int]:
        """(group, period, time zone, ISP seconds) of a flex message, or Refused."""
        tid = self.cfg.group_of(str(message.congestion_point))
        if tid is None:
            raise Refused(f"unknown CongestionPoint {message.congestion_point!r} "
                          f"(known: {', '.join(self.cfg.congestion_points)})")
        try:
            tz = zone(str(message.time_zone))
            isp_s = isp_seconds(str(message.isp_duration))
            period = message.period.to_date()
        except IspError as exc:
            raise Refused(exc.args[0]) from None
        except (AttributeError, ValueError):
            raise Refused(f"Period {message.period!r} is not a date") from None
        return tid, period, tz, isp_s

    def _refused(self, kind: str, message: PayloadMessage, reason: str, tid: str | None) -> None:
        log.warning("uftp: refused %s %s from %s: %s", kind, message.message_id, message.sender_domain, reason)
        self.metrics.messages.labels(kind, "rejected").inc()
        self.refusals.append({"type": kind, "message_id": message.message_id, "from": message.sender_domain,
                              "reason": reason, "at": _iso(self.clock())})
        if tid is not None:
            self.intake.refuse(tid, f"UFTP {kind}: {reason}", message.message_id, "uftp")

    # FlexRequest -> FlexRequestResponse (+ FlexOffer) ----------------------------------------------
    async def on_flex_request(self, request: FlexRequest) -> list[Outgoing]:
        self._heard(request, "FlexRequest")
        now = self.clock()
        domain = request.sender_domain or ""
        tid: str | None = None
        try:
            self._fresh(request)
            tid, period, tz, isp_s = self._where(request)
            expires = _when(request.expiration_date_time, "ExpirationDateTime")
            if expires <= now:
                raise Refused(f"expired at {expires.isoformat()}")
            requested = self._requested(request, period, tz, isp_s, now)
        except Refused as exc:
            self._refused("FlexRequest", request, exc.reason, tid)
            return [self._reply(domain, FlexRequestResponse(
                conversation_id=request.conversation_id, flex_request_message_id=request.message_id,
                result=AcceptedRejected.REJECTED, rejection_reason=exc.reason[:255]))]
        self.metrics.messages.labels("FlexRequest", "accepted").inc()
        answered = next((o for o in self.offers.values() if o["request_message_id"] == request.message_id
                         and o["dso"] == request.sender_domain), None)
        if answered is not None:  # a re-send: the same answer, and the same offer while it is open
            again = [self._reply(domain, FlexRequestResponse(conversation_id=request.conversation_id,
                                                             flex_request_message_id=request.message_id,
                                                             result=AcceptedRejected.ACCEPTED))]
            if datetime.fromisoformat(answered["expires_at"]) > now and answered["status"] in ("sending", "sent",
                                                                                                 "undelivered"):
                again.append(self._offer_out(answered, request))
            return again
        out = [self._reply(domain, FlexRequestResponse(conversation_id=request.conversation_id,
                                                       flex_request_message_id=request.message_id,
                                                       result=AcceptedRejected.ACCEPTED))]
        offer = await self._offer(request, tid, period, tz, isp_s, requested, expires, now)
        if offer is not None:
            out.append(offer)
        return out

    def _requested(self, request: FlexRequest, period: date, tz: Any, isp_s: int,
                   now: datetime) -> list[tuple[Requested, datetime, datetime]]:
        out = []
        for isp in request.isps or []:
            if isp.min_power > isp.max_power:
                raise Refused(f"ISP {isp.start}: MinPower {isp.min_power} W exceeds MaxPower {isp.max_power} W")
            if isp.disposition != AvailableRequested.REQUESTED:
                continue
            for n in range(isp.start, isp.start + (isp.duration or 1)):
                try:
                    start, end = isp_bounds(period, tz, isp_s, n)
                except IspError as exc:
                    raise Refused(exc.args[0]) from None
                if end > now:
                    out.append((Requested(n, isp.min_power, isp.max_power), start, end))
        if not out:
            raise Refused("no requested ISP lies in the future")
        return out

    async def _offer(self, request: FlexRequest, tid: str, period: date, tz: Any, isp_s: int,
                     requested: list[tuple[Requested, datetime, datetime]], expires: datetime,
                     now: datetime) -> Outgoing | None:
        isps = [Isp(r.number, (s - now).total_seconds(), (e - now).total_seconds()) for r, s, e in requested]
        base = [self.fleet.base_load_kw(tid, s + (e - s) / 2) for _, s, e in requested]
        sessions = self.fleet.drawing_sessions(tid, now)
        until = max([s.need.departure_s for s in sessions] + [i.end_s for i in isps])
        flex = fleet_flexibility(sessions, isps, base, self.fleet.headroom(tid, now, until))
        # What open offers and orders already promise in the same ISPs is not offered twice.
        promised = self._promised_kw(tid, now)
        flex = [replace(f, floor_kw=f.floor_kw + promised.get(_iso(s), 0.0)) for f, (_, s, _) in zip(flex, requested)]
        offered = offer_isps([r for r, _, _ in requested], flex, min_offer_w=self.cfg.min_offer_w)
        if not offered:
            log.info("uftp: no flexibility to offer for FlexRequest %s (%s, %d ISPs)", request.message_id,
                     request.congestion_point, len(requested))
            return None
        by_number = {f.number: f for f in flex}
        bounds = {r.number: (s, e) for r, s, e in requested}
        offer_expires = min(expires, now + timedelta(seconds=self.cfg.offer_validity_s))
        price = offer_price(offered, isp_s / 3600.0, self.cfg.price_eur_per_mwh)
        offer_id = str(uuid.uuid4())
        record = {
            "message_id": offer_id, "conversation_id": request.conversation_id, "dso": request.sender_domain,
            "request_message_id": request.message_id, "congestion_point": request.congestion_point, "group": tid,
            "period": period.isoformat(), "time_zone": str(request.time_zone), "isp_s": isp_s,
            "isp_duration": str(request.isp_duration), "option_reference": "curtail", "price": str(price),
            "currency": "EUR", "created_at": _iso(now), "expires_at": _iso(offer_expires), "status": "sending",
            "isps": {str(n): {"start": _iso(bounds[n][0]), "end": _iso(bounds[n][1]),
                              "baseline_kw": by_number[n].baseline_kw, "base_load_kw": round(base[i], 3),
                              "floor_kw": by_number[n].floor_kw, "offered_w": offered[n]}
                     for i, n in enumerate(r.number for r, _, _ in requested) if n in offered},
        }
        self.offers[offer_id] = record
        await self._saved(OFFER, offer_id, record)  # we must know what we offered when the order comes
        log.info("uftp: offering %s for FlexRequest %s: %s W at EUR %s", offer_id, request.message_id,
                 dict(sorted(offered.items())), price)
        return self._offer_out(record, request)

    def _offer_out(self, record: dict[str, Any], request: FlexRequest) -> Outgoing:
        """The FlexOffer message of a stored offer (the same message id when it is sent again)."""
        offered = {int(n): int(isp["offered_w"]) for n, isp in record["isps"].items()}
        message = FlexOffer(
            message_id=record["message_id"], conversation_id=request.conversation_id,
            flex_request_message_id=request.message_id, isp_duration=request.isp_duration,
            time_zone=request.time_zone, period=request.period, congestion_point=request.congestion_point,
            expiration_date_time=record["expires_at"], currency=record["currency"], contract_id=request.contract_id,
            offer_options=[FlexOfferOption(option_reference=record["option_reference"], price=Decimal(record["price"]),
                                           isps=[FlexOfferOptionISP(power=w, start=n, duration=1)
                                                 for n, w in sorted(offered.items())])])
        return Outgoing(request.sender_domain or "", message, datetime.fromisoformat(record["expires_at"]),
                        offer_id=record["message_id"])

    def _promised_kw(self, tid: str, now: datetime) -> dict[str, float]:
        """kW promised per ISP start (UTC, ISO) by open offers and orders of this group."""
        out: dict[str, float] = {}
        live = [o for o in self.offers.values() if o["status"] in ("sending", "sent", "accepted")
                and datetime.fromisoformat(o["expires_at"]) > now]
        for record in live + list(self.orders.values()):
            if record["group"] != tid:
                continue
            for isp in record["isps"].values():
                if datetime.fromisoformat(isp["end"]) > now:
                    power = isp.get("ordered_w", isp.get("offered_w", 0))
                    out[isp["start"]] = out.get(isp["start"], 0.0) + abs(power) / 1000.0
        return out

    def _reply(self, domain: str, message: PayloadMessage) -> Outgoing:
        return Outgoing(domain, message, self.clock() + timedelta(seconds=max(60.0, 10 * self.cfg.retry_max_s)))

    # FlexOfferResponse -------------------------------------------------------------------------------
    async def on_flex_offer_response(self, response: FlexOfferResponse) -> list[Outgoing]:
        self._heard(response, "FlexOfferResponse")
        record = self.offers.get(response.flex_offer_message_id)
        self.metrics.messages.labels("FlexOfferResponse", "accepted" if record else "unknown").inc()
        if record is not None and record["status"] in ("sending", "sent"):
            accepted = response.result == AcceptedRejected.ACCEPTED
            record["status"] = "accepted" if accepted else "rejected"
            record["dso_reason"] = response.rejection_reason
            await self._saved(OFFER, record["message_id"], record)
        return []

    # FlexOrder -> limits -> FlexOrderResponse ----------------------------------------------------------
    async def on_flex_order(self, order: FlexOrder) -> list[Outgoing]:
        self._heard(order, "FlexOrder")
        domain = order.sender_domain or ""
        known = self.orders.get(order.order_reference or "")
        if known is not None and known["message_id"] == order.message_id:  # a re-send: the same answer
            return [self._order_answer(domain, order, None)]
        tid: str | None = None
        try:
            if known is not None:
                raise Refused(f"OrderReference {order.order_reference!r} was already used by FlexOrder "
                              f"{known['message_id']}")
            self._fresh(order)
            tid, period, tz, isp_s = self._where(order)
            record = self._order_record(order, tid, period)
            signal = self._signal(order, record, tid)
            record["signal_id"] = signal.signal_id
            self.orders[record["order_reference"]] = record
            await self._saved(ORDER, record["order_reference"], record)
            try:
                await self.intake.put_signal(signal, via="uftp")
            except SignalError as exc:
                del self.orders[record["order_reference"]]
                if self.memory is not None:
                    self.memory.delete(ORDER, record["order_reference"])
                raise Refused(exc.reason) from None
        except Refused as exc:
            self._refused("FlexOrder", order, exc.reason, tid)
            return [self._order_answer(domain, order, exc.reason)]
        offer = self.offers.get(order.flex_offer_message_id or "")
        if offer is not None:
            offer["status"] = "ordered"
            await self._saved(OFFER, offer["message_id"], offer)
        self.metrics.messages.labels("FlexOrder", "accepted").inc()
        self._count_active()
        log.info("uftp: FlexOrder %s (%s) accepted: limits %s kW on %s", order.message_id, order.order_reference,
                 {n: i["limit_kw"] for n, i in record["isps"].items()}, tid)
        return [self._order_answer(domain, order, None)]

    def _order_answer(self, domain: str, order: FlexOrder, reason: str | None) -> Outgoing:
        return self._reply(domain, FlexOrderResponse(
            conversation_id=order.conversation_id, flex_order_message_id=order.message_id,
            result=AcceptedRejected.REJECTED if reason else AcceptedRejected.ACCEPTED,
            rejection_reason=reason[:255] if reason else None))

    def _order_record(self, order: FlexOrder, tid: str, period: date) -> dict[str, Any]:
        if not order.order_reference:
            raise Refused("OrderReference is missing")
        offer = self.offers.get(order.flex_offer_message_id or "")
        if offer is None:
            raise Refused(f"unknown FlexOfferMessageID {order.flex_offer_message_id!r}")
        if offer.get("dso") != order.sender_domain:
            raise Refused("the FlexOffer was made to another participant")
        if (offer["congestion_point"], offer["period"]) != (order.congestion_point, period.isoformat()):
            raise Refused("CongestionPoint or Period differs from the FlexOffer")
        if isp_seconds(str(order.isp_duration)) != offer["isp_s"]:
            raise Refused("ISP-Duration differs from the FlexOffer")
        now = self.clock()
        if datetime.fromisoformat(offer["expires_at"]) <= now:
            raise Refused(f"the FlexOffer expired at {offer['expires_at']}")
        ordered = _spread(order.isps or [])
        offered = {int(n): isp["offered_w"] for n, isp in offer["isps"].items()}
        if set(ordered) != set(offered):
            raise Refused(f"ordered ISPs {sorted(ordered)} differ from the offered {sorted(offered)}")
        for n, w in ordered.items():
            if w * offered[n] < 0 or abs(w) > abs(offered[n]):
                raise Refused(f"ISP {n}: ordered {w} W, offered {offered[n]} W (only the offered power, "
                              f"scaled down by an activation factor, can be ordered)")
        live = {n: w for n, w in ordered.items() if datetime.fromisoformat(offer["isps"][str(n)]["end"]) > now}
        if not live:
            raise Refused("every ordered ISP has already ended")
        baseline = {n: float(offer["isps"][str(n)]["baseline_kw"]) for n in live}
        limits = order_limits_kw(baseline, live, self.grid.transformers[tid].capacity_kw)
        return {
            "order_reference": order.order_reference, "message_id": order.message_id,
            "offer_message_id": offer["message_id"], "dso": order.sender_domain, "group": tid,
            "congestion_point": order.congestion_point, "period": period.isoformat(), "isp_s": offer["isp_s"],
            "price": str(order.price), "currency": order.currency, "received_at": _iso(now),
            "issued_at": str(order.time_stamp), "status": "active",
            "isps": {str(n): {**{k: offer["isps"][str(n)][k] for k in ("start", "end", "baseline_kw", "base_load_kw")},
                              "ordered_w": w, "limit_kw": limits[n], "measured_kw": None, "delivered_w": None}
                     for n, w in sorted(live.items())},
        }

    def _signal(self, order: FlexOrder, record: dict[str, Any], tid: str) -> LimitSignal:
        intervals = tuple((datetime.fromisoformat(i["start"]), datetime.fromisoformat(i["end"]), float(i["limit_kw"]))
                          for i in record["isps"].values())
        digest = hashlib.sha256(json.dumps(record["isps"], sort_keys=True).encode()).hexdigest()
        return LimitSignal(signal_id=order.message_id or record["order_reference"], transformer_id=tid,
                           source=f"uftp:{record['order_reference']}", intervals=intervals,
                           received_at=self.clock(), issued_at=_when(order.time_stamp, "TimeStamp"), digest=digest)

    def _count_active(self) -> None:
        now = self.clock()
        active = 0
        for record in self.orders.values():
            if record["status"] == "active" and any(datetime.fromisoformat(i["end"]) > now
                                                    for i in record["isps"].values()):
                active += 1
        self.metrics.active_orders.set(active)

    # Measuring what was delivered -------------------------------------------------------------------
    async def measure(self, settle_after_s: float, again: set[str] | None = None) -> int:
        """Fill in measured load and delivered flexibility for every ordered ISP that ended at least
        ``settle_after_s`` ago (meter data arrives late); the orders in ``again`` are measured anew
        (a settlement: stations that were offline may have sent their readings since). Returns how
        many ISPs were measured."""
        if self.transactions is None:
            return 0
        now = self.clock()
        done = 0
        for record in self.orders.values():
            changed = False
            fresh = again is not None and record["order_reference"] in again
            for isp in record["isps"].values():
                end = datetime.fromisoformat(isp["end"])
                if (isp["measured_kw"] is not None and not fresh) or (now - end).total_seconds() < settle_after_s:
                    continue
                start = datetime.fromisoformat(isp["start"])
                measured = await self.measured_ev_kw(record["group"], start, end)
                isp["measured_kw"] = round(measured, 3)
                baseline_ev = float(isp["baseline_kw"]) - float(isp.get("base_load_kw", 0.0))
                isp["delivered_w"] = delivered_w(baseline_ev, measured)
                self.metrics.delivered.labels(record["congestion_point"]).set(-isp["delivered_w"] / 1000.0)
                changed = True
                done += 1
            if changed:
                if all(i["measured_kw"] is not None for i in record["isps"].values()):
                    record["status"] = "measured"
                await self._saved(ORDER, record["order_reference"], record)
        if done:
            self._count_active()
        return done

    async def measured_ev_kw(self, tid: str, start: datetime, end: datetime) -> float:
        """The group's EV load over [start, end): each transaction's energy register from the store."""
        assert self.transactions is not None
        total = 0.0
        for tx in await self.transactions.list_transactions(limit=100000):
            if tx.evse_id is None or not self.fleet.is_under(tx.station_id, tx.evse_id, tid):
                continue
            if (tx.started_at is not None and tx.started_at >= end) or (tx.ended_at is not None
                                                                         and tx.ended_at <= start):
                continue
            offset = self.fleet.clock_offset_s(tx.station_id)
            samples = await self.transactions.meter_samples(tx.station_id, transaction_id=tx.transaction_id,
                                                            since=start - timedelta(minutes=30, seconds=-offset))
            register = sorted(((datetime.fromisoformat(s["timestamp"]) - start).total_seconds() - offset,
                               in_base_unit(float(s["value"]), s["unit"])) for s in samples
                              if s["measurand"] == ENERGY and not s["phase"])
            kw = average_kw(register, 0.0, (end - start).total_seconds())
            total += kw or 0.0
        return total

    # FlexSettlement -> FlexSettlementResponse ------------------------------------------------------------
    async def on_flex_settlement(self, settlement: FlexSettlement, settle_after_s: float) -> list[Outgoing]:
        self._heard(settlement, "FlexSettlement")
        await self.measure(settle_after_s, {item.order_reference for item in settlement.flex_order_settlements or []})
        statuses = []
        for item in settlement.flex_order_settlements or []:
            reason = self._dispute(item)
            statuses.append(FlexOrderSettlementStatus(
                order_reference=item.order_reference,
                disposition=AcceptedDisputed.DISPUTED if reason else AcceptedDisputed.ACCEPTED,
                dispute_reason=reason[:255] if reason else None))
            record = self.orders.get(item.order_reference or "")
            if record is not None:
                record["settlement"] = {"message_id": settlement.message_id, "disputed": reason,
                                        "dso_delivered_w": {str(i.start): i.delivered_flex_power for i in item.isps},
                                        "at": _iso(self.clock())}
                record["status"] = "settled"
                await self._saved(ORDER, record["order_reference"], record)
        disputed = sum(1 for s in statuses if s.disposition == AcceptedDisputed.DISPUTED)
        self.metrics.messages.labels("FlexSettlement", "disputed" if disputed else "accepted").inc()
        log.info("uftp: FlexSettlement %s: %d orders, %d disputed", settlement.message_id, len(statuses), disputed)
        return [self._reply(settlement.sender_domain or "", FlexSettlementResponse(
            conversation_id=settlement.conversation_id, flex_settlement_message_id=settlement.message_id,
            result=AcceptedRejected.ACCEPTED, flex_order_settlement_statuses=statuses))]

    def _dispute(self, item: Any) -> str | None:
        record = self.orders.get(item.order_reference or "")
        if record is None:
            return f"unknown OrderReference {item.order_reference!r}"
        problems = []
        for isp in item.isps or []:
            for n in range(isp.start, isp.start + (isp.duration or 1)):
                ours = record["isps"].get(str(n))
                if ours is None:
                    problems.append(f"ISP {n} was not ordered")
                    continue
                if isp.ordered_flex_power != ours["ordered_w"]:
                    problems.append(f"ISP {n}: ordered {ours['ordered_w']} W, not {isp.ordered_flex_power} W")
                elif ours["delivered_w"] is None:
                    problems.append(f"ISP {n}: not measured yet")
                elif not settles(ours["delivered_w"], isp.delivered_flex_power, ours["ordered_w"],
                                 self.cfg.settlement_tolerance_w, self.cfg.settlement_tolerance_share):
                    problems.append(f"ISP {n}: we measured {ours['delivered_w']} W delivered, "
                                    f"not {isp.delivered_flex_power} W")
        return "; ".join(problems) or None

    # The rest ----------------------------------------------------------------------------------------
    async def on_flex_reservation_update(self, update: FlexReservationUpdate) -> list[Outgoing]:
        """Recorded and acknowledged: bilateral reservations are not used to plan (docs/grid-interfaces.md)."""
        self._heard(update, "FlexReservationUpdate")
        self.metrics.messages.labels("FlexReservationUpdate", "accepted").inc()
        return [self._reply(update.sender_domain or "", FlexReservationUpdateResponse(
            conversation_id=update.conversation_id, flex_reservation_update_message_id=update.message_id,
            result=AcceptedRejected.ACCEPTED))]

    async def on_other(self, message: PayloadMessage) -> list[Outgoing]:
        self._heard(message, type(message).__name__)
        self.metrics.messages.labels(type(message).__name__, "recorded").inc()
        return []

    # Outcome of sending (reported by the service) -----------------------------------------------------
    async def sent(self, item: Outgoing, error: str | None) -> None:
        kind = type(item.message).__name__
        state = self.dso.setdefault(item.domain, {"last_heard": None, "reachable": None, "last_error": None,
                                                  "last_sent": None})
        state["reachable"] = error is None
        if error is None:
            state["last_sent"] = _iso(self.clock())
        else:
            state["last_error"] = f"{kind}: {error}"
        self.metrics.sent.labels(kind, "sent" if error is None else "failed").inc()
        record = self.offers.get(item.offer_id or "")
        if record is not None and record["status"] in ("sending", "undelivered"):
            record["status"] = "sent" if error is None else "undelivered"
            if error is not None:
                record["reason"] = error
            await self._saved(OFFER, record["message_id"], record)

    def send_failed(self, item: Outgoing, error: str) -> None:
        """A send attempt failed (it is retried until its deadline)."""
        state = self.dso.setdefault(item.domain, {"last_heard": None, "reachable": None, "last_error": None,
                                                  "last_sent": None})
        state["reachable"] = False
        state["last_error"] = f"{type(item.message).__name__}: {error}"
        self.metrics.sent.labels(type(item.message).__name__, "retry").inc()

    # Status -------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = self.clock()
        for record in self.offers.values():
            if record["status"] in ("sending", "sent", "accepted") and datetime.fromisoformat(record["expires_at"]) <= now:
                record["status"] = "expired"  # not ordered in time: the flexibility is free again
        return {"domain": self.cfg.domain, "dso": self.dso,
                "offers": sorted(self.offers.values(), key=lambda r: r["created_at"])[-RECENT:],
                "orders": sorted(self.orders.values(), key=lambda r: r["received_at"])[-RECENT:],
                "refusals": list(self.refusals)}
