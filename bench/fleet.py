"""The stations' side of the grid benchmarks (part 2's reaction, part 8's scale-out): charging lean stations
that answer the grid controller's calls, apply TxProfiles, report metered power and time their first
acknowledgement of a new limit.

Shared by the in-process fleets (bench/reaction.py, bench/cluster.py) and the station processes of the
failover (bench/stationgen.py), so every one answers the server the same way. Times are
``time.perf_counter()`` differences: CLOCK_MONOTONIC on Linux, one clock for every process of the machine,
so a parent can hand its own ``t0`` to a station process and compare what comes back.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from typing import Any

import orjson

from bench import loadgen
from bench import messages as msg
from bench.wsclient import LeanStation

CAR_A = 16.0
PHASES = 3
KW_PER_A = PHASES * 230.0 / 1000.0
CAR_W = CAR_A * PHASES * 230.0


class Fleet:
    """The stations' side: answers the server's calls, applies TxProfiles, reports metered power."""

    def __init__(self) -> None:
        self.stations: list[LeanStation] = []
        self.t0 = 0.0
        self.armed = False
        self.acks: dict[str, float] = {}
        self.reported_kw: dict[str, float] = {}
        self.total_kw = 0.0  # sum of reported_kw, kept as they change (a sum per reply was O(n) each)
        self.limit_kw = 0.0
        self.under_at: float | None = None
        self.last_profile_at = time.perf_counter()
        self.profiles = 0
        self.rejected = 0

    def handlers(self) -> dict[str, Any]:
        return {"GetVariables": self._get_variables, "SetChargingProfile": self._set_profile,
                "GetChargingProfiles": self._get_profiles, "ClearChargingProfile": self._clear_profile}

    @staticmethod
    def _get_variables(st: LeanStation, uid: str, payload: dict[str, Any]) -> dict[str, Any]:
        values = {"RateUnit": "A,W", "ProfileStackLevel": "8", "PeriodsPerSchedule": "24"}
        results = []
        for item in payload.get("getVariableData", []):
            name = item["variable"]["name"]
            entry = {"component": item["component"], "variable": item["variable"],
                     "attributeStatus": "Accepted" if name in values else "UnknownVariable"}
            if name in values:
                entry["attributeValue"] = values[name]
            results.append(entry)
        return {"getVariableResult": results}

    def _set_profile(self, st: LeanStation, uid: str, payload: dict[str, Any]) -> dict[str, Any]:
        now = time.perf_counter()
        self.last_profile_at = now
        self.profiles += 1
        profile = payload.get("chargingProfile", {})
        if profile.get("chargingProfilePurpose") != "TxProfile":
            return {"status": "Accepted"}
        try:
            schedule = profile["chargingSchedule"][0]
            limit = float(schedule["chargingSchedulePeriod"][0]["limit"])
            phases = schedule["chargingSchedulePeriod"][0].get("numberPhases", PHASES)
            amps = limit if schedule["chargingRateUnit"] == "A" else limit / (phases * 230.0)
        except (KeyError, IndexError, TypeError, ValueError):
            self.rejected += 1
            return {"status": "Rejected"}
        amps = min(CAR_A, amps)
        amps = 0.0 if amps < 6.0 else amps
        st.state["w"] = amps * PHASES * 230.0
        st.state["profile"] = (int(payload.get("evseId", 1)), profile)  # what GetChargingProfiles reports
        if self.armed and st.station_id not in self.acks:
            self.acks[st.station_id] = now - self.t0
        kw = st.state["w"] / 1000.0
        st.state["wh"] = st.state.get("wh", 0.0) + 1.0
        st.call("MeterValues", msg.meter_values(st.state["wh"], st.state["w"]),
                lambda s, frame, _: self._metered(s, kw))
        return {"status": "Accepted"}

    def _get_profiles(self, st: LeanStation, uid: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The TxProfile the station runs, as a station that came back without booting reports it (the
        ReportChargingProfiles goes out right after this answer)."""
        held = st.state.get("profile")
        if held is None or payload.get("chargingProfile", {}).get("chargingProfilePurpose") not in (None, "TxProfile"):
            return {"status": "NoProfiles"}
        evse, profile = held
        report = {"requestId": payload["requestId"], "chargingLimitSource": "CSO", "evseId": evse,
                  "chargingProfile": [profile], "tbc": False}
        asyncio.get_running_loop().call_soon(st.call, "ReportChargingProfiles", orjson.dumps(report).decode(), _ignore)
        return {"status": "Accepted"}

    @staticmethod
    def _clear_profile(st: LeanStation, uid: str, payload: dict[str, Any]) -> dict[str, Any]:
        st.state.pop("profile", None)
        return {"status": "Accepted"}

    def report(self, station_id: str, kw: float) -> None:
        """The station's metered power as the server last heard it."""
        self.total_kw += kw - self.reported_kw.get(station_id, 0.0)
        self.reported_kw[station_id] = kw

    def _metered(self, st: LeanStation, kw: float) -> None:
        self.report(st.station_id, kw)
        if self.armed and self.under_at is None and self.total_kw <= self.limit_kw + 1e-6:
            self.under_at = time.perf_counter() - self.t0

    def charging(self) -> None:
        """Every station draws the car's full current (before the first transaction starts)."""
        for st in self.stations:
            st.state["w"] = CAR_W
            self.report(st.station_id, CAR_W / 1000.0)

    def arm(self, limit_kw: float, t0: float | None = None) -> None:
        """Time first acknowledgements from now (or from ``t0``, a perf_counter reading of any process)."""
        self.acks = {}
        self.under_at = None
        self.limit_kw = limit_kw
        self.t0 = time.perf_counter() if t0 is None else t0
        self.armed = True


def _ignore(st: LeanStation, frame: list[Any], seconds: float) -> None:
    """A reply nothing waits for."""


#: After a publish, how long no profile at all means the server has nothing to send (a plan for
#: 10,000 stations takes a few seconds before its first profile goes out; 3 s was too short).
ANSWER_WAIT_S = 10.0


async def quiet(fleet: Fleet, quiet_s: float, timeout: float, since: float | None = None) -> None:
    """Until no profile arrived for ``quiet_s`` and no station is busy. ``since`` (perf_counter
    of a publish): the server's answer to it must have had time to start first, else the next
    publish would overlap the wave still to come and both would be measured as one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.perf_counter()
        answered = since is None or fleet.last_profile_at >= since
        window = quiet_s if answered else max(quiet_s, ANSWER_WAIT_S)
        if now - max(fleet.last_profile_at, since or 0.0) >= window and not any(st.busy for st in fleet.stations):
            return
        await asyncio.sleep(0.05)


#: How long a repeat waits for the fleet to run the restored full limit before it publishes anyway.
RESTORE_WAIT_S = 60.0


async def restored(fleet: Fleet, timeout: float) -> bool:
    """Until every station runs at full power again (the restored limit's plan reached it), or
    ``timeout``; False on timeout. Quiet alone is not enough: the refined plan for the previous
    low limit may still be arriving and the restore's plan come seconds later, and a new limit
    looser than what the fleet still runs needs no cut, so that repeat would time a slow re-plan."""
    full_w = CAR_W - 1e-6
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(st.state.get("w", 0.0) >= full_w for st in fleet.stations):
            return True
        await asyncio.sleep(0.05)
    return False


def not_restored_note(count: int | None) -> str:
    """How a report's verdict names the repeats that had to go on without :func:`restored` ("" if none)."""
    return f", {count} not restored to full power first" if count else ""


#: Connect-and-boot passes: a handshake the loaded server timed out is tried again (until the deadline).
SETUP_PASSES = 3


async def connect_spread(fleet: Fleet, ids_by_node: list[list[str]], ports: list[int], prefix: str, *,
                         concurrency: int, deadline: float, local_host: str | None = None) -> tuple[
                             dict[str, int], Counter[str]]:
    """Connect and boot ``ids_by_node[k]`` onto the node listening on ``ports[k]``, every node at once (at most
    ``concurrency`` handshakes in flight in all), with the fleet's handlers; the stations join ``fleet``.
    Returns which node each station is on (its index) and the failures by pass and reason."""
    where: dict[str, int] = {}
    failures: Counter[str] = Counter()
    pending = [list(ids) for ids in ids_by_node]
    per_node = max(10, concurrency // max(1, len(ports)))
    for attempt in range(SETUP_PASSES):
        conns = await asyncio.gather(*(
            loadgen.connect_many(ids, port, prefix, handlers=fleet.handlers(), concurrency=per_node,
                                 deadline=deadline, local_host=local_host)
            for ids, port in zip(pending, ports, strict=True)))
        for k, conn in enumerate(conns):
            fleet.stations += conn.stations
            where.update((st.station_id, k) for st in conn.stations)
            for why, count in conn.failures.items():
                failures[f"pass {attempt + 1}: {re.sub(r'G[A-Z]-[0-9]+: ', '', why)}"] += count
        pending = [[sid for sid in ids if sid not in where] for ids in pending]
        if not any(pending) or time.monotonic() > deadline:
            break
    return where, failures
