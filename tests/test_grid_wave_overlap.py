"""A station that does not answer holds no other station's next plan back for its call timeout.

The controller sends each plan as a wave and waits for the wave's answers before it plans again.
A station that takes its time (here 20 s; up to the call timeout, 30 s) kept every other station
waiting as long: a car plugged in meanwhile ran uncontrolled until the slow station answered.
After a failover the same wait was a wave of 28,000 pushes that took 10 s while the moved stations
became ready one by one. Now a wave in flight for a few seconds lets the next plan go out beside it;
the silent station, whose profile is still on the wire, is not sent the same plan again.

Third-party stations (the `ocpp` package) against the daemon, over loopback.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.grid_outside import Site, daemon
from tests.ocpp_station import LibStation
from tests.waiting import until

CALL_TIMEOUT_S = 30.0
SILENT_S = 20.0  # the silent station answers its TxProfile after this long
LATE_PLANNED_WITHIN_S = 12.0  # the overlap after 5 s, a plan and a push (before: 20 s and a 5 s pause)
AFTER_ANSWER_S = 3.0  # watched after the silent station answered: nothing queued behind may follow


def _grid() -> dict[str, Any]:
    return {
        # Room for every car at its full rate: the late one takes nothing from the silent one (if it did,
        # the silent station's cut would go first and the late car's increase would rightly wait for it).
        "transformers": {"T1": {"capacity_kw": 200, "members": [{"station": "OV-*"}]}},
        "planning": {"slot_s": 900, "horizon_slots": 8, "replan_interval_s": 1, "min_push_interval_s": 0},
        "session_defaults": {"energy_kwh": 30, "dwell_h": 6, "guaranteed_kwh": 0},
    }


@pytest.mark.timeout(120)
async def test_a_session_starting_while_a_station_does_not_answer_is_planned_within_seconds(tmp_path: Path) -> None:
    site = Site(tmp_path, _grid(), extra={"websocket": {"call_timeout_s": CALL_TIMEOUT_S}})
    silent = LibStation("OV-SILENT", tx_profile_answer_delay_s=SILENT_S, meter_interval_s=1.0)
    steady = LibStation("OV-STEADY", meter_interval_s=1.0)
    late = LibStation("OV-LATE", meter_interval_s=1.0)
    async with daemon(site):
        try:
            for st in (silent, steady):
                await st.connect(site.ws_url)
                await st.start_transaction(1)
            await until(lambda: silent.calls["TxProfile held"] >= 1, 20, "a TxProfile on the wire to the silent station")
            held_at = time.monotonic()
            await late.connect(site.ws_url)
            await late.start_transaction(1)
            started = time.monotonic()
            await until(lambda: late.tx_pushes(), LATE_PLANNED_WITHIN_S,
                        "a TxProfile for the session that started while the silent station's was on the wire")
            planned_after = time.monotonic() - started
            on_wire_s = time.monotonic() - held_at
            assert not silent.tx_pushes(), "the silent station answered first: nothing overlapped"
            # Plans kept coming meanwhile (every second). The silent station's profile on the wire is the
            # plan it would be sent again, so nothing was queued behind it: once it answers, no copy follows.
            await until(lambda: silent.tx_pushes(), SILENT_S + 5, "the silent station's answer")
            await asyncio.sleep(AFTER_ANSWER_S)  # a window in which no queued copy may arrive
            assert silent.calls["TxProfile held"] == 1, "copies of the plan on the wire were queued behind it"
            print(f"late session planned {planned_after:.1f} s after it started, while the silent station's "
                  f"TxProfile had been on the wire for {on_wire_s:.1f} s")
        finally:
            for st in (silent, steady, late):
                await st.stop()
