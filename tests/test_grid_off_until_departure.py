"""A car that does not resume and is paused for good reaches the planner as off until departure
(issue 11): no room is kept for its minimum, while one that was never paused keeps charging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from csms.grid.model.sessions import DID_NOT_RESUME, Defaults, Session, StationCaps, session_need
from profiles.model import KNOWN, RESUMES, SUSPECTED
from profiles.planner import PlanInput, SessionNeed, plan

T0 = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)


def _session(evse: int, **kw: object) -> Session:
    s = Session("CS-1", evse, f"tx-{evse}", T0 - timedelta(hours=1))
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def _need(s: Session) -> SessionNeed:
    return session_need(s, StationCaps(), T0, Defaults())


def test_stayed_suspended_after_a_resume_is_off_until_it_draws_again() -> None:
    stuck = _session(1, can_pause=False, no_pause_reason=DID_NOT_RESUME, no_resume=KNOWN, power_kw=0.0,
                     setpoint_a=6.0)
    assert _need(stuck).off_until_departure
    stuck.power_kw = 4.1  # it woke up after all: held at its minimum like any car that does not resume
    assert not _need(stuck).off_until_departure


def test_planned_off_and_paused_is_off_until_departure() -> None:
    off = _session(1, no_resume=SUSPECTED, planned_off_from=T0 - timedelta(minutes=15), setpoint_a=0.0)
    assert _need(off).off_until_departure
    later = _session(2, no_resume=SUSPECTED, planned_off_from=T0 + timedelta(minutes=15), setpoint_a=6.0)
    assert not _need(later).off_until_departure  # the pause has not come yet
    still_on = _session(3, no_resume=KNOWN, planned_off_from=T0 - timedelta(minutes=1), setpoint_a=6.0)
    assert not _need(still_on).off_until_departure  # the station still runs it: not paused
    resumes = _session(4, no_resume=RESUMES, planned_off_from=T0 - timedelta(minutes=15), setpoint_a=0.0)
    assert not _need(resumes).off_until_departure  # a car that resumes is simply planned again


def test_off_car_leaves_its_minimum_to_the_others() -> None:
    stuck = _need(_session(1, can_pause=False, no_pause_reason=DID_NOT_RESUME, no_resume=KNOWN, power_kw=0.0))
    going = _need(_session(2, can_pause=False, no_pause_reason="operator", no_resume=KNOWN, power_kw=4.0))
    other = _need(_session(3))
    p = plan(PlanInput([stuck, going, other], [9.0 + 4.14] * 4, [0.0] * 4))
    assert set(p.sessions[stuck.session_id].current_a) == {0.0}
    assert p.sessions[stuck.session_id].off_from_slot == 0
    assert min(p.sessions[going.session_id].current_a) >= 6.0
    assert p.headroom_kw[0] < 0.3
