"""Trust but verify: an Accepted profile is not proof that a station or car follows it.

Four things are detected and turned into planner constraints, so the others absorb the
difference:

* a Rejected (or failed) push: the session is uncontrollable, budgeted at what it draws
  (``fixed_kw``);
* a car drawing clearly more than its setpoint in its meter values, repeatedly, after the station
  had time to apply the profile: uncontrollable too, budgeted at its measured draw. Judged on the
  reported power and on the energy register's rate over the last interval, whichever is higher;
* a station whose reported power contradicts its energy register (0 W while the register climbs,
  as a real third-party simulator does): its power figures are no longer trusted, the register's
  rate is what it draws (``power_mismatch``);
* a car that does not resume after a pause (it stays suspended without power once we offer
  current again): it must never be paused again (``can_pause=False``); while it stays
  suspended it is planned off until departure (no room kept for it), and once it draws again
  it is held at its minimum instead.

Pure state transitions on :class:`Session`; the caller supplies the clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from csms.domain.events import VerificationFinding
from csms.grid.effects.learning import ResumeLearning
from csms.grid.effects.pusher import PushResult
from csms.grid.journal import Journal
from csms.grid.metrics import ControlMetrics
from csms.grid.model.sessions import DID_NOT_RESUME, SUSPENDED_STATES, Session, SessionBook
from csms.interfaces import Bus, Clock
from profiles.units import VOLTAGE_V

log = logging.getLogger("csms.grid")


#: Push outcomes that say nothing about the station's will: the link was down or slow, or the
#: profile never went out (a stricter limit superseded its wave).
UNKNOWN_OUTCOMES = frozenset({"StationOffline", "CallTimeout", "skipped", "invalid", "superseded"})


@dataclass(frozen=True)
class VerifyConfig:
    apply_grace_s: float = 30.0  # time a station gets to apply a profile before readings must follow it
    overdraw_tolerance_kw: float = 0.5
    overdraw_fraction: float = 0.1
    overdraw_readings: int = 2  # consecutive readings over the setpoint before we act
    resume_grace_s: float = 120.0  # time a car gets to start drawing again after a pause
    drawing_kw: float = 0.2  # below this a car counts as not drawing
    mismatch_kw: float = 0.5  # the register climbing at least this fast ...
    mismatch_fraction: float = 0.5  # ... while the reported power is below this share of it
    mismatch_readings: int = 2  # in consecutive intervals, before the power figure is distrusted


@dataclass(frozen=True)
class Finding:
    kind: str  # rejected | overdraw | no_resume | resumed
    station_id: str
    evse_id: int
    transaction_id: str
    detail: str
    fixed_kw: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {"finding": self.kind, "station_id": self.station_id, "evse_id": self.evse_id,
                "transaction_id": self.transaction_id, "detail": self.detail, "fixed_kw": self.fixed_kw}


class Verifier:
    def __init__(self, config: VerifyConfig | None = None) -> None:
        self.config = config or VerifyConfig()

    def _finding(self, session: Session, kind: str, detail: str, fixed_kw: float | None = None) -> Finding:
        return Finding(kind, session.station_id, session.evse_id, session.transaction_id, detail, fixed_kw)

    def pushed(self, session: Session, result: PushResult, setpoint_kw: float | None,
               assumed_kw: float, power_before_kw: float | None = None) -> Finding | None:
        """Record a push outcome. ``assumed_kw``: the budget for a session we cannot control and
        have never measured (the station's fail-safe or its maximum). ``power_before_kw``: the
        draw measured when the call went out (a station often reports the pause before it
        answers the call)."""
        now = result.at
        if result.status in UNKNOWN_OUTCOMES:
            return None  # offline or no answer: not installed, tried again at the next plan
        if result.status != "Accepted":
            drawn = session.power_kw if session.power_kw is not None else assumed_kw
            session.push_status = result.status
            if session.fixed_kw is None:
                session.fixed_kw = max(0.0, drawn)
                session.fixed_reason = f"profile {result.status}" + (f" ({result.reason})" if result.reason else "")
                return self._finding(session, "rejected", f"SetChargingProfile {result.status}"
                                     f"{': ' + result.reason if result.reason else ''}", session.fixed_kw)
            return None
        # The last push's value, not the setpoint in force: a reading may have moved that to the new
        # schedule already (the station installs a profile before we see the answer), hiding the step.
        previous = session.pushed_a
        session.pushed_a = result.limit_a
        session.push_status = "Accepted"
        if session.pushed_at is None or result.limit_a != previous:
            # A new setpoint: the station gets its grace again and readings start counting anew.
            # A re-push of what it already had changes nothing: over-draw detection goes on.
            session.pushed_at, session.setpoint_since, session.overdraw_count = now, now, 0
        session.setpoint_a, session.setpoint_kw = result.limit_a, setpoint_kw
        before = power_before_kw if power_before_kw is not None else session.power_kw
        if result.limit_a == 0 and previous != 0:
            # Drawing: measured so, or (paused before its first reading came) the station says it charges.
            session.paused_while_drawing = (before or 0.0) > self.config.drawing_kw or \
                (before is None and session.charging_state == "Charging")
        elif previous == 0 and (result.limit_a or 0) > 0 and session.paused_while_drawing:
            session.resumed_at = result.sent_at or now
        return None

    def reading(self, session: Session, now: datetime) -> Finding | None:
        """Check a fresh meter reading against the setpoint in force (and against its own register)."""
        cfg = self.config
        mismatch = self._mismatch(session)
        if mismatch is not None:
            return mismatch
        power = self._drawn(session)
        if power is None:
            return None
        if session.fixed_kw is not None:
            # An uncontrollable car (it over-draws, or its station refused the profile) is budgeted
            # at what it draws now, not at what it drew when that was found (often 0 at the start).
            session.fixed_kw = max(0.0, power)
            return self.resume_check(session, now)
        sp = session.setpoint_kw
        if (sp is not None and session.pushed_at is not None
                and (now - session.pushed_at).total_seconds() >= cfg.apply_grace_s
                and power > sp + max(cfg.overdraw_tolerance_kw, cfg.overdraw_fraction * abs(sp))):
            session.overdraw_count += 1
            if session.overdraw_count >= cfg.overdraw_readings:
                session.fixed_kw, session.fixed_reason = power, f"draws {power:.1f} kW over setpoint {sp:.1f} kW"
                return self._finding(session, "overdraw", session.fixed_reason, power)
        else:
            session.overdraw_count = 0
        return self.resume_check(session, now)

    def _drawn(self, session: Session) -> float | None:
        """What the car draws: the reported power, or the import register's rate over an interval that
        began after the station had time to apply its setpoint, whichever is higher. (The import
        register says nothing about a car that discharges: then only its power counts.)"""
        power = session.power_kw
        energy = session.energy_kw
        if energy is None or session.energy_window_from is None or (power is not None and power < 0) \
                or (session.setpoint_kw is not None and session.setpoint_kw < 0):
            return power
        since = session.setpoint_since or session.pushed_at
        if since is not None and (session.energy_window_from - since).total_seconds() < self.config.apply_grace_s:
            return power  # the interval still holds the time before the setpoint took effect
        return energy if power is None else max(power, energy)

    def _mismatch(self, session: Session) -> Finding | None:
        """Reported power far below what the energy register shows, interval after interval."""
        cfg = self.config
        if session.power_from_energy or session.energy_kw is None or session.reported_kw is None \
                or session.mismatch_window == session.energy_window_from:
            return None  # nothing to judge, or this interval was judged already
        session.mismatch_window = session.energy_window_from
        # The reported power at both ends of the interval far below its average by the register (a car
        # that stopped or started within the interval reports a change at one end only).
        low = cfg.mismatch_fraction * session.energy_kw
        if session.energy_kw >= cfg.mismatch_kw and all(r is not None and r < low for r in session.window_reported_kw):
            session.mismatch_count += 1
        else:
            session.mismatch_count = 0
        if session.mismatch_count < cfg.mismatch_readings:
            return None
        session.power_from_energy = True
        session.power_kw = session.energy_kw
        return self._finding(session, "power_mismatch", f"reports {session.reported_kw:.1f} kW while its energy "
                             f"register climbs at {session.energy_kw:.1f} kW: measured by the register from now on")

    def resume_check(self, session: Session, now: datetime) -> Finding | None:
        """After a resume: drawing again clears the watch; still idle after the grace marks never-pause."""
        if session.resumed_at is None:
            return None
        cfg = self.config
        drawing = (session.power_kw or 0.0) > cfg.drawing_kw and session.power_at is not None \
            and session.power_at >= session.resumed_at
        if drawing:
            session.resumed_at, session.paused_while_drawing = None, False
            return self._finding(session, "resumed", "car draws power again after the pause")
        if (now - session.resumed_at).total_seconds() < cfg.resume_grace_s:
            return None
        if session.charging_state is not None and session.charging_state not in SUSPENDED_STATES \
                and session.charging_state != "EVConnected":
            return None
        session.resumed_at, session.paused_while_drawing = None, False
        if session.can_pause:
            session.can_pause = False
            session.no_pause_reason = DID_NOT_RESUME
            return self._finding(session, "no_resume",
                                 f"still {session.charging_state or 'idle'} {cfg.resume_grace_s:g} s after resume")
        return None


class Verification:
    """Reports what the :class:`Verifier` finds: a metric, a journal entry, a bus event, a log
    line, and (unless a car merely resumed) a re-plan, so the other sessions absorb the difference."""

    def __init__(self, verifier: Verifier, book: SessionBook, journal: Journal, bus: Bus, metrics: ControlMetrics,
                 replan: Callable[[str], None], clock: Clock, learning: ResumeLearning | None = None) -> None:
        self.verifier = verifier
        self.learning = learning  # counts resume findings per car and station model, across sessions
        self.book = book
        self.journal = journal
        self.bus = bus
        self.metrics = metrics
        self.replan = replan
        self.clock = clock

    def report(self, finding: Finding | None) -> None:
        if finding is None:
            return
        self.metrics.findings.labels(finding.kind).inc()
        self.journal.record("finding", **finding.as_dict())
        if self.learning is not None:
            session = self.book.find(finding.station_id, finding.transaction_id, finding.evse_id)
            if session is not None:
                self.learning.finding(session, finding.kind, self.clock())
        self.bus.publish(VerificationFinding(station_id=finding.station_id, finding=finding.kind,
                                             evse_id=finding.evse_id, transaction_id=finding.transaction_id,
                                             detail=finding.detail, fixed_kw=finding.fixed_kw))
        if finding.kind != "resumed":
            log.warning("%s evse %s: %s (%s)", finding.station_id, finding.evse_id, finding.kind, finding.detail)
            self.replan(f"finding {finding.kind}")

    def check_resumes(self) -> None:
        """Cars that were offered current again after a pause: drawing yet, or given up on?"""
        now = self.clock()
        for session in self.book:
            self.report(self.verifier.resume_check(session, now))


async def composite_kw(commands: Any, station_id: str, evse_id: int = 1, duration_s: int = 60,
                       phases: int = 3) -> float:
    """What the station says it will allow on ``evse_id`` right now (GetCompositeSchedule), in kW.

    Asks in W; a station that only speaks amps is asked again in A and converted with the
    period's numberPhases. Raises RuntimeError when the station refuses both.
    """
    for unit in ("W", "A"):
        response = await commands.get_composite_schedule(station_id, evse_id, duration_s, unit)
        if response.get("status") != "Accepted" or "schedule" not in response:
            continue
        period = response["schedule"]["chargingSchedulePeriod"][0]
        limit = float(period["limit"])
        if unit == "A":
            limit *= int(period.get("numberPhases", phases)) * VOLTAGE_V
        return limit / 1000.0
    raise RuntimeError(f"{station_id} evse {evse_id}: GetCompositeSchedule refused in W and A")
