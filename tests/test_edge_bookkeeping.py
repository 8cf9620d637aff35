"""Issue 16: the edge's own bookkeeping stays bounded: the error log's incidents and the trace.

The daemon-level effects are measured elsewhere (tests/test_edge_log_flood.py: a Redis outage;
tests/test_edge_memory.py: resident memory of 600 departed ids); these pin the rules themselves.
"""

from __future__ import annotations

import logging

import pytest

from csms.edge.connection import Trace
from csms.errorlog import ErrorLog


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_one_traceback_per_incident_and_class_then_a_count_per_window(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    errors, log = ErrorLog(window_s=60, clock=clock), logging.getLogger("csms.test")
    with caplog.at_level(logging.INFO, logger="csms.test"):
        for _ in range(500):
            errors.failed(log, "Heartbeat handler", ConnectionError("store down"))
        errors.failed(log, "Heartbeat handler", ValueError("another class"))  # another class: its own traceback
        assert [bool(r.exc_info) for r in caplog.records] == [True, True]
        clock.t += 61
        errors.failed(log, "Heartbeat handler", ConnectionError("store down"))
        assert "500 more times in the last 61 s" in caplog.records[-1].getMessage()  # 499 + this one
        assert not caplog.records[-1].exc_info
        errors.succeeded(log, "Heartbeat handler")
        ends = [r.getMessage() for r in caplog.records[-2:]]
    assert all("works again" in m for m in ends) and not errors.active
    assert any("after 501 failures (ConnectionError) in 61 s" in m for m in ends), ends


def test_trace_of_a_departed_station_goes_after_its_ttl_unless_it_comes_back() -> None:
    clock = Clock()
    trace = Trace(size=4, ttl_s=60, max_bytes=10**9, clock=clock)
    for station_id in ("A", "B"):
        trace.add(station_id, "in", "x" * 100)
        trace.departed(station_id)
    trace.arrived("B")  # B reconnected: its trace stays
    clock.t += 59
    assert trace.sweep() == 0 and len(trace) == 2
    clock.t += 2
    assert trace.sweep() == 1 and trace.get("A") == [] and len(trace.get("B")) == 1
    trace.departed("B")
    clock.t += 61
    trace.sweep()
    assert len(trace) == 0 and trace.bytes == 0


def test_all_traces_together_stay_under_the_cap_least_recently_active_first() -> None:
    frame = "f" * 1000
    trace = Trace(size=16, ttl_s=3600, max_bytes=20 * (1000 + Trace.FRAME_OVERHEAD))
    for station_id in ("OLD", "MID", "NEW"):
        for _ in range(8):
            trace.add(station_id, "in", frame)
    assert [len(trace.get(s)) for s in ("OLD", "MID", "NEW")] == [0, 8, 8]  # OLD went when NEW filled up
    trace.add("MID", "in", frame)  # MID is now the most recently active: NEW goes first
    for _ in range(4):
        trace.add("NEWER", "in", frame)
    assert [len(trace.get(s)) for s in ("MID", "NEW", "NEWER")] == [9, 0, 4]
    assert trace.bytes <= trace.max_bytes
    accounted = sum(len(f) + Trace.FRAME_OVERHEAD for s in ("OLD", "MID", "NEW", "NEWER") for _, _, f in trace.get(s))
    assert accounted == trace.bytes
