"""Random OCPP 2.0.1 station messages that pass the official JSON schemas, plus the oddities of issue 16.

A small sampler over the schemas the `ocpp` package ships (they use a small subset of JSON Schema:
type, enum, $ref, required, additionalProperties, maxLength, min/maxItems, minimum/maximum and
the date-time format). hypothesis-jsonschema would be the field's tool, but 0.23.1 does not run
with the hypothesis this project pins, and a seeded sampler is fast enough to feed thousands of
frames a second. While sampling it notes where the payload holds integers, date-times, id tokens
and strings, so an oddity can be planted at a known field and the expected answer named exactly.

Every case carries its expectation (docs/protocol.md, "Oddities"):
``ok``: a CALLRESULT, or one of the documented refusals of schema-valid input;
a CALLERROR code (and field), or a close code for frames that end the connection.
"""

from __future__ import annotations

import json
import os
import random
import string
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import ocpp

SCHEMA_DIR = os.path.join(os.path.dirname(ocpp.__file__), "v201", "schemas")
MAX_DEPTH = 32  # documented nesting limit of a payload (levels of objects and arrays)
# Station-to-CSMS messages the fuzzer sends (every action a station may send in OCPP 2.0.1).
ACTIONS = (
    "Authorize", "BootNotification", "ClearedChargingLimit", "DataTransfer", "FirmwareStatusNotification",
    "Get15118EVCertificate", "GetCertificateStatus", "Heartbeat", "LogStatusNotification", "MeterValues",
    "NotifyChargingLimit", "NotifyCustomerInformation", "NotifyDisplayMessages", "NotifyEVChargingNeeds",
    "NotifyEVChargingSchedule", "NotifyEvent", "NotifyMonitoringReport", "NotifyReport",
    "PublishFirmwareStatusNotification", "ReportChargingProfiles", "ReservationStatusUpdate",
    "SecurityEventNotification", "SignCertificate", "StatusNotification", "TransactionEvent",
)
# Weights: the messages a fleet sends most, most often.
WEIGHTS = {"TransactionEvent": 8, "MeterValues": 6, "StatusNotification": 4, "Heartbeat": 2, "Authorize": 3,
           "NotifyEvent": 2, "NotifyReport": 2, "DataTransfer": 2}
ID_TOKEN_KEYS = frozenset({"idToken", "additionalIdToken"})
TEXT = string.ascii_letters + string.digits + " -_.:*+|@=/#"
UNICODE = "äöüßéñçø€漢字カタカナ🙂🚗\u200b\u202eא"
CONTROL = "\x00\x01\x07\x08\x0b\x1b\x7f\x85\x9b"
TX_IDS = 6  # transaction ids per station: events of one transaction get merged


@lru_cache(maxsize=None)
def schema(action: str) -> dict[str, Any]:
    with open(os.path.join(SCHEMA_DIR, f"{action}Request.json"), encoding="utf-8-sig") as f:
        return json.load(f)


Path = tuple[str | int, ...]


def dotted(path: Path) -> str:
    """The field name the daemon reports: ``meterValue[0].sampledValue[1].value``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclass
class Spots:
    """Where the sampled payload holds values of each kind (paths into the payload)."""
    integers: list[Path] = field(default_factory=list)
    date_times: list[Path] = field(default_factory=list)
    id_tokens: list[Path] = field(default_factory=list)
    strings: list[Path] = field(default_factory=list)
    custom_data: list[Path] = field(default_factory=list)  # objects that may carry customData


class Sampler:
    """Schema-valid payloads at random (seeded)."""

    def __init__(self, rng: random.Random, station_id: str = "FUZZ") -> None:
        self.rng = rng
        self.station_id = station_id

    def payload(self, action: str) -> tuple[dict[str, Any], Spots]:
        doc = schema(action)
        spots = Spots()
        value = self._value(doc, doc.get("definitions", {}), (), spots, key="")
        self._domain(action, value)
        return value, spots

    # Values ------------------------------------------------------------------------------------
    def _value(self, s: dict[str, Any], defs: dict[str, Any], path: Path, spots: Spots, key: str) -> Any:
        if "$ref" in s:
            return self._value(defs[s["$ref"].rsplit("/", 1)[-1]], defs, path, spots, key)
        if "enum" in s:
            return self.rng.choice(s["enum"])
        kind = s.get("type")
        if kind == "object":
            return self._object(s, defs, path, spots)
        if kind == "array":
            n = self.rng.randint(s.get("minItems", 0), min(s.get("maxItems", 3), max(3, s.get("minItems", 0))))
            return [self._value(s["items"], defs, (*path, i), spots, key) for i in range(n)]
        if kind == "string":
            if s.get("format") == "date-time":
                spots.date_times.append(path)
                return self.date_time()
            (spots.id_tokens if key in ID_TOKEN_KEYS else spots.strings).append(path)
            return self.text(s.get("maxLength", 40))
        if kind == "integer":
            spots.integers.append(path)
            if key == "multiplier" and self.rng.random() < 0.95:  # meters use powers of ten near 0
                return self.rng.randint(-3, 3)
            low = int(s.get("minimum", -5 if self.rng.random() < 0.1 else 0))
            high = int(s.get("maximum", 2**31 - 1))
            return self.rng.choice([low, min(low + 1, high), self.rng.randint(low, min(high, 100)),
                                    self.rng.randint(low, high)])
        if kind == "number":
            low = s.get("minimum", -1e6 if self.rng.random() < 0.2 else 0.0)
            return self.rng.choice([low, round(self.rng.uniform(low, low + 50000), 3), float(self.rng.randint(0, 10))])
        if kind == "boolean":
            return self.rng.random() < 0.5
        return None

    def _object(self, s: dict[str, Any], defs: dict[str, Any], path: Path, spots: Spots) -> dict[str, Any]:
        props: dict[str, Any] = s.get("properties", {})
        required = set(s.get("required", ()))
        out: dict[str, Any] = {}
        if "customData" in props:
            spots.custom_data.append(path)
        for name, sub in props.items():
            if name == "customData":
                if self.rng.random() < 0.1:
                    out[name] = self.custom_data(self.rng.randint(1, 4))
                continue
            if name in required or self.rng.random() < 0.5:
                out[name] = self._value(sub, defs, (*path, name), spots, name)
        return out

    def text(self, max_length: int) -> str:
        roll = self.rng.random()
        n = max_length if roll < 0.05 else self.rng.randint(1, min(max_length, 24))
        alphabet = TEXT + UNICODE if roll > 0.8 else TEXT
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def date_time(self) -> str:
        year = self.rng.choice([2024, 2025, 2026, self.rng.randint(1970, 2100)])
        text = (f"{year:04d}-{self.rng.randint(1, 12):02d}-{self.rng.randint(1, 28):02d}T"
                f"{self.rng.randint(0, 23):02d}:{self.rng.randint(0, 59):02d}:{self.rng.randint(0, 59):02d}")
        if self.rng.random() < 0.3:
            text += "." + str(self.rng.randint(0, 999999)).zfill(self.rng.choice([3, 6]))
        return text + self.rng.choice(["Z", "Z", "+00:00", "+02:00", "-05:30"])

    def custom_data(self, depth: int) -> dict[str, Any]:
        """A customData object nested ``depth`` levels deep (itself the first)."""
        value: Any = self.rng.choice([1, "x", 2.5, True, None, [1, 2], "ü"])
        for _ in range(depth - 1):
            value = {"k": value}
        return {"vendorId": "fuzz", "v": value} if depth > 1 else {"vendorId": "fuzz"}

    def _domain(self, action: str, p: dict[str, Any]) -> None:
        """Keep a few ids in a small pool, so events of one transaction (and EVSEs) meet in the store."""
        if action == "TransactionEvent":
            p["transactionInfo"]["transactionId"] = f"{self.station_id}-T{self.rng.randrange(TX_IDS)}"
            p["seqNo"] = self.rng.randrange(50)


# Cases -------------------------------------------------------------------------------------------
@dataclass
class Case:
    kind: str  # what was done to the message (``valid``, ``lower-t-z`` ...)
    frame: str | bytes  # bytes: sent as a binary websocket frame
    uid: str  # the message id the answer must carry ("-1" when it cannot be read)
    expect: str  # "ok", a CALLERROR code, or "close:<code>"
    field: str | None = None  # the field a refusal must name


def _get(payload: Any, path: Path) -> Any:
    for part in path:
        payload = payload[part]
    return payload


def _set(payload: Any, path: Path, value: Any) -> None:
    _get(payload, path[:-1])[path[-1]] = value


def message_id(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + "-_.:\"\\'{}[], éü🙂"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 36)))


def frame(uid: str, action: str, payload: Any) -> str:
    return json.dumps([2, uid, action, payload], ensure_ascii=False)


class CaseMaker:
    """Cases for one station: mostly schema-valid messages, with oddities mixed in at ``odd_share``."""

    def __init__(self, seed: int, station_id: str, odd_share: float = 0.4) -> None:
        self.rng = random.Random(seed)
        self.sampler = Sampler(self.rng, station_id)
        self.odd_share = odd_share
        self.actions = list(ACTIONS)
        self.weights = [WEIGHTS.get(a, 1) for a in ACTIONS]

    def next(self) -> Case:
        action = self.rng.choices(self.actions, self.weights)[0]
        payload, spots = self.sampler.payload(action)
        uid = message_id(self.rng)
        if self.rng.random() >= self.odd_share:
            return Case("valid", frame(uid, action, payload), uid, "ok")
        maker = self.rng.choice(ODDITIES)
        return maker(self, uid, action, payload, spots) or Case("valid", frame(uid, action, payload), uid, "ok")

    # Oddities (each returns None when the payload has no place for it) ------------------------
    def _date_time(self, uid: str, action: str, payload: dict[str, Any], spots: Spots, kind: str, text: str,
                   expect: str) -> Case | None:
        if not spots.date_times:
            return None
        path = self.rng.choice(spots.date_times)
        _set(payload, path, text)
        return Case(kind, frame(uid, action, payload), uid, expect,
                    dotted(path) if expect != "ok" else None)

    def lower_t_z(self, uid: str, action: str, payload: dict[str, Any], spots: Spots) -> Case | None:
        text = self.sampler.date_time().lower().replace("+00:00", "z")
        return self._date_time(uid, action, payload, spots, "lower-t-z", text, "ok")

    def leap_second(self, uid: str, action: str, payload: dict[str, Any], spots: Spots) -> Case | None:
        text = self.rng.choice(["2016-12-31T23:59:60Z", "2016-12-31t23:59:60.25z", "2024-06-30T23:59:60+00:00"])
        return self._date_time(uid, action, payload, spots, "leap-second", text, "ok")

    def offset_without_colon(self, uid: str, action: str, payload: dict[str, Any], spots: Spots) -> Case | None:
        return self._date_time(uid, action, payload, spots, "offset-hhmm", "2024-06-01T12:00:00+0200", "ok")

    def unrepresentable_year(self, uid: str, action: str, payload: dict[str, Any], spots: Spots) -> Case | None:
        text = self.rng.choice(["0000-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00"])
        return self._date_time(uid, action, payload, spots, "year-out-of-range", text, "PropertyConstraintViolation")

    def deep_custom_data(self, uid: str, action: str, payload: dict[str, Any], spots: Spots) -> Case | None:
        if not spots.custom_data:
            return None
        path = self.rng.choice(spots.custom_data)
        depth = self.rng.choice([MAX_DEPTH + 1, 64, 250, 300, 900])
        _set(payload, (*path, "customData"), self.sampler.custom_data(depth))
        return Case("deep-customData", frame(uid, action, payload), uid, "FormatViolation")

    def shallow_custom_data(self, uid: str, action: str, payload: dict[str, Any], spots: Spots) -> Case | None:
        if not spots.custom_data:
            return None
        path = max(spots.custom_data, key=len)  # the deepest object that may carry customData
        _set(payload, (*path, "customData"), self.sampler.custom_data(MAX_DEPTH - 8 - len(path)))
        return Case("shallow-customData", frame(uid, action, payload), uid, "ok")

    def huge_integer(self, uid: str, action: str, payload: dict[str, Any], spots: Spots) -> Case | None:
        if not spots.integers:
            return None
        path = self.rng.choice(spots.integers)
        value = self.rng.choice([2**63, 2**64, 10**30, -(2**63) - 1, 2**70])
        _set(payload, path, value)
        return Case("int-beyond-int64", frame(uid, action, payload), uid, "PropertyConstraintViolation", dotted(path))

    def control_in_id_token(self, uid: str, action: str, payload: dict[str, Any], spots: Spots) -> Case | None:
        if not spots.id_tokens:
            return None
        path = self.rng.choice(spots.id_tokens)
        _set(payload, path, "TAG" + self.rng.choice(CONTROL) + "01")
        return Case("control-in-idToken", frame(uid, action, payload), uid, "PropertyConstraintViolation",
                    dotted(path))

    def control_in_text(self, uid: str, action: str, payload: dict[str, Any], spots: Spots) -> Case | None:
        if not spots.strings:
            return None
        path = self.rng.choice(spots.strings)
        if not isinstance(_get(payload, path), str):
            return None
        _set(payload, path, (self.rng.choice(CONTROL) + _get(payload, path))[:8])
        return Case("control-in-text", frame(uid, action, payload), uid, "ok")

    def binary_frame(self, uid: str, action: str, payload: dict[str, Any], spots: Spots) -> Case | None:
        return Case("binary-frame", frame(uid, action, payload).encode(), uid, "close:1003")

    def deep_frame(self, uid: str, action: str, payload: dict[str, Any], spots: Spots) -> Case | None:
        depth = self.rng.choice([MAX_DEPTH + 1, 1023, 1200, 3000])
        text = json.dumps([2, uid, "DataTransfer", {"vendorId": "x", "data": "@"}], ensure_ascii=False)
        return Case("deep-frame", text.replace('"@"', "[" * depth + "]" * depth), uid, "FormatViolation")

    def wrong_type(self, uid: str, action: str, payload: dict[str, Any], spots: Spots) -> Case | None:
        if not spots.integers:
            return None
        path = self.rng.choice(spots.integers)
        _set(payload, path, "12")
        return Case("wrong-type", frame(uid, action, payload), uid, "TypeConstraintViolation", dotted(path))

    def unknown_property(self, uid: str, action: str, payload: dict[str, Any], spots: Spots) -> Case | None:
        payload["fuzzExtra"] = 1
        return Case("unknown-property", frame(uid, action, payload), uid, "FormatViolation", "fuzzExtra")

    def garbage(self, uid: str, action: str, payload: dict[str, Any], spots: Spots) -> Case | None:
        text, expect_id, code = self.rng.choice([
            ("not json at all", "-1", "RpcFrameworkError"),
            ('[2, "' + uid.replace("\\", "").replace('"', "") + '", "Heartbeat", {}', "-1", "RpcFrameworkError"),
            ("[]", "-1", "RpcFrameworkError"),
            ('[2, 17, "Heartbeat", {}]', "-1", "RpcFrameworkError"),
            ('[2, "\\ud800", "Heartbeat", {}]', "-1", "RpcFrameworkError"),  # a lone surrogate: not Unicode
            (json.dumps([7, uid, "Heartbeat", {}]), uid, "MessageTypeNotSupported"),
            (json.dumps([2, uid, "LaunchRocket", {}]), uid, "NotImplemented"),
            (json.dumps([2, uid, "Reset", {"type": "Immediate"}]), uid, "NotSupported"),
            (json.dumps([2, uid, "Heartbeat", []]), uid, "FormatViolation"),
            (json.dumps([2, uid, 42, {}]), uid, "RpcFrameworkError"),
        ])
        return Case("garbage", text, expect_id, code)


ODDITIES = [CaseMaker.lower_t_z, CaseMaker.leap_second, CaseMaker.offset_without_colon,
            CaseMaker.unrepresentable_year, CaseMaker.deep_custom_data, CaseMaker.shallow_custom_data,
            CaseMaker.huge_integer, CaseMaker.control_in_id_token, CaseMaker.control_in_text,
            CaseMaker.binary_frame, CaseMaker.deep_frame, CaseMaker.wrong_type, CaseMaker.unknown_property,
            CaseMaker.garbage]
