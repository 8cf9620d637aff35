"""Learning which cars do not resume after a pause, kept across restarts (csms/grid/model/resume.py).

Findings of the verifier are counted per car key and per station model and written to the store
as documents (scopes ``grid:resume_vehicle`` and ``grid:resume_model``); they are read back at
start, before the first plan. Every session is judged again before each plan (a few dictionary
look-ups), so what one session teaches reaches every other session of that car or model at once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from csms.grid.effects.memory import GridMemory
from csms.grid.journal import Journal
from csms.grid.model.resume import NO_RESUME, RESUMED, Outcomes, ResumeBook, model_key
from csms.grid.model.sessions import Session, SessionBook
from profiles.model import KNOWN

log = logging.getLogger("csms.grid")

RESUME_VEHICLE = "resume_vehicle"  # key: a car key ("token:..", "evccid:..", "vehicle:.."), value: Outcomes
RESUME_MODEL = "resume_model"  # key: "vendor/model", value: Outcomes
#: A finding marks car keys shared among running sessions from a count at most this old (every plan
#: counts afresh too). Counting every session per finding made a takeover's thousands of resume
#: findings quadratic: 30,000 sessions held a new leader's event loop for 16 s, past its lease.
SHARED_RECOUNT_S = 1.0


class ResumeLearning:
    def __init__(self, book: SessionBook, memory: GridMemory | None, journal: Journal) -> None:
        self.book = book
        self.memory = memory
        self.journal = journal
        self.knowledge = ResumeBook()
        self._counted_at: float | None = None  # when car keys in use were last counted (monotonic)

    async def load(self) -> int:
        """Read back what earlier runs learnt; an unreadable record is logged and skipped."""
        if self.memory is None:
            return 0
        count = 0
        for kind, target in ((RESUME_VEHICLE, self.knowledge.vehicles), (RESUME_MODEL, self.knowledge.models)):
            for key, record in (await self.memory.load(kind)).items():
                try:
                    target[key] = Outcomes.from_record(record)
                    count += 1
                except ValueError as exc:
                    log.warning("grid: stored %s record %r is unreadable (%s); ignored", kind, key, exc)
        return count

    def model_of(self, session: Session) -> str | None:
        st = self.book.stations.get(session.station_id)
        return None if st is None else model_key(st.vendor, st.model)

    def finding(self, session: Session, kind: str, now: datetime) -> None:
        """Count a ``no_resume`` or ``resumed`` finding of ``session`` and store it."""
        if kind not in (NO_RESUME, RESUMED):
            return
        if self._counted_at is None or time.monotonic() - self._counted_at >= SHARED_RECOUNT_S:
            self.mark_shared(self.book)  # a key this car shares with another running session is not learnt on
        model = self.model_of(session)
        where = f"{session.station_id}|{session.transaction_id}"
        changed = self.knowledge.learn(kind, session.vehicle_ids, model, now.isoformat(), where)
        for scope, key, outcomes in changed:
            if self.memory is not None:
                self.memory.put(RESUME_VEHICLE if scope == "vehicle" else RESUME_MODEL, key, outcomes.record())
        if changed:
            self.journal.record("learnt", station_id=session.station_id, evse_id=session.evse_id, finding=kind,
                                vehicles=len(session.vehicle_ids), model=model)

    def judge_all(self, sessions: Iterable[Session]) -> None:
        """Judge every session (before a plan); a car key two of them share is marked shared first."""
        sessions = list(sessions)
        self.mark_shared(sessions)
        for session in sessions:
            self.judge(session)

    def mark_shared(self, sessions: Iterable[Session]) -> None:
        """Mark every car key that two of ``sessions`` (all running ones) carry as shared: no car's
        lesson is learnt on it."""
        self._counted_at = time.monotonic()
        in_use = Counter(k for s in sessions for k in s.vehicle_ids)
        for key, count in in_use.items():
            if count > 1:
                news = self.knowledge.shared(key)
                if news is not None:
                    self.journal.record("shared_vehicle_key", kind=key.split(":", 1)[0], sessions=count)
                    if self.memory is not None:
                        self.memory.put(RESUME_VEHICLE, key, news.record())

    def judge(self, session: Session) -> None:
        """Set the session's ``no_resume`` doubt from this session and from what earlier ones taught."""
        if not session.can_pause:
            session.no_resume, session.no_resume_reason = KNOWN, session.no_pause_reason or "never pause"
            return
        verdict = self.knowledge.judge(session.vehicle_ids, self.model_of(session))
        session.no_resume, session.no_resume_reason = verdict.level, verdict.reason
