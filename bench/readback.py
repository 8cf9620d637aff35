"""`python -m bench readback [--sessions N] [--samples N] [--profiles N] [--repeats N] [--prefix P]
[--fresh] [--drop]`: a new grid leader's read-back alone (csms/grid/effects/rebuild.py::rebuild_sessions),
in this process, on the shared Redis (issue 15: part of a failover's takeover, docs/scale-out.md "takeover").

``sessions`` (30,000) running transactions, one per station, each with ``samples`` (20) meter samples
in TransactionEvents (energy register, power, three phase currents, ``samples`` / 5 events), the
car's charging needs and ``profiles`` (1) accepted TxProfiles per station (the session's re-plans,
the newest last), under a Redis prefix of its own that is kept between runs (filled once: it takes a
minute; ``--fresh`` fills it anew, ``--drop`` deletes it afterwards). Prints the read-back's time per
repeat; a micro measurement, not a RESULTS.md section.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from bench.servers import drop_redis_prefix
from csms.domain.transactions import TxEvent
from csms.grid.config import parse_grid
from csms.grid.effects.pusher import TX_PROFILE_ID_BASE, Pusher
from csms.grid.effects.rebuild import rebuild_sessions
from csms.grid.model.sessions import SessionBook
from csms.ocpp.v201.transactions import tx_event
from csms.store.redis_store import RedisStore

REDIS_URL = "redis://127.0.0.1:6379/0"
PREFIX = "bench:readback:"
T0 = datetime(2026, 12, 1, 18, 0, tzinfo=timezone.utc)
WRITES_AT_ONCE = 2000
PER_EVENT = 5  # samples in one meter value: register, power, L1-L3 currents


def _z(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _event(n: int, seq: int, at: datetime) -> TxEvent:
    sampled = [{"value": 1000.0 * seq + n % 997, "context": "Sample.Periodic"},
               {"value": 11.04, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "kW"}},
               *({"value": 16.0, "measurand": "Current.Import", "phase": p, "unitOfMeasure": {"unit": "A"}}
                 for p in ("L1", "L2", "L3"))]
    payload: dict[str, Any] = {
        "eventType": "Started" if seq == 0 else "Updated", "timestamp": _z(at),
        "triggerReason": "MeterValuePeriodic", "seqNo": seq,
        "transactionInfo": {"transactionId": f"RB-{n}-tx", "chargingState": "Charging"},
        "meterValue": [{"timestamp": _z(at), "sampledValue": sampled}]}
    if seq == 0:
        payload["evse"] = {"id": 1, "connectorId": 1}
        payload["idToken"] = {"idToken": f"TOK-{n}", "type": "ISO14443"}
    return tx_event(payload)


async def _fill_one(store: RedisStore, n: int, events: int, profiles: int) -> None:
    sid = f"RB-{n}"
    for seq in range(events):
        at = T0 + timedelta(minutes=5 * seq, seconds=n % 60)
        await store.record_transaction_event(sid, _event(n, seq, at), at)
    needs = {"requestedEnergyTransfer": "AC_three_phase", "departureTime": _z(T0 + timedelta(hours=8)),
             "acChargingParameters": {"energyAmount": 20000, "evMinCurrent": 6, "evMaxCurrent": 32,
                                      "evMaxVoltage": 400}}
    await store.record_ev_charging_needs(sid, 1, {"evseId": 1, "chargingNeeds": needs}, T0)
    for k in range(profiles):  # the last, newest, with 16 A
        limit = 16.0 if k == profiles - 1 else 10.0
        profile = {"id": TX_PROFILE_ID_BASE + 1, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
                   "chargingProfileKind": "Absolute", "transactionId": f"RB-{n}-tx",
                   "chargingSchedule": [{"id": 1, "startSchedule": _z(T0), "chargingRateUnit": "A",
                                         "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit,
                                                                     "numberPhases": 3}]}]}
        await store.record_charging_profile(sid, 1, profile, "Accepted", None, T0 + timedelta(minutes=k))


def _filled(sessions: int, samples: int, profiles: int) -> str:
    return f"{sessions}x{samples}" + (f"x{profiles}p" if profiles != 1 else "")


async def _fill(store: RedisStore, prefix: str, sessions: int, samples: int, profiles: int) -> None:
    events = max(1, samples // PER_EVENT)
    started = time.monotonic()
    for first in range(0, sessions, WRITES_AT_ONCE):
        await asyncio.gather(*(_fill_one(store, n, events, profiles)
                               for n in range(first, min(first + WRITES_AT_ONCE, sessions))))
    await store._r.set(f"{prefix}filled", _filled(sessions, samples, profiles))
    print(f"filled {sessions} sessions x {events * PER_EVENT} samples, {profiles} profiles each"
          f" in {time.monotonic() - started:.1f} s")


async def _never(*_: Any, **__: Any) -> Any:
    raise AssertionError("the read-back sends nothing")


async def run(sessions: int, samples: int, repeats: int, fresh: bool, drop: bool,
              prefix: str = PREFIX, profiles: int = 1) -> list[float]:
    store = RedisStore(REDIS_URL, prefix)
    await store.open()
    try:
        if fresh or await store._r.get(f"{prefix}filled") != _filled(sessions, samples, profiles):
            await drop_redis_prefix(REDIS_URL, prefix)
            await _fill(store, prefix, sessions, samples, profiles)
        grid = parse_grid({"transformers": {"T1": {"capacity_kw": 10_000, "members": ["RB-*"]}}})
        now = T0 + timedelta(hours=1)
        times = []
        for _ in range(repeats):
            book = SessionBook()
            started = time.monotonic()
            count = await rebuild_sessions(store, store, book, Pusher(_never, clock=lambda: now), None, grid, now)
            times.append(time.monotonic() - started)
            measured = sum(1 for s in book if s.power_kw is not None and s.energy_wh is not None)
            installed = sum(1 for s in book if s.setpoint_a == 16.0)
            print(f"read back {count} sessions ({measured} with meter readings, {installed} with their last"
                  f" profile) in {times[-1]:.2f} s")
        print(f"read-back of {sessions} sessions: median {statistics.median(times):.2f} s,"
              f" min {min(times):.2f} s over {repeats}")
        return times
    finally:
        await store.close()
        if drop:
            await drop_redis_prefix(REDIS_URL, prefix)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench readback", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=30_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--profiles", type=int, default=1, help="accepted TxProfiles pushed per station")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prefix", default=PREFIX, help="the Redis key prefix of the filled sessions")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--drop", action="store_true")
    args = parser.parse_args(argv)
    asyncio.run(run(args.sessions, args.samples, args.repeats, args.fresh, args.drop, args.prefix, args.profiles))
    return 0
