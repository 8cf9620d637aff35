"""Verification (csms/grid/effects/verify.py): a re-push of the same setpoint never resets over-draw
detection; a new setpoint gives the station its grace again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from csms.grid.effects.pusher import PushResult
from csms.grid.effects.verify import Verifier, VerifyConfig
from csms.grid.model.sessions import Session

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
