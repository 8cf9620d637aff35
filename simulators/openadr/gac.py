"""The Dutch grid-aware charging (GAC, "netbewust laden") profile of OpenADR 3, as a DSO writes it.

What the profile asks (as ElaadNL's compliance plugin checks it):
- program: program type `DSO_CPO_INTERFACE-x.y.z` (`2.1.1` for GAC 2.1), a retailer name of 2-128
  characters, binding events true. GAC 2.0 rides on OpenADR 3.0.1, where these are the program fields
  `programType`, `retailerName` and `bindingEvents`; GAC 2.1 rides on 3.1.0, where they are program
  `attributes` PROGRAM_TYPE, RETAILER_NAME and BINDING_EVENTS.
- event: no priority; exactly one payload descriptor, IMPORT_CAPACITY_LIMIT in units `KW`; at least one
  interval, ids strictly increasing, one IMPORT_CAPACITY_LIMIT payload with one value each; the interval
  period either once on the event (continuous intervals) or on every interval, never both.
- targets: 3.0.1 events carry exactly one POWER_SERVICE_LOCATION valuesMap (EAN-18 codes) and exactly one
  VEN_NAME valuesMap; in 3.1.0 targets are plain strings, and the plugin checks that they are EAN-18 codes.
- VEN name: an eMI3 operator id (two letters, optional dash, three letters/digits: `NL-XYZ`).
- the program has a safe-mode event: the limit to hold when the link to the VTN is lost. How the DSO
  marks it is not fixed by the plugin; this stand-in names it `SAFE_MODE` (eventName) and starts it at
  the program start with an open end (duration PT0S).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

PAYLOAD_TYPE = "IMPORT_CAPACITY_LIMIT"
UNITS = "KW"
SAFE_MODE_EVENT_NAME = "SAFE_MODE"
EAN18 = re.compile(r"^\d{18}$")
EMI3_OPERATOR = re.compile(r"^[A-Z]{2}-?[A-Z0-9]{3}$")
PROGRAM_TYPE = re.compile(r"^DSO_CPO_INTERFACE-(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iso_duration(span: timedelta) -> str:
    """A whole-second timedelta as an ISO 8601 duration (PT15M, PT1H30M, PT0S)."""
    seconds = int(span.total_seconds())
    if seconds < 0:
        raise ValueError("negative duration")
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = "PT" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + (f"{secs}S" if secs else "")
    return text if text != "PT" else "PT0S"


def ean18_check_digit_ok(ean: str) -> bool:
    """GS1 mod-10 check digit of an EAN-18 (Dutch connection EANs carry one)."""
    if not EAN18.match(ean):
        return False
    digits = [int(c) for c in ean]
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits[:-1])))
    return (10 - total % 10) % 10 == digits[-1]


def make_ean18(prefix: str) -> str:
    """Complete a 17-digit prefix with its check digit (test data that passes real EAN checks)."""
    if not re.fullmatch(r"\d{17}", prefix):
        raise ValueError("an EAN-18 prefix has 17 digits")
    for check in "0123456789":
        if ean18_check_digit_ok(prefix + check):
            return prefix + check
    raise AssertionError("unreachable: one check digit always fits")


def gac_targets(version: str, eans: Sequence[str], ven_name: str) -> list[Any]:
    """Event targets for one VEN and its grid connection(s), in the shape of the spec version."""
    if version == "3.0.1":
        return [{"type": "POWER_SERVICE_LOCATION", "values": list(eans)}, {"type": "VEN_NAME", "values": [ven_name]}]
    return list(eans)


def gac_program(version: str, *, name: str = "netbewust-gac", retailer: str = "DSO-NL",
                program_type: str = "DSO_CPO_INTERFACE-2.1.1", binding_events: bool = True,
                targets: Sequence[Any] | None = None) -> dict[str, Any]:
    """A program request body that the GAC profile accepts.

    It carries no program-level payloadDescriptors: the profile does not ask for them, and both
    published YAMLs declare that list with an `objectType` discriminator but no mapping, which strict
    OpenAPI validators cannot resolve (they reject every such program)."""
    body: dict[str, Any] = {"programName": name}
    if version == "3.0.1":
        body |= {"programType": program_type, "retailerName": retailer, "bindingEvents": binding_events}
    else:
        body["attributes"] = [{"type": "PROGRAM_TYPE", "values": [program_type]},
                              {"type": "RETAILER_NAME", "values": [retailer]},
                              {"type": "BINDING_EVENTS", "values": [binding_events]}]
    if targets is not None:
        body["targets"] = list(targets)
    return body


def capacity_limit_event(version: str, program_id: str, *, limits_kw: Sequence[float], start: datetime,
                         interval: timedelta = timedelta(minutes=15), eans: Sequence[str], ven_name: str,
                         name: str | None = None, per_interval_periods: bool = False,
                         durations: Sequence[timedelta] | None = None) -> dict[str, Any]:
    """An IMPORT_CAPACITY_LIMIT event: one kW value per interval from `start`.

    Continuous (default): one event-level interval period, every interval `interval` long. With
    `per_interval_periods` each interval carries its own start and duration (`durations` lets them
    differ), the other form the profile allows.
    """
    body: dict[str, Any] = {
        "programID": program_id, "eventName": name,
        "payloadDescriptors": [{"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": PAYLOAD_TYPE, "units": UNITS}],
        "targets": gac_targets(version, eans, ven_name), "intervals": []}
    if not per_interval_periods:
        body["intervalPeriod"] = {"start": iso(start), "duration": iso_duration(interval)}
        body["intervals"] = [{"id": i, "payloads": [{"type": PAYLOAD_TYPE, "values": [kw]}]}
                             for i, kw in enumerate(limits_kw)]
        return body
    spans = list(durations) if durations is not None else [interval] * len(limits_kw)
    if len(spans) != len(limits_kw):
        raise ValueError("one duration per limit")
    at = start
    for i, (kw, span) in enumerate(zip(limits_kw, spans, strict=True)):
        body["intervals"].append({"id": i, "intervalPeriod": {"start": iso(at), "duration": iso_duration(span)},
                                  "payloads": [{"type": PAYLOAD_TYPE, "values": [kw]}]})
        at += span
    return body


def safe_mode_event(version: str, program_id: str, *, limit_kw: float, start: datetime, eans: Sequence[str],
                    ven_name: str) -> dict[str, Any]:
    """The fallback limit for a lost link: one open-ended interval (duration PT0S = no end)."""
    body = capacity_limit_event(version, program_id, limits_kw=[limit_kw], start=start, interval=timedelta(0),
                                eans=eans, ven_name=ven_name, name=SAFE_MODE_EVENT_NAME)
    return body


def _program_value(program: dict[str, Any], field: str, attribute: str) -> Any:
    if field in program:
        return program[field]
    for attr in program.get("attributes") or ():
        if attr.get("type") == attribute and attr.get("values"):
            return attr["values"][0]
    return None


def program_problems(program: dict[str, Any]) -> list[str]:
    """Why a program is not a GAC program (empty when it is); reads 3.0.1 fields or 3.1.0 attributes."""
    problems = []
    retailer = _program_value(program, "retailerName", "RETAILER_NAME")
    if not isinstance(retailer, str) or not 2 <= len(retailer) <= 128:
        problems.append("retailer name must be 2-128 characters")
    program_type = _program_value(program, "programType", "PROGRAM_TYPE")
    if not isinstance(program_type, str) or not PROGRAM_TYPE.match(program_type):
        problems.append("program type must be DSO_CPO_INTERFACE-x.y.z")
    if _program_value(program, "bindingEvents", "BINDING_EVENTS") is not True:
        problems.append("binding events must be true")
    return problems


def _target_problems(targets: list[Any]) -> list[str]:
    if all(isinstance(t, str) for t in targets):  # 3.1.0 strings
        return [] if targets and all(EAN18.match(t) for t in targets) else ["targets must be EAN-18 codes"]
    problems = []
    for kind in ("POWER_SERVICE_LOCATION", "VEN_NAME"):
        maps = [t for t in targets if isinstance(t, dict) and t.get("type") == kind]
        if len(maps) != 1 or not maps[0].get("values"):
            problems.append(f"exactly one non-empty {kind} target required")
    locations = [v for t in targets if isinstance(t, dict) and t.get("type") == "POWER_SERVICE_LOCATION"
                 for v in t.get("values", [])]
    if not all(isinstance(v, str) and EAN18.match(v) for v in locations):
        problems.append("POWER_SERVICE_LOCATION values must be EAN-18 codes")
    return problems


def event_problems(event: dict[str, Any]) -> list[str]:
    """Why an event breaks the GAC profile (empty when it does not)."""
    problems = []
    if event.get("priority") is not None:
        problems.append("priority must not be set")
    descriptors = event.get("payloadDescriptors") or []
    if len(descriptors) != 1:
        problems.append("exactly one payload descriptor required")
    elif descriptors[0].get("payloadType") != PAYLOAD_TYPE or descriptors[0].get("units") != UNITS:
        problems.append("payload descriptor must be IMPORT_CAPACITY_LIMIT in KW")
    intervals = event.get("intervals") or []
    if not intervals:
        problems.append("at least one interval required")
    if not all(b.get("id", 0) > a.get("id", 0) for a, b in pairwise(intervals)):
        problems.append("interval ids must increase strictly")
    with_period = [i for i in intervals if i.get("intervalPeriod") is not None]
    if event.get("intervalPeriod") is not None and with_period:
        problems.append("interval period on the event and on intervals")
    if event.get("intervalPeriod") is None and len(with_period) != len(intervals):
        problems.append("interval period missing on some interval")
    for interval in intervals:
        payloads = interval.get("payloads") or []
        if len(payloads) != 1 or payloads[0].get("type") != PAYLOAD_TYPE or len(payloads[0].get("values", [])) != 1:
            problems.append(f"interval {interval.get('id')}: one IMPORT_CAPACITY_LIMIT payload with one value")
    problems += _target_problems(event.get("targets") or [])
    return problems
