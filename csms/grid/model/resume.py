"""What the grid learns about cars (and station models) that do not resume after a pause.

The verifier (csms/grid/effects/verify.py) finds, per session, that a car paused while drawing
either drew again after the resume (``resumed``) or stayed suspended (``no_resume``). Each such
finding is counted here under every key the session's car is known by (idToken, EVCCID, vehicle
id: csms/domain/vehicles.py) and under its station's model ("vendor/model"), and kept in the
store so it survives a restart. A later session is judged on it before it is planned:

- ``known``: one of the car's keys failed to resume the last time it was paused;
- ``suspected``: one of its keys failed before but resumed since, or its station model failed to
  resume at least ``MODEL_MIN_FAILURES`` times and in at least ``MODEL_MIN_SHARE`` of its pauses;
- ``no``: nothing against it.

A car key seen on two running sessions at once names no single car (a fleet card, a station's
free-vend token, a simulator's default token): it is marked shared, for good, and neither
counted nor judged on.

The planner (profiles/) never plans a pause for a known or suspected car unless the limit leaves
no room for its minimum current; then it plans it off until departure and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from profiles.model import KNOWN, RESUMES, SUSPECTED

NO_RESUME = "no_resume"
RESUMED = "resumed"
MODEL_MIN_FAILURES = 2
MODEL_MIN_SHARE = 0.5
MAX_KEYS_PER_CAR = 8


@dataclass
class Outcomes:
    """Pauses of one car key or one station model, and how the last one ended."""

    no_resume: int = 0
    resumed: int = 0
    last: str = RESUMED
    at: str | None = None  # ISO time of the last finding
    where: str | None = None  # "<station>|<transaction>" of the last finding
    shared: bool = False  # a car key seen on two running sessions at once: names no single car

    def record(self) -> dict[str, Any]:
        return {"no_resume": self.no_resume, "resumed": self.resumed, "last": self.last, "at": self.at,
                "where": self.where, "shared": self.shared}

    @classmethod
    def from_record(cls, record: Any) -> Outcomes:
        """What :meth:`record` wrote; ValueError for a record that is not one."""
        if not isinstance(record, dict):
            raise ValueError(f"expected an object, got {type(record).__name__}")  # noqa: TRY004
        counts = [record.get("no_resume", 0), record.get("resumed", 0)]
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
            raise ValueError(f"counts must be integers >= 0, got {counts}")
        last = record.get("last", RESUMED)
        if last not in (NO_RESUME, RESUMED):
            raise ValueError(f"last must be {NO_RESUME!r} or {RESUMED!r}, got {last!r}")
        at, where = record.get("at"), record.get("where")
        return cls(counts[0], counts[1], last, at if isinstance(at, str) else None,
                   where if isinstance(where, str) else None, record.get("shared") is True)

    def add(self, kind: str, at: str, where: str) -> None:
        if kind == NO_RESUME:
            self.no_resume += 1
        else:
            self.resumed += 1
        self.last, self.at, self.where = kind, at, where

    @property
    def model_suspect(self) -> bool:
        total = self.no_resume + self.resumed
        return self.no_resume >= MODEL_MIN_FAILURES and self.no_resume >= MODEL_MIN_SHARE * total


@dataclass(frozen=True)
class Judgement:
    level: str  # profiles.model: "no" | "suspected" | "known"
    reason: str | None = None


class ResumeBook:
    """Outcomes per car key and per station model; pure state, persisted by the caller."""

    def __init__(self) -> None:
        self.vehicles: dict[str, Outcomes] = {}
        self.models: dict[str, Outcomes] = {}

    def learn(self, kind: str, vehicle_keys: tuple[str, ...], model: str | None, at: str,
              where: str) -> list[tuple[str, str, Outcomes]]:
        """Count one finding; returns what changed as ("vehicle" | "model", key, outcomes)."""
        if kind not in (NO_RESUME, RESUMED):
            return []
        changed: list[tuple[str, str, Outcomes]] = []
        for k in vehicle_keys[:MAX_KEYS_PER_CAR]:
            if k in self.vehicles and self.vehicles[k].shared:
                continue
            outcomes = self.vehicles.setdefault(k, Outcomes())
            outcomes.add(kind, at, where)
            changed.append(("vehicle", k, outcomes))
        if model:
            outcomes = self.models.setdefault(model, Outcomes())
            outcomes.add(kind, at, where)
            changed.append(("model", model, outcomes))
        return changed

    def shared(self, key: str) -> Outcomes | None:
        """Mark ``key`` as naming no single car (seen on two running sessions at once, e.g. a fleet card
        or a station's free-vend token); returns the record when that is news."""
        outcomes = self.vehicles.setdefault(key, Outcomes())
        if outcomes.shared:
            return None
        outcomes.shared = True
        return outcomes

    def judge(self, vehicle_keys: tuple[str, ...], model: str | None) -> Judgement:
        """How much doubt earlier sessions cast on this car resuming after a pause."""
        failed = [(k, self.vehicles[k]) for k in vehicle_keys if k in self.vehicles
                  and self.vehicles[k].no_resume > 0 and not self.vehicles[k].shared]
        for k, outcomes in failed:
            if outcomes.last == NO_RESUME:
                return Judgement(KNOWN, f"{k} did not resume after a pause ({outcomes.where}, {outcomes.at})")
        if failed:
            k, outcomes = failed[0]
            return Judgement(SUSPECTED, f"{k} failed to resume {outcomes.no_resume} time(s) before, "
                                        f"resumed {outcomes.resumed} time(s)")
        stats = self.models.get(model) if model else None
        if stats is not None and stats.model_suspect:
            return Judgement(SUSPECTED, f"station model {model} failed to resume in {stats.no_resume} of "
                                        f"{stats.no_resume + stats.resumed} pauses")
        return Judgement(RESUMES)


def model_key(vendor: str | None, model: str | None) -> str | None:
    """The station model a finding is counted under ("vendor/model"), None when unknown."""
    return f"{vendor or ''}/{model or ''}" if vendor or model else None
