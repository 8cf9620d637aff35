"""The VEN's pure parts: GAC events to kW intervals, merging per group, the config section."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from csms.configcheck import Issues
from csms.grid.config import parse_grid
from csms.grid.model.limits import parse_signal
from csms.grid.sources.openadr.config import openadr_section
from csms.grid.sources.openadr.events import EventError, merge, parse_event, signal_payload, source_name
from csms.grid.sources.openadr.source import retry_delay
from simulators.openadr import capacity_limit_event, make_ean18, safe_mode_event

EAN = make_ean18("87123456789012345")
T0 = datetime(2026, 1, 6, 16, 0, tzinfo=UTC)
Q = timedelta(minutes=15)


def event(version: str = "3.0.1", **kwargs: Any) -> dict[str, Any]:
    body = capacity_limit_event(version, "p1", limits_kw=kwargs.pop("limits_kw", [250, 150]), start=T0, eans=[EAN],
                                ven_name="NL-XYZ", **kwargs)
    return {"id": "e1", "modificationDateTime": "2026-01-06T15:00:00Z", **body}


@pytest.mark.parametrize("version", ["3.0.1", "3.1.0"])
@pytest.mark.parametrize("per_interval", [False, True])
def test_both_interval_forms_and_target_shapes_resolve(version: str, per_interval: bool) -> None:
    parsed = parse_event(event(version, per_interval_periods=per_interval), "NL-XYZ")
    assert parsed is not None and parsed.eans == {EAN}
    assert parsed.intervals == ((T0, T0 + Q, 250.0), (T0 + Q, T0 + 2 * Q, 150.0))


def test_safe_mode_event_is_open_ended_and_other_vens_events_are_not_ours() -> None:
    safe = {"id": "s", **safe_mode_event("3.0.1", "p1", limit_kw=40, start=T0, eans=[EAN], ven_name="NL-XYZ")}
    parsed = parse_event(safe, "NL-XYZ")
    assert parsed is not None and parsed.intervals == ((T0, None, 40.0),) and parsed.name == "SAFE_MODE"
    assert parse_event(event(), "NL-ABC") is None


@pytest.mark.parametrize(("change", "words"), [
    (lambda e: e.update(priority=1), "priority"),
    (lambda e: e["payloadDescriptors"][0].update(units="W"), "in KW"),
    (lambda e: e["intervals"][1].update(id=0), "increase strictly"),
    (lambda e: e["intervals"][0]["payloads"][0].update(values=[1, 2]), "exactly one value"),
    (lambda e: e["intervals"][0]["payloads"][0].update(values=[-5]), ">= 0"),
    (lambda e: e["intervals"][0]["payloads"][0].update(values=["x"]), "must be a number"),
    (lambda e: e.update(intervals=[]), "at least one interval"),
    (lambda e: e.update(targets="nope"), "targets"),
    (lambda e: e.update(targets=[{"type": "POWER_SERVICE_LOCATION", "values": ["123"]}]), "EAN-18"),
    (lambda e: e.update(targets=[]), "POWER_SERVICE_LOCATION"),
    (lambda e: e["intervalPeriod"].update(start="tomorrow"), "ISO 8601"),
    (lambda e: e["intervalPeriod"].update(start="2026-01-06T16:00:00"), "UTC offset"),
    (lambda e: e["intervalPeriod"].update(duration="a while"), "duration"),
    (lambda e: e["intervals"][0].update(intervalPeriod={"start": "2026-01-06T16:00:00Z", "duration": "PT1H"}),
     "event and on intervals"),
])
def test_broken_events_are_refused_with_the_reason(change: Any, words: str) -> None:
    body = event()
    change(body)
    with pytest.raises(EventError) as caught:
        parse_event(body, "NL-XYZ")
    assert words in caught.value.reason


def test_overlapping_per_interval_periods_are_refused() -> None:
    body = event(per_interval_periods=True, durations=[Q * 2, Q])
    body["intervals"][1]["intervalPeriod"]["start"] = "2026-01-06T16:15:00Z"
    with pytest.raises(EventError, match="overlap"):
        parse_event(body, "NL-XYZ")


def test_merge_keeps_the_strictest_value_and_gaps() -> None:
    a = [(T0, T0 + 2 * Q, 100.0)]
    b = [(T0 + Q, T0 + 3 * Q, 80.0)]
    c = [(T0 + 4 * Q, None, 300.0)]
    assert merge(a + b + c, cap_kw=200) == [(T0, T0 + Q, 100.0), (T0 + Q, T0 + 3 * Q, 80.0), (T0 + 4 * Q, None, 200.0)]
    assert merge([(T0, T0 + Q, 50.0), (T0 + Q, T0 + 2 * Q, 50.0)]) == [(T0, T0 + 2 * Q, 50.0)]
    assert merge([(T0, None, 40.0), (T0 + Q, T0 + 2 * Q, 20.0)]) == [
        (T0, T0 + Q, 40.0), (T0 + Q, T0 + 2 * Q, 20.0), (T0 + 2 * Q, None, 40.0)]


def test_the_payload_passes_the_limit_books_own_validation() -> None:
    grid = parse_grid({"transformers": {"T1": {"capacity_kw": 200}}})
    source = source_name("netbewust gac/2")
    assert source == "openadr:netbewust_gac_2"
    schedule = merge([(T0, T0 + Q, 100.0), (T0 + Q, None, 40.0)])
    payload = signal_payload(source, "T1", schedule, T0 + timedelta(minutes=1))
    assert payload is not None
    signal = parse_signal(payload, "T1", T0 + timedelta(minutes=1), grid=grid)
    assert signal.source == source and signal.limit_at(T0 + 2 * Q) == 40.0
    assert signal_payload(source, "T1", [(T0, T0 + Q, 1.0)], T0 + Q) is None  # nothing ahead


def _section(raw: dict[str, Any], tmp: Path) -> tuple[Any, list[str]]:
    issues = Issues("x.yaml")
    config = openadr_section(raw, {"T1", "T2"}, issues)
    return config, [f"{i.key}: {i.message}" for i in issues.items]


def test_config_names_every_bad_key(tmp_path: Path) -> None:
    good = {"vtn_url": "http://127.0.0.1:1/openadr3/3.0.1", "client_id": "ven1", "client_secret": "s",
            "ven_name": "NL-XYZ", "programs": ["gac"], "groups": {"T1": [EAN]}}
    config, problems = _section(good, tmp_path)
    assert problems == [] and config is not None and config.groups == {"T1": (EAN,)}
    assert config.token_endpoint == "http://127.0.0.1:1/openadr3/3.0.1/auth/token"
    bad = {**good, "vtn_url": "ftp://x", "spec_version": "3.2", "poll_interval_s": 0, "client_secret_file": "/nope",
           "groups": {"T1": [EAN[:-1] + str((int(EAN[-1]) + 1) % 10)], "T9": [EAN], "T2": [EAN, EAN]}}
    config, problems = _section(bad, tmp_path)
    assert config is None
    text = "\n".join(problems)
    for key in ("grid.openadr.vtn_url", "grid.openadr.spec_version", "grid.openadr.poll_interval_s",
                "grid.openadr.client_secret", "grid.openadr.groups.T1[0]", "grid.openadr.groups.T9"):
        assert key in text, text
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    config, problems = _section({**{k: v for k, v in good.items() if k != "client_secret"},
                                 "client_secret_file": str(secret)}, tmp_path)
    assert problems == [] and config is not None and config.secret == "from-file"
    grid = parse_grid({"transformers": {"T1": {"capacity_kw": 100}}, "openadr": good})
    assert grid.openadr is not None and grid.openadr.programs == ("gac",)


def test_retry_backs_off_exponentially_up_to_the_maximum() -> None:
    assert retry_delay(0, 60, 300) == 60
    assert [retry_delay(n, 60, 300) for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert retry_delay(2, 0.3, 1) == 0.6 and retry_delay(5, 0.3, 1) == 1
    assert retry_delay(10_000, 60, 300) == 300  # no overflow after a long outage
    assert retry_delay(1, 60, 300, jitter=0.8) == 0.8


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                  max_size=5), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["intervals", "intervalPeriod", "targets", "payloadDescriptors", "priority", "id",
                        "reportDescriptors"]), _json)
def test_any_broken_field_is_refused_with_a_reason_never_a_crash(field: str, value: Any) -> None:
    body = event()
    body[field] = value
    try:
        parse_event(body, "NL-XYZ")
    except EventError as exc:
        assert exc.reason


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=10**12), st.integers(min_value=0, max_value=671))
def test_huge_durations_are_refused_not_raised(seconds: int, count: int) -> None:
    body = event(limits_kw=[1.0] * (count + 1))
    body["intervalPeriod"]["duration"] = f"P{seconds}D"
    try:
        parse_event(body, "NL-XYZ")
    except EventError as exc:
        assert exc.reason


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.one_of(st.none(), st.integers(1, 10)),
                          st.sampled_from([10.0, 20.0, 30.0, 250.0])), min_size=1, max_size=12))
def test_merge_equals_the_strictest_value_at_every_moment(raw: list[tuple[int, int | None, float]]) -> None:
    intervals = [(T0 + Q * s, None if d is None else T0 + Q * (s + d), kw) for s, d, kw in raw]
    merged = merge(intervals, cap_kw=200)
    for minute in range(0, 32 * 15, 5):
        at = T0 + timedelta(minutes=minute)
        covering = [kw for s, e, kw in intervals if s <= at and (e is None or at < e)]
        expected = min([*covering, 200.0]) if covering else None
        found = [kw for s, e, kw in merged if s <= at and (e is None or at < e)]
        assert found == ([] if expected is None else [expected]), (at, intervals, merged)
    assert all(e is not None for _, e, _ in merged[:-1])  # only the last piece may be open-ended
