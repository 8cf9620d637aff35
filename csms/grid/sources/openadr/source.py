"""The OpenADR 3 VEN as a signal source: poll the VTN, turn its events into limit signals, and hold
the DSO's safe limit while the VTN cannot be reached.

Each round (every ``poll_interval_s``; after a failure sooner, then backing off exponentially up to
``backoff_max_s``): fetch a token if needed, register the VEN once, read the followed programs and
their events (filtered on our EAN-18 codes), check each event (csms/grid/sources/openadr/events.py)
and hand one signal per program and capacity group to the limit intake, source
``openadr:<program>``. An event that breaks the schema or the GAC profile is refused with a reason
(log, metric, bus event, status) and the last good version of that event stays in force. The
``SAFE_MODE`` event is not a limit while the link is up: its value is the group's safe limit. Once
the VTN has been unreachable (or answered garbage) for ``link_timeout_s``, every followed group gets
that safe limit as an open-ended interval on top of the events it knows (strictest wins) until a
poll succeeds again. The limit signals are stored by the intake; the source's own state (last good
events, safe limits, fallback) under the document scope ``grid:openadr``, so both survive a restart.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections import deque
from datetime import datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from csms.domain.events import SignalRejected
from csms.grid.config import GridConfig
from csms.grid.effects.memory import GridMemory
from csms.grid.model.limits import LimitSignal, SignalError
from csms.grid.sources.openadr.client import VtnClient, VtnError, first
from csms.grid.sources.openadr.config import OpenAdrConfig
from csms.grid.sources.openadr.events import (
    EventError,
    Interval,
    ParsedEvent,
    merge,
    parse_event,
    signal_payload,
    source_name,
    targets_of,
)
from csms.grid.sources.openadr.reports import Meter, UsageReporter
from csms.interfaces import Bus, Clock
from csms.tasks import cancel_and_wait

log = logging.getLogger("csms.grid.openadr")

STATE = "openadr"  # document scope grid:openadr
STATE_KEY = "state"
RECENT_REFUSALS = 50
REMEMBER_REFUSED = 1000
COALESCE_S = 0.1  # notifications this close together cause one poll
UNAUTHORIZED_LOG_S = 60.0  # refused webhook calls: one warning per minute at most  # refused event versions not logged again
NOTIFICATION_OBJECTS = ("PROGRAM", "EVENT", "REPORT", "SUBSCRIPTION", "VEN", "RESOURCE")
NOTIFICATION_OPERATIONS = ("POST", "PUT", "DELETE", "CREATE", "UPDATE", "READ")  # 3.0.1 and 3.1.0 words
MIN_RETRY_S = 0.1


class OpenAdrIntake(Protocol):
    """What the source hands its signals to (csms.grid.intake.LimitDesk)."""

    async def accept(self, tid: str, payload: bytes | str | dict[str, Any], *, live: bool, via: str) -> LimitSignal: ...

    async def clear(self, transformer_id: str, source: str) -> LimitSignal | None: ...

    def recheck(self, source: str | None = None) -> None: ...


class OpenAdrMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reachable = Gauge("csms_grid_openadr_vtn_reachable", "1 while the last poll of the VTN succeeded",
                               registry=registry)
        self.fallback = Gauge("csms_grid_openadr_fallback", "1 while the DSO's safe limit holds (VTN unreachable)",
                              registry=registry)
        self.polls = Counter("csms_grid_openadr_polls_total", "Polls of the VTN by outcome", ["outcome"],
                             registry=registry)
        self.events = Counter("csms_grid_openadr_events_total", "OpenADR events by verdict", ["outcome"],
                              registry=registry)
        self.notifications = Counter("csms_grid_openadr_notifications_total",
                                     "Webhook calls from the VTN by verdict", ["outcome"], registry=registry)
        self.last_contact = Gauge("csms_grid_openadr_last_contact_timestamp_seconds",
                                  "When a poll of the VTN last succeeded (Unix time)", registry=registry)


class OpenAdrSource:
    """A :class:`csms.interfaces.SignalSource` on one OpenADR 3 VTN (a daemon component)."""

    name = "openadr"

    def __init__(self, config: OpenAdrConfig, grid: GridConfig, intake: OpenAdrIntake, bus: Bus,
                 registry: CollectorRegistry, now: Clock, memory: GridMemory | None = None) -> None:
        self.config = config
        self.grid = grid
        self.intake = intake
        self.bus = bus
        self.memory = memory
        if memory is not None:
            memory.prioritise(STATE)  # with the signals, in their order, not behind unrelated writes
        self.metrics = OpenAdrMetrics(registry)
        self.client = VtnClient(config)
        self._now = now
        self.ven_id: str | None = None
        self.program_ids: dict[str, str] = {}
        self.good: dict[str, dict[str, ParsedEvent]] = {p: {} for p in config.programs}
        self.safe: dict[str, dict[str, float]] = {p: {} for p in config.programs}
        self.refusals: deque[dict[str, Any]] = deque(maxlen=RECENT_REFUSALS)
        self.applied: dict[str, tuple[str, str]] = {}  # "<program>|<group>" -> (schedule digest, signal id)
        self._refused: dict[str, str] = {}  # event id -> modificationDateTime already refused (log once)
        self.last_contact: datetime | None = None
        self.last_error: str | None = None
        self.down_since: datetime | None = None
        self.fallback_since: datetime | None = None
        self.polls = 0
        self.failures = 0
        self.stored_at: datetime | None = None  # when the last change became durable
        self._dirty = False
        self._register_warned = False
        self._missing_warned: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # The webhook: a fresh secret per start, given to the VTN in each subscription (it re-subscribes).
        self.webhook_token = secrets.token_urlsafe(32)
        self.subscriptions: dict[str, str | None] = {}  # program -> subscription id (None: refused)
        self.notifications = 0
        self._unauthorized_logged = float("-inf")
        self.reporter = UsageReporter(config)
        self.meter: Meter | None = None  # the group's measured load in kW (set by the grid assembly)
        self.reports_sent = 0

    # Component ------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._restore()
        if self.down_since is None:
            self.down_since = self._now()  # not heard yet: the link grace runs from the start
        await self.client.open()
        self._tasks.append(asyncio.create_task(self._run(), name="grid openadr"))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        await self.client.close()

    def outage(self, now: datetime) -> str | None:
        """csms.interfaces.SignalSource: the VTN unreachable past the link timeout."""
        if self.fallback_since is None:
            return None
        return f"OpenADR VTN unreachable since {self.down_since.isoformat() if self.down_since else '?'} " \
               f"({self.last_error or 'no answer'})"

    def notified(self, bearer: str | None, body: Any) -> tuple[int, str]:
        """csms.interfaces.NotificationReceiver: a webhook call. Only a caller with our subscription's
        bearer token counts, and only as a reason to poll now: the objects are read from the VTN."""
        if self.config.webhook_url is None:
            return 404, "this VEN has no webhook (grid.openadr.webhook_url)"
        if bearer is None or not secrets.compare_digest(bearer, self.webhook_token):
            self.metrics.notifications.labels("unauthorized").inc()
            clock = asyncio.get_running_loop().time()
            if clock - self._unauthorized_logged >= UNAUTHORIZED_LOG_S:
                self._unauthorized_logged = clock
                log.warning("grid openadr: webhook call without our subscription's bearer token refused "
                            "(counted in csms_grid_openadr_notifications_total; said once a minute)")
            return 401, "missing or wrong bearer token"
        if (not isinstance(body, dict) or body.get("objectType") not in NOTIFICATION_OBJECTS
                or body.get("operation") not in NOTIFICATION_OPERATIONS or not isinstance(body.get("object"), dict)):
            self.metrics.notifications.labels("malformed").inc()
            return 400, "not an OpenADR notification (objectType, operation, object)"
        self.notifications += 1
        self.metrics.notifications.labels("accepted").inc()
        log.debug("grid openadr: notified of %s %s", body["operation"], body["objectType"])
        self.poke()
        return 200, "polling the VTN now"

    def poke(self) -> None:
        """Poll now (a notification said something changed)."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """What the operator API shows under ``sources.openadr``."""
        return {
            "vtn_url": self.config.vtn_url, "spec_version": self.config.spec_version,
            "ven_name": self.config.ven_name, "ven_id": self.ven_id,
            "reachable": self.down_since is None, "last_contact": _iso(self.last_contact),
            "down_since": _iso(self.down_since), "last_error": self.last_error,
            "fallback": self.fallback_since is not None, "fallback_since": _iso(self.fallback_since),
            "link_timeout_s": self.config.link_timeout_s, "polls": self.polls, "failures": self.failures,
            "stored_at": _iso(self.stored_at), "webhook_url": self.config.webhook_url,
            "subscriptions": dict(self.subscriptions), "notifications": self.notifications,
            "reports_sent": self.reports_sent,
            "programs": {name: {"program_id": self.program_ids.get(name), "source": source_name(name),
                                "events": sorted(self.good[name]), "safe_limits_kw": dict(self.safe[name])}
                         for name in self.config.programs},
            "refused": list(self.refusals),
        }

    # The loop -------------------------------------------------------------------------------------
    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._poll()
            except VtnError as exc:
                failures += 1
                self._failed(str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug must not end the polling
                failures += 1
                log.exception("grid openadr: poll failed")
                self._failed(repr(exc))
            else:
                failures = 0
            await self._wait(retry_delay(failures, self.config.poll_interval_s, self.config.backoff_max_s,
                                         random.uniform(0.8, 1.2)))

    async def _wait(self, delay: float) -> None:
        """Sleep until the next poll, checking the link as time passes; a poke cuts it short."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        tick = max(0.05, min(1.0, self.config.link_timeout_s / 4))
        while True:
            try:
                await self._check_link()
                if self.meter is not None:
                    self.reporter.sample((ev for events in self.good.values() for ev in events.values()),
                                         self.meter, self._now())
            except Exception:  # noqa: BLE001 - a bug must not end the polling
                log.exception("grid openadr: link check failed")
            left = deadline - loop.time()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), min(left, tick))
            except TimeoutError:
                continue
            await asyncio.sleep(COALESCE_S)  # one change often brings several notifications: one poll
            self._wake.clear()
            return

    def _failed(self, error: str) -> None:
        now = self._now()
        self.failures += 1
        self.metrics.polls.labels("failed").inc()
        self.metrics.reachable.set(0)
        if self.down_since is None:
            self.down_since = now
            log.warning("grid openadr: VTN poll failed (%s); retrying with backoff, safe limit after %g s",
                        error, self.config.link_timeout_s)
        elif error != self.last_error:
            log.warning("grid openadr: VTN poll failed again (%s)", error)
        self.last_error = error

    async def _check_link(self) -> None:
        now = self._now()
        if self.fallback_since is not None or self.down_since is None:
            return
        if (now - self.down_since).total_seconds() < self.config.link_timeout_s:
            return
        self.fallback_since = now.replace(microsecond=0)
        self.metrics.fallback.set(1)
        log.warning("grid openadr: VTN unreachable for more than %g s (%s): the DSO's safe limit applies",
                    self.config.link_timeout_s, self.last_error or "no answer yet")
        await self._apply(now, live=False)
        self._save()
        await self._stored(now)
        self.intake.recheck(self.name)

    # One poll -------------------------------------------------------------------------------------
    async def _poll(self) -> None:
        if self.config.register_ven and self.ven_id is None:
            await self._register()
        programs = await self.client.list("/programs")
        by_name = {p.get("programName"): p for p in programs if isinstance(p, dict)}
        fetched: dict[str, list[Any]] = {}
        for name in self.config.programs:
            program = by_name.get(name)
            if program is None or not isinstance(program.get("id"), str):
                if name not in self._missing_warned:
                    log.warning("grid openadr: program %r is not on the VTN (yet)", name)
                    self._missing_warned.add(name)
                continue
            self._missing_warned.discard(name)
            self.program_ids[name] = program["id"]
            if self.config.webhook_url is not None and name not in self.subscriptions:
                await self._subscribe(name, program["id"], self.config.webhook_url)
            fetched[name] = await self.client.list("/events", self._event_query(program["id"]))
        now = self._now()  # everything read: only now does it count as contact
        changed = any(self._take(name, events, now) for name, events in fetched.items())
        recovered = self.fallback_since is not None or self.down_since is not None
        if recovered:
            log.info("grid openadr: VTN reachable again%s", " (safe limit lifted)" if self.fallback_since else "")
        self.down_since, self.last_error = None, None
        if self.fallback_since is not None:
            self.fallback_since = None
            self.metrics.fallback.set(0)
            changed = True
        self.last_contact = now
        self.polls += 1
        self.metrics.polls.labels("ok").inc()
        self.metrics.reachable.set(1)
        self.metrics.last_contact.set(now.timestamp())
        await self._apply(now, live=True)
        if changed:
            self._save()
        await self._stored(now)
        await self._send_reports(now)
        if recovered:
            self.intake.recheck(self.name)

    def _event_query(self, program_id: str) -> list[tuple[str, str]]:
        """3.0.1: every event of the program (a VEN reads all; a broken one must be seen to be refused,
        and the targets filter would hide one whose targets are broken). 3.1.0: a targeted event is
        visible only when the query names one of its targets, so our EANs are named."""
        if self.config.spec_version == "3.0.1":
            return [("programID", program_id)]
        return [("programID", program_id), *(("targets", ean) for ean in self.config.eans)]

    async def _register(self) -> None:
        """Find or create our ven object (3.1.0: a VEN_VEN_REQUEST; BL may have created it for us)."""
        try:
            found = await first(self.client, "/vens", [("venName", self.config.ven_name)])
            if found is None:
                body: dict[str, Any] = {"venName": self.config.ven_name}
                if self.config.spec_version != "3.0.1":
                    body = {"objectType": "VEN_VEN_REQUEST", **body}
                found = await self.client.request("POST", "/vens", body=body)
        except VtnError as exc:
            if exc.status is None or exc.status >= 500:
                raise
            if not self._register_warned:  # refused (scope, conflict): polling goes on without it
                log.warning("grid openadr: VEN registration as %r refused: %s", self.config.ven_name, exc)
                self._register_warned = True
            return
        if isinstance(found, dict) and isinstance(found.get("id"), str):
            self.ven_id = found["id"]
            log.info("grid openadr: registered as VEN %r (id %s)", self.config.ven_name, self.ven_id)

    async def _subscribe(self, program: str, program_id: str, url: str) -> None:
        """Ask the VTN to call us on program and event changes (with this start's bearer token); an
        earlier subscription of ours (before a restart) is replaced, as its token is gone."""
        body = {"clientName": self.config.ven_name, "programID": program_id,
                "objectOperations": [{"objects": ["PROGRAM", "EVENT"], "operations": ["CREATE", "UPDATE", "DELETE"],
                                      "callbackUrl": url, "bearerToken": self.webhook_token}]}
        try:
            mine = await first(self.client, "/subscriptions", [("programID", program_id),
                                                               ("clientName", self.config.ven_name)])
            if mine is not None and isinstance(mine.get("id"), str):
                stored = await self.client.request("PUT", f"/subscriptions/{mine['id']}", body=body)
            else:
                stored = await self.client.request("POST", "/subscriptions", body=body)
        except VtnError as exc:
            if exc.status is None or exc.status >= 500:
                raise
            log.warning("grid openadr: subscription to %s refused (%s); polling only", program, exc)
            self.subscriptions[program] = None
            return
        self.subscriptions[program] = stored.get("id") if isinstance(stored, dict) else None
        log.info("grid openadr: subscribed to %s (callback %s)", program, url)

    def _take(self, program: str, events: list[Any], now: datetime) -> bool:
        """Sort one program's events into good ones, refusals and its safe limits; whether anything changed."""
        good = self.good[program]
        before = {eid: ev.modified for eid, ev in good.items()}
        safe_before = dict(self.safe[program])
        keep: set[str] = set()
        for raw in events:
            eid = raw.get("id") if isinstance(raw, dict) else None
            try:
                parsed = parse_event(raw, self.config.ven_name)
                if parsed is None:
                    continue
                tids = self.config.groups_of(set(parsed.eans))
                if not tids:
                    continue  # another connection's event (3.0.1 VENs read every event of a program)
            except EventError as exc:
                self._refuse(program, raw, exc.reason)
                if isinstance(eid, str) and eid in good:
                    keep.add(eid)  # the last good version of this event stays in force
                continue
            self._refused.pop(parsed.event_id, None)
            if parsed.name == self.config.safe_mode_event_name:
                for tid in tids:
                    self.safe[program][tid] = _safe_value(parsed.intervals, now)
                continue
            if parsed.ended(now) and not self.reporter.due(self.program_ids.get(program, ""), [parsed], now):
                continue  # over (kept while a report of it is still due)
            keep.add(parsed.event_id)
            if before.get(parsed.event_id) != parsed.modified:
                self.metrics.events.labels("accepted").inc()
                log.info("grid openadr: event %s of %s accepted for %s", parsed.event_id, program, ", ".join(tids))
            good[parsed.event_id] = parsed
        for eid in set(good) - keep:
            del good[eid]  # deleted on the VTN, or over
        return ({eid: ev.modified for eid, ev in good.items()} != before) or self.safe[program] != safe_before

    async def _send_reports(self, now: datetime) -> None:
        """Post the reports that are due; a refused one (4xx) is dropped, a lost link keeps them for later."""
        for program, events in self.good.items():
            program_id = self.program_ids.get(program)
            if program_id is None:
                continue
            for key, body in self.reporter.due(program_id, events.values(), now):
                try:
                    await self.client.request("POST", "/reports", body=body)
                except VtnError as exc:
                    if exc.status is None or exc.status >= 500:
                        log.warning("grid openadr: report %s not sent yet (%s)", key, exc)
                        return
                    log.warning("grid openadr: report %s refused (%s); dropped", key, exc)
                else:
                    self.reports_sent += 1
                    log.info("grid openadr: report %s sent", key)
                self.reporter.mark_sent(key)

    def _refuse(self, program: str, raw: Any, reason: str) -> None:
        eid = str(raw.get("id")) if isinstance(raw, dict) else "?"
        modified = str(raw.get("modificationDateTime")) if isinstance(raw, dict) else ""
        if self._refused.get(eid) == modified:
            return  # said already; it is still the same broken event
        self._refused[eid] = modified
        while len(self._refused) > REMEMBER_REFUSED:
            del self._refused[next(iter(self._refused))]  # the oldest
        self.metrics.events.labels("refused").inc()
        kept = eid in self.good[program]
        log.warning("grid openadr: event %s of %s refused: %s%s", eid, program, reason,
                    " (its last good version stays in force)" if kept else "")
        self.refusals.append({"program": program, "event_id": eid, "modified": modified, "reason": reason,
                              "at": _iso(self._now()), "kept_last_good": kept})
        try:
            eans, _ = targets_of(raw.get("targets") if isinstance(raw, dict) else None)
        except EventError:
            eans = set()
        for tid in self.config.groups_of(eans) or list(self.config.groups):
            self.bus.publish(SignalRejected(transformer_id=tid, reason=f"OpenADR event {eid}: {reason}",
                                            signal_id=eid))

    # Into the limit book --------------------------------------------------------------------------
    def _safe_kw(self, program: str, tid: str) -> float:
        known = self.safe[program].get(tid)
        if known is not None:
            return known
        if self.config.fallback_limit_kw is not None:
            return self.config.fallback_limit_kw
        return self.grid.transformers[tid].safe_limit_kw

    async def _apply(self, now: datetime, *, live: bool) -> None:
        """One signal per program and group: its events merged, plus the safe limit in fallback."""
        for program in self.config.programs:
            source = source_name(program)
            for tid in self.config.groups:
                intervals: list[Interval] = [iv for ev in self.good[program].values()
                                             if tid in self.config.groups_of(set(ev.eans)) for iv in ev.intervals]
                if self.fallback_since is not None:
                    intervals.append((self.fallback_since, None, self._safe_kw(program, tid)))
                schedule = merge(intervals, self.grid.transformers[tid].capacity_kw)
                payload = signal_payload(source, tid, schedule, now)
                if payload is None:
                    self.applied.pop(f"{program}|{tid}", None)
                    await self.intake.clear(tid, source)
                    continue
                payload["signal_id"] = self._signal_id(f"{program}|{tid}", payload["signal_id"], now)
                try:
                    await self.intake.accept(tid, payload, live=live, via="openadr")
                except SignalError as exc:  # logged and counted by the intake; the last good signal stays
                    self.refusals.append({"program": program, "event_id": None, "signal_id": payload["signal_id"],
                                          "reason": exc.reason, "at": _iso(now), "kept_last_good": True})

    def _signal_id(self, key: str, digest: str, now: datetime) -> str:
        """The same id while the schedule stays the same (a re-send the book ignores); a new one,
        never used before, whenever it changes, even back to an earlier schedule."""
        known = self.applied.get(key)
        if known is not None and known[0] == digest:
            return known[1]
        signal_id = f"{digest[:25]}-{now.strftime('%Y%m%dT%H%M%S%f')}"
        self.applied[key] = (digest, signal_id)
        self._save()
        return signal_id

    # Durable state --------------------------------------------------------------------------------
    async def _stored(self, now: datetime) -> None:
        """Wait until what this round decided is durable (signals and state are written in order)."""
        if self.memory is not None and self._dirty:
            await self.memory.flush_limits()
            self._dirty = False
            self.stored_at = now

    def _save(self) -> None:
        if self.memory is None:
            return
        self._dirty = True
        self.memory.put(STATE, STATE_KEY, {
            "good": {p: [ev.to_record() for ev in events.values()] for p, events in self.good.items()},
            "safe": self.safe, "fallback_since": _iso(self.fallback_since),
            "applied": {key: list(value) for key, value in self.applied.items()},
            "down_since": _iso(self.down_since), "last_contact": _iso(self.last_contact)})

    async def _restore(self) -> None:
        if self.memory is None:
            return
        record = (await self.memory.load(STATE)).get(STATE_KEY)
        if not isinstance(record, dict):
            return
        try:
            for program, events in (record.get("good") or {}).items():
                if program in self.good:
                    self.good[program] = {ev.event_id: ev for ev in map(ParsedEvent.from_record, events)}
            for program, limits in (record.get("safe") or {}).items():
                if program in self.safe:
                    self.safe[program] = {t: float(kw) for t, kw in limits.items() if t in self.config.groups}
            self.applied = {str(k): (str(v[0]), str(v[1])) for k, v in (record.get("applied") or {}).items()}
            self.last_contact = _parse(record.get("last_contact"))
            self.fallback_since = _parse(record.get("fallback_since"))
            if self.fallback_since is not None:
                self.down_since = _parse(record.get("down_since")) or self.fallback_since
                self.metrics.fallback.set(1)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("grid openadr: stored state unreadable (%s); starting from the VTN alone", exc)
            self.good = {p: {} for p in self.config.programs}
            self.safe = {p: {} for p in self.config.programs}
            self.fallback_since = None
            return
        log.info("grid openadr: restored %d event(s)%s", sum(len(e) for e in self.good.values()),
                 " and the safe limit in force" if self.fallback_since else "")


def retry_delay(failures: int, poll_interval_s: float, backoff_max_s: float, jitter: float = 1.0) -> float:
    """Seconds to the next round: the poll interval after a success; after failures 1 s (or the poll
    interval if shorter), doubling per failure up to ``backoff_max_s``, times ``jitter``."""
    if not failures:
        return poll_interval_s
    base = min(poll_interval_s, 1.0)
    delay: float = min(backoff_max_s, base * 2.0 ** min(failures - 1, 30)) * jitter
    return max(MIN_RETRY_S, delay)


def _safe_value(intervals: tuple[Interval, ...], now: datetime) -> float:
    for start, end, kw in intervals:
        if start <= now and (end is None or now < end):
            return kw
    return intervals[0][2]


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _parse(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None


__all__ = ["OpenAdrSource"]
