"""Verification (csms/grid/effects/verify.py): a re-push of the same setpoint never resets over-draw
detection; a new setpoint gives the station its grace again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from csms.domain.meter import Reading
from csms.grid.effects.pusher import PushResult
from csms.grid.effects.verify import Verifier, VerifyConfig
from csms.grid.model.sessions import Session, SessionBook

T0 = datetime(2026, 6, 1, 18, 0, tzinfo=UTC)


def accepted(amps: float, at: datetime) -> PushResult:
    return PushResult("CS", 1, "TX", "Accepted", amps, amps, "A", at)


def test_repushing_the_same_setpoint_does_not_postpone_overdraw() -> None:
    v = Verifier(VerifyConfig(apply_grace_s=10.0, overdraw_readings=2))
    s = Session("CS", 1, "TX", T0)
    v.pushed(s, accepted(6.0, T0), 4.14, 11.0)
    findings = []
    for k in range(1, 40):  # a reading every second, the same profile re-sent every 3 s
        now = T0 + timedelta(seconds=k)
        if k % 3 == 0:
            v.pushed(s, accepted(6.0, now), 4.14, 11.0)
        s.power_kw, s.power_at = 11.04, now
        finding = v.reading(s, now)
        if finding is not None:
            findings.append((k, finding.kind))
    assert findings and findings[0][1] == "overdraw" and findings[0][0] <= 12, findings


def test_a_new_setpoint_restarts_the_grace() -> None:
    v = Verifier(VerifyConfig(apply_grace_s=10.0, overdraw_readings=1))
    s = Session("CS", 1, "TX", T0)
    v.pushed(s, accepted(16.0, T0), 11.04, 11.0)
    v.pushed(s, accepted(6.0, T0 + timedelta(seconds=20)), 4.14, 11.0)  # a cut
    s.power_kw = 11.04
    assert v.reading(s, T0 + timedelta(seconds=25)) is None  # the station still has time to apply it
    assert v.reading(s, T0 + timedelta(seconds=31)) is not None


def _read(v: Verifier, s: Session, book: SessionBook, t: float, wh: float, w: float | None):  # type: ignore[no-untyped-def]
    at = T0 + timedelta(seconds=t)
    book.reading(s, Reading(power_w=w, energy_wh=wh, timestamp=at.isoformat()), at)
    return v.reading(s, at)


def test_power_reported_as_zero_while_the_register_climbs_is_flagged_and_measured_by_energy() -> None:
    book, v = SessionBook(), Verifier(VerifyConfig(apply_grace_s=0.0))
    s = book.adopt("CS", 1, "TX", T0)
    kinds = [getattr(_read(v, s, book, t, 1000 + 11.04 * t / 3.6, 0.0), "kind", None) for t in range(0, 12, 2)]
    assert "power_mismatch" in kinds
    assert s.power_from_energy and abs((s.power_kw or 0) - 11.04) < 0.05


def test_a_pause_is_not_a_mismatch_although_the_last_interval_still_climbed() -> None:
    book, v = SessionBook(), Verifier(VerifyConfig(apply_grace_s=0.0))
    s = book.adopt("CS", 1, "TX", T0)
    wh = 1000.0
    for t in range(0, 10, 2):  # charging, reported honestly
        wh = 1000 + 11.04 * t / 3.6
        assert _read(v, s, book, t, wh, 11040.0) is None
    for t in (10.5, 11.0, 11.5, 12.5, 14.0, 16.0):  # paused at 10 s: the register stops, power says 0
        assert _read(v, s, book, t, wh + (11.04 * 0.0), 0.0) is None
    assert not s.power_from_energy


def test_overdraw_is_judged_on_the_register_when_power_says_little() -> None:
    book, v = SessionBook(), Verifier(VerifyConfig(apply_grace_s=2.0, overdraw_readings=2))
    s = book.adopt("CS", 1, "TX", T0)
    v.pushed(s, accepted(6.0, T0), 4.14, 11.0)
    found = [_read(v, s, book, t, 1000 + 11.04 * t / 3.6, 3000.0) for t in range(0, 20, 2)]
    assert any(f is not None and f.kind == "overdraw" for f in found), found
    assert s.fixed_kw is not None and abs(s.fixed_kw - 11.04) < 0.1


def test_a_car_whose_station_refused_the_profile_is_budgeted_at_what_it_draws_now() -> None:
    """Found at the start (0 kW) it must not stay budgeted at 0 kW once it charges at 11 kW."""
    v = Verifier(VerifyConfig(apply_grace_s=10.0))
    s = Session("CS", 1, "TX", T0)
    s.power_kw, s.power_at = 0.0, T0
    finding = v.pushed(s, PushResult("CS", 1, "TX", "Rejected", 6.0, 6.0, "A", T0), 4.14, 11.0)
    assert finding is not None and finding.kind == "rejected" and s.fixed_kw == 0.0
    s.power_kw, s.power_at = 11.04, T0 + timedelta(seconds=5)
    v.reading(s, T0 + timedelta(seconds=5))
    assert s.fixed_kw == 11.04 and (s.fixed_reason or "").startswith("profile")


def test_a_pause_and_the_failed_resume_are_seen_when_a_reading_moved_the_setpoint_first() -> None:
    """The station installs the pause before we see its answer, and a meter value in between moves
    the setpoint in force to 0 already (the observer follows the installed schedule): the push's
    answer must still count as the pause, and the later resume as a resume."""
    v = Verifier(VerifyConfig(apply_grace_s=2.0, resume_grace_s=5.0))
    s = Session("CS", 1, "TX", T0)
    v.pushed(s, accepted(16.0, T0), 11.04, 11.0)
    s.power_kw, s.power_at, s.charging_state = 11.04, T0 + timedelta(seconds=5), "Charging"
    s.setpoint_a = 0.0  # what a reading after the station installed the pause does
    v.pushed(s, accepted(0.0, T0 + timedelta(seconds=6)), 0.0, 11.0, power_before_kw=11.04)
    assert s.paused_while_drawing
    s.power_kw, s.power_at, s.charging_state = 0.0, T0 + timedelta(seconds=8), "SuspendedEVSE"
    s.setpoint_a = 16.0  # and the same for the resume
    v.pushed(s, accepted(16.0, T0 + timedelta(seconds=20)), 11.04, 11.0, power_before_kw=0.0)
    assert s.resumed_at is not None
    s.charging_state = "SuspendedEV"
    finding = v.resume_check(s, T0 + timedelta(seconds=30))
    assert finding is not None and finding.kind == "no_resume" and not s.can_pause


def test_a_car_paused_before_its_first_reading_counts_as_drawing_if_its_station_says_it_charges() -> None:
    v = Verifier(VerifyConfig())
    s = Session("CS", 1, "TX", T0)
    s.charging_state = "Charging"
    v.pushed(s, accepted(16.0, T0), 11.04, 11.0)
    v.pushed(s, accepted(0.0, T0 + timedelta(seconds=1)), 0.0, 11.0)
    assert s.paused_while_drawing
