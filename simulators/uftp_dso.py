"""A UFTP (Shapeshifter) DSO participant for tests and labs, built on the `shapeshifter-uftp` library.

It is the library's own DSO role: its service receives FlexRequestResponse, FlexOffer,
FlexOrderResponse, FlexSettlementResponse (and D-Prognosis, Metering, revocations) on a signed XML
endpoint, and its DSO->AGR client sends FlexRequest, FlexOrder and FlexSettlement. Counterparts'
endpoints and public keys come from the config, never from DNS: the library takes them through its
`endpoint_lookup_function` and `key_lookup_function` hooks. The service binds 127.0.0.1 (port 0 picks
a free one).

The library is thread based (uvicorn in a thread, `requests` for sending); this class keeps that and
offers blocking helpers plus `expect()` for asyncio tests.

    python -m simulators.uftp_dso keygen
    python -m simulators.uftp_dso run --config dso.yaml --auto-order \\
        --request agr.example.com --congestion-point ean.871234567890123456 --requested 69-80=-50000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
import uuid
from base64 import b64decode, b64encode
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Self, TypeVar
from zoneinfo import ZoneInfo

import yaml
from fastapi.exceptions import HTTPException
from nacl.bindings import crypto_sign_keypair
from shapeshifter_uftp import (
    AcceptedRejected,
    ContractSettlement,
    ContractSettlementISP,
    ContractSettlementPeriod,
    DPrognosis,
    DPrognosisResponse,
    FlexOffer,
    FlexOfferResponse,
    FlexOfferRevocation,
    FlexOfferRevocationResponse,
    FlexOrder,
    FlexOrderISP,
    FlexOrderSettlement,
    FlexOrderSettlementISP,
    FlexRequest,
    FlexRequestISP,
    FlexSettlement,
    Metering,
    MeteringResponse,
    PayloadMessage,
    ShapeshifterDsoAgrClient,
    ShapeshifterDsoService,
)
from shapeshifter_uftp import transport as shapeshifter_transport
from shapeshifter_uftp.uftp.enums import AvailableRequested
from xsdata.models.datatype import XmlDate, XmlDuration

DEFAULT_PATH = "/shapeshifter/api/v3/message"


def _confine_library_parser() -> None:
    """The library finds the class of each incoming message by its root name among every dataclass
    imported in the process (xsdata takes the last one named e.g. ``FlexOffer``, such as
    bench.study.flex.FlexOffer); confine it to the library's own models."""
    context = shapeshifter_transport._context
    if context.models_package != "shapeshifter_uftp":
        context.models_package = "shapeshifter_uftp"
        context.xsi_cache.clear()
        context.sys_modules = 0


_confine_library_parser()
M = TypeVar("M", bound=PayloadMessage)


class ConfigError(ValueError):
    """A bad DSO config; the message names the key."""


class UnknownParticipantError(HTTPException):
    """A sender or recipient missing from the config: answered 419 (the library's 'key not found')."""

    def __init__(self, domain: str, role: str) -> None:
        super().__init__(419, f"no {role} participant {domain!r} in the config")


def generate_keypair() -> tuple[str, str]:
    """(private, public) NaCl signing keys, base64, as the library's signing_key / public key take them."""
    public, private = crypto_sign_keypair()
    return b64encode(private).decode(), b64encode(public).decode()


def public_key_of(private_key: str) -> str:
    """An Ed25519 secret key (64 bytes) ends with its public key."""
    return b64encode(b64decode(private_key)[32:]).decode()


@dataclass(frozen=True)
class Participant:
    domain: str
    role: str
    endpoint: str
    public_key: str


@dataclass
class UftpDsoConfig:
    domain: str
    signing_key: str
    participants: list[Participant] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    path: str = DEFAULT_PATH
    version: str = "3.1.0"
    time_zone: str = "Europe/Amsterdam"
    isp_minutes: int = 15
    currency: str = "EUR"
    auto_order: bool = False
    request_timeout_s: float = 5.0

    @classmethod
    def from_mapping(cls, data: Any) -> UftpDsoConfig:
        """Read a config mapping (e.g. parsed YAML); every error names the key at fault."""
        if not isinstance(data, dict):
            raise ConfigError("the DSO config must be a mapping")
        for key in ("domain", "signing_key"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ConfigError(f"{key}: required text")
        try:
            if len(b64decode(data["signing_key"], validate=True)) != 64:
                raise ValueError
        except ValueError:
            raise ConfigError("signing_key: base64 of a 64-byte NaCl signing key (see `keygen`)") from None
        participants = []
        for i, item in enumerate(data.get("participants") or []):
            where = f"participants[{i}]"
            if not isinstance(item, dict):
                raise ConfigError(f"{where}: must be a mapping")
            for key in ("domain", "role", "endpoint", "public_key"):
                if not isinstance(item.get(key), str) or not item[key]:
                    raise ConfigError(f"{where}.{key}: required text")
            if item["role"] not in ("AGR", "CRO"):
                raise ConfigError(f"{where}.role: AGR or CRO, not {item['role']!r}")
            participants.append(Participant(item["domain"], item["role"], item["endpoint"], item["public_key"]))
        extra = {k: data[k] for k in ("host", "port", "path", "version", "time_zone", "isp_minutes", "currency",
                                      "auto_order", "request_timeout_s") if k in data}
        if extra.get("version", "3.1.0") not in ("3.0.0", "3.1.0"):
            raise ConfigError("version: 3.0.0 or 3.1.0")
        return cls(domain=data["domain"], signing_key=data["signing_key"], participants=participants, **extra)


# ---- ISP arithmetic ---------------------------------------------------------------------------

def isps_in_day(period: date, time_zone: str = "Europe/Amsterdam", isp_minutes: int = 15) -> int:
    """96 ISPs of 15 minutes on most days; 92 and 100 on the daylight-saving switch days."""
    tz = ZoneInfo(time_zone)
    start = datetime.combine(period, datetime.min.time(), tzinfo=tz)
    end = datetime.combine(period + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    return int((end.astimezone(UTC) - start.astimezone(UTC)) / timedelta(minutes=isp_minutes))


def isp_start(period: date, number: int, time_zone: str = "Europe/Amsterdam", isp_minutes: int = 15) -> datetime:
    """When ISP `number` (the first of the day is 1) begins, in UTC."""
    if not 1 <= number <= isps_in_day(period, time_zone, isp_minutes):
        raise ValueError(f"ISP {number} is not in {period}")
    midnight = datetime.combine(period, datetime.min.time(), tzinfo=ZoneInfo(time_zone)).astimezone(UTC)
    return midnight + timedelta(minutes=isp_minutes * (number - 1))


def expand_isps(isps: Sequence[Any]) -> dict[int, int]:
    """ISP number -> power in W, from elements with start/duration and power (or max_power)."""
    out: dict[int, int] = {}
    for isp in isps:
        power = isp.power if hasattr(isp, "power") else isp.max_power
        for number in range(isp.start, isp.start + (isp.duration or 1)):
            out[number] = power
    return out


# ---- the DSO service ----------------------------------------------------------------------------

class _DsoService(ShapeshifterDsoService):
    """The library's DSO service; every received message is handed to the owner."""

    def __init__(self, owner: UftpDso, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.owner = owner

    def process_flex_request_response(self, message: Any) -> None:
        self.owner._record(message)

    def process_flex_offer(self, message: FlexOffer) -> None:
        self.owner._on_flex_offer(message)

    def process_flex_order_response(self, message: Any) -> None:
        self.owner._record(message)

    def process_flex_settlement_response(self, message: Any) -> None:
        self.owner._record(message)

    def process_flex_offer_revocation(self, message: FlexOfferRevocation) -> None:
        self.owner._record(message)
        self.owner.client(message.sender_domain).send_flex_offer_revocation_response(FlexOfferRevocationResponse(
            conversation_id=message.conversation_id, flex_offer_revocation_message_id=message.message_id,
            result=AcceptedRejected.ACCEPTED))

    def process_d_prognosis(self, message: DPrognosis) -> None:
        self.owner._record(message)
        self.owner.client(message.sender_domain).send_d_prognosis_response(DPrognosisResponse(
            conversation_id=message.conversation_id, d_prognosis_message_id=message.message_id,
            result=AcceptedRejected.ACCEPTED, flex_order_statuses=[]))

    def process_metering(self, message: Metering) -> None:
        self.owner._record(message)
        self.owner.client(message.sender_domain).send_metering_response(MeteringResponse(
            conversation_id=message.conversation_id, metering_message_id=message.message_id,
            result=AcceptedRejected.ACCEPTED))

    def process_flex_reservation_update_response(self, message: Any) -> None:
        self.owner._record(message)

    def process_dso_portfolio_query_response(self, message: Any) -> None:
        self.owner._record(message)

    def process_dso_portfolio_update_response(self, message: Any) -> None:
        self.owner._record(message)


class UftpDso:
    """`with UftpDso(config) as dso:` -> `dso.endpoint`, `dso.send_flex_request(...)`, `dso.wait_for(...)`."""

    def __init__(self, config: UftpDsoConfig) -> None:
        self.config = config
        self.participants = {(p.domain, p.role): p for p in config.participants}
        self.received: list[PayloadMessage] = []
        self.sent: list[PayloadMessage] = []
        self.offer_verdicts: dict[str, str | None] = {}  # FlexOffer message id -> rejection reason (None = accepted)
        self._cond = threading.Condition()
        self.service = _DsoService(self, sender_domain=config.domain, signing_key=config.signing_key,
                                   key_lookup_function=self._key, endpoint_lookup_function=self._endpoint,
                                   host=config.host, port=config.port, path=config.path, version=config.version)
        self.port = config.port

    # lifecycle

    def start(self) -> Self:
        self.service.run_in_thread()
        self.port = self.service.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.service.stop()
        self.service.inbound_executor.shutdown(wait=True)
        self.service.outbound_executor.shutdown(wait=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"http://{self.config.host}:{self.port}{self.config.path}"

    @property
    def public_key(self) -> str:
        return public_key_of(self.config.signing_key)

    def add_participant(self, participant: Participant) -> None:
        self.participants[(participant.domain, participant.role)] = participant

    # lookups the library calls instead of DNS

    def _participant(self, domain: str, role: str) -> Participant:
        found = self.participants.get((domain, str(role)))
        if found is None:
            raise UnknownParticipantError(domain, str(role))
        return found

    def _key(self, domain: str, role: str) -> str:
        return self._participant(domain, role).public_key

    def _endpoint(self, domain: str, role: str) -> str:
        return self._participant(domain, role).endpoint

    def client(self, agr_domain: str) -> ShapeshifterDsoAgrClient:
        client: ShapeshifterDsoAgrClient = self.service.agr_client(agr_domain, self.config.version)
        client.request_timeout = self.config.request_timeout_s
        return client

    # received messages

    def _record(self, message: PayloadMessage) -> None:
        with self._cond:
            self.received.append(message)
            self._cond.notify_all()

    def wait_for(self, kind: type[M], where: Callable[[M], bool] | None = None, timeout: float = 10.0) -> M:
        """The first received message of `kind` that satisfies `where`; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self.received:
                    if isinstance(message, kind) and (where is None or where(message)):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {kind.__name__} within {timeout} s; got "
                                         f"{[type(m).__name__ for m in self.received]}")
                self._cond.wait(left)

    async def expect(self, kind: type[M], where: Callable[[M], bool] | None = None, timeout: float = 10.0) -> M:
        return await asyncio.to_thread(self.wait_for, kind, where, timeout)

    def _request_for(self, offer: FlexOffer) -> FlexRequest | None:
        return next((m for m in self.sent if isinstance(m, FlexRequest) and m.message_id ==
                     offer.flex_request_message_id), None)

    def offer_problem(self, offer: FlexOffer) -> str | None:
        """Why this DSO would reject the offer: unknown request, other congestion point or period, ISPs
        outside the request, or expired."""
        if offer.unsolicited:
            return None
        request = self._request_for(offer)
        if request is None:
            return f"unknown FlexRequestMessageID {offer.flex_request_message_id}"
        if (offer.congestion_point, str(offer.period)) != (request.congestion_point, str(request.period)):
            return "congestion point or period differs from the FlexRequest"
        requested = expand_isps(request.isps)
        for option in offer.offer_options:
            if not set(expand_isps(option.isps)) <= set(requested):
                return f"option {option.option_reference} offers ISPs outside the FlexRequest"
        if datetime.fromisoformat(offer.expiration_date_time) < datetime.now(UTC):
            return "offer expired"
        return None

    def _on_flex_offer(self, offer: FlexOffer) -> None:
        problem = self.offer_problem(offer)
        self.offer_verdicts[offer.message_id or ""] = problem
        self._record(offer)
        self.client(offer.sender_domain).send_flex_offer_response(FlexOfferResponse(
            conversation_id=offer.conversation_id, flex_offer_message_id=offer.message_id,
            result=AcceptedRejected.REJECTED if problem else AcceptedRejected.ACCEPTED, rejection_reason=problem))
        if problem is None and self.config.auto_order:
            self.send_flex_order(offer)

    # sending

    def _flex_fields(self, period: date, congestion_point: str) -> dict[str, Any]:
        return {"isp_duration": XmlDuration(f"PT{self.config.isp_minutes}M"), "time_zone": self.config.time_zone,
                "period": XmlDate.from_date(period), "congestion_point": congestion_point}

    def _send(self, message: M, agr_domain: str, send: Callable[[ShapeshifterDsoAgrClient, M], None]) -> M:
        message.recipient_domain = agr_domain
        with self._cond:
            self.sent.append(message)
        send(self.client(agr_domain), message)  # fills ids and timestamps, signs, posts; raises on non-200
        return message

    def send_flex_request(self, agr_domain: str, congestion_point: str, period: date, *,
                          requested: dict[int, tuple[int, int]], available: dict[int, tuple[int, int]] | None = None,
                          revision: int = 1, expires_in: timedelta = timedelta(hours=1),
                          contract_id: str | None = None, service_type: str | None = None) -> FlexRequest:
        """Ask for flexibility: ISP number -> (MinPower, MaxPower) in W, relative to the baseline.

        Power is positive for consumption; a request to cut consumption by at least 50 kW in ISP 70 is
        `{70: (-100_000, -50_000)}` (at most 100 kW). `available` gives the room in other ISPs."""
        isps = [FlexRequestISP(disposition=AvailableRequested.REQUESTED, min_power=lo, max_power=hi, start=n)
                for n, (lo, hi) in sorted(requested.items())]
        isps += [FlexRequestISP(disposition=AvailableRequested.AVAILABLE, min_power=lo, max_power=hi, start=n)
                 for n, (lo, hi) in sorted((available or {}).items())]
        message = FlexRequest(**self._flex_fields(period, congestion_point), isps=isps, revision=revision,
                              expiration_date_time=(datetime.now(UTC) + expires_in).isoformat(),
                              contract_id=contract_id, service_type=service_type)
        return self._send(message, agr_domain, lambda c, m: c.send_flex_request(m))

    def send_flex_order(self, offer: FlexOffer, *, option_reference: str | None = None,
                        activation_factor: Decimal = Decimal("1.00"), order_reference: str | None = None) -> FlexOrder:
        """Order one option of an offer; its ISP list is copied (scaled by the activation factor)."""
        options = {o.option_reference: o for o in offer.offer_options}
        option = options[option_reference] if option_reference else offer.offer_options[0]
        isps = [FlexOrderISP(power=round(isp.power * activation_factor), start=isp.start, duration=isp.duration)
                for isp in option.isps]
        message = FlexOrder(**self._flex_fields(offer.period.to_date(), offer.congestion_point), isps=isps,
                            flex_offer_message_id=offer.message_id, contract_id=offer.contract_id,
                            d_prognosis_message_id=offer.d_prognosis_message_id,
                            baseline_reference=offer.baseline_reference,
                            price=Decimal(option.price) * activation_factor, currency=offer.currency,
                            order_reference=order_reference or str(uuid.uuid4()),
                            option_reference=option.option_reference, activation_factor=activation_factor)
        message.conversation_id = offer.conversation_id
        return self._send(message, offer.sender_domain or "", lambda c, m: c.send_flex_order(m))

    def send_flex_settlement(self, agr_domain: str, orders: Sequence[FlexOrder], *,
                             baseline_w: dict[str, dict[int, int]], actual_w: dict[str, dict[int, int]],
                             penalty_per_kwh: Decimal = Decimal(0)) -> FlexSettlement:
        """Settle orders from metering: per order reference, ISP -> baseline and actual average power (W).

        Delivered flex = actual - baseline; the deficiency is the ordered flex not delivered (same sign);
        net settlement = price - penalty (pay as bid)."""
        if not orders:
            raise ValueError("nothing to settle")
        settlements = []
        for order in orders:
            ref = order.order_reference
            isps = []
            shortfall_wh = 0
            for number, ordered in sorted(expand_isps(order.isps).items()):
                baseline, actual = baseline_w[ref][number], actual_w[ref][number]
                delivered = actual - baseline
                deficiency = max(0, abs(ordered) - abs(delivered)) if delivered * ordered > 0 else abs(ordered)
                shortfall_wh += deficiency * self.config.isp_minutes // 60
                isps.append(FlexOrderSettlementISP(start=number, baseline_power=baseline, ordered_flex_power=ordered,
                                                   actual_power=actual, delivered_flex_power=delivered,
                                                   power_deficiency=deficiency))
            penalty = penalty_per_kwh * Decimal(shortfall_wh) / 1000
            settlements.append(FlexOrderSettlement(
                isps=isps, order_reference=ref, period=order.period, contract_id=order.contract_id,
                congestion_point=order.congestion_point, price=order.price, penalty=penalty,
                net_settlement=order.price - penalty))
        periods = sorted({o.period.to_date() for o in orders})
        # The library's model insists on at least one ContractSettlement (the XSD allows none): report
        # an empty reservation for the first period.
        contract = ContractSettlement(periods=[ContractSettlementPeriod(
            period=XmlDate.from_date(periods[0]), isps=[ContractSettlementISP(start=1, reserved_power=0)])])
        message = FlexSettlement(flex_order_settlements=settlements, contract_settlements=[contract],
                                 period_start=XmlDate.from_date(periods[0]), period_end=XmlDate.from_date(periods[-1]),
                                 currency=self.config.currency)
        return self._send(message, agr_domain, lambda c, m: c.send_flex_settlement(m))


# ---- command line ---------------------------------------------------------------------------------

def _parse_isps(specs: Sequence[str]) -> dict[int, tuple[int, int]]:
    """'69-80=-50000' (MaxPower; MinPower twice it) or '69=-100000:-50000' -> ISP -> (min, max) W."""
    out: dict[int, tuple[int, int]] = {}
    for spec in specs:
        span, _, power = spec.partition("=")
        first, _, last = span.partition("-")
        low_text, _, high_text = power.partition(":")
        high = int(high_text or low_text)
        low = int(low_text) if high_text else 2 * high
        for number in range(int(first), int(last or first) + 1):
            out[number] = (min(low, high), max(low, high))
    return out


def _run(args: argparse.Namespace) -> int:
    config = UftpDsoConfig.from_mapping(yaml.safe_load(Path(args.config).read_text()))
    config.auto_order = config.auto_order or args.auto_order
    with UftpDso(config) as dso:
        print(json.dumps({"endpoint": dso.endpoint, "domain": config.domain, "public_key": dso.public_key}),
              flush=True)
        if args.request:
            period = date.fromisoformat(args.period) if args.period else date.today() + timedelta(days=1)
            sent = dso.send_flex_request(args.request, args.congestion_point, period,
                                         requested=_parse_isps(args.requested))
            print(json.dumps({"flex_request": sent.message_id}), flush=True)
        deadline = time.monotonic() + args.run_seconds
        seen = 0
        while time.monotonic() < deadline:
            with dso._cond:
                dso._cond.wait(min(1.0, max(0.0, deadline - time.monotonic())))
                fresh = dso.received[seen:]
                seen = len(dso.received)
            for message in fresh:
                print(json.dumps({"received": type(message).__name__, "from": message.sender_domain,
                                  "message_id": message.message_id}), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.uftp_dso", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("keygen", help="print a new signing key pair (base64)")
    run = sub.add_parser("run", help="run the DSO endpoint; optionally send one FlexRequest")
    run.add_argument("--config", required=True, help="YAML: domain, signing_key, participants[], host, port, ...")
    run.add_argument("--auto-order", action="store_true", help="order every acceptable FlexOffer at once")
    run.add_argument("--request", metavar="AGR_DOMAIN", help="send a FlexRequest to this aggregator")
    run.add_argument("--congestion-point", default="ean.871234567890123456")
    run.add_argument("--period", help="YYYY-MM-DD (default: tomorrow)")
    run.add_argument("--requested", nargs="*", default=["69-80=-50000"], help="ISP[-ISP]=MaxPower[:MinPower] in W")
    run.add_argument("--run-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    if args.command == "keygen":
        private, public = generate_keypair()
        print(json.dumps({"signing_key": private, "public_key": public}))
        return 0
    try:
        return _run(args)
    except (ConfigError, OSError, yaml.YAMLError) as exc:
        print(f"uftp_dso: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
