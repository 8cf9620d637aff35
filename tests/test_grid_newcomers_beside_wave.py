"""A plan beside a wave in flight is for the newcomers only: the sessions holding a schedule keep it.

While a wave is in flight (here one station takes 12 s to answer its TxProfile; after a failover,
30,000 pushes take as long) the next plan may go out beside it after a few seconds, so a car
plugged in meanwhile is not left uncontrolled. That plan used to re-plan every session: at a tight
limit the newcomer's share came out of everyone else's, so every station got its schedule again,
a second full wave on top of the first. Now the sessions that hold (or have on the wire) a schedule
keep it, budgeted at its peak, and only the newcomer is planned, into what is left; the full plan,
which shares the room out again, follows once the slow wave has ended.

Third-party stations (the `ocpp` package) against the daemon, over loopback.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.grid_outside import Site, daemon
from tests.ocpp_station import LibStation
from tests.waiting import until

CAPACITY_KW = 30.0
CAR_A = 16.0
KW_PER_A = 3 * 230.0 / 1000.0
SILENT_S = 12.0  # the silent station answers its TxProfile after this long
#: What is left for the newcomer beside two cars held at their full 16 A.
LEFT_A = (CAPACITY_KW - 2 * CAR_A * KW_PER_A) / KW_PER_A


def _grid() -> dict[str, Any]:
    return {
        # Room for two cars at full rate, not three: the newcomer's share would come out of the others'.
        "transformers": {"T1": {"capacity_kw": CAPACITY_KW, "members": [{"station": "NB-*"}]}},
        "planning": {"slot_s": 900, "horizon_slots": 8, "replan_interval_s": 1, "min_push_interval_s": 0,
                     "margin_kw": 0, "margin_percent": 0},
        # Each car needs more than it can get in its stay: the plan shares the room out, no car waits.
        "session_defaults": {"energy_kwh": 100, "dwell_h": 4, "guaranteed_kwh": 0},
        "station_models": [{"pattern": "NB-*", "max_current_a": CAR_A}],
    }


@pytest.mark.timeout(120)
async def test_a_plan_beside_a_slow_wave_sends_only_to_the_newcomer_then_the_full_plan_follows(
        tmp_path: Path) -> None:
    site = Site(tmp_path, _grid(), extra={"websocket": {"call_timeout_s": 30.0}})
    silent = LibStation("NB-SILENT", meter_interval_s=1.0, tx_profile_answer_delay_s=SILENT_S)
    steady = LibStation("NB-STEADY", meter_interval_s=1.0)
    late = LibStation("NB-LATE", meter_interval_s=1.0)
    async with daemon(site):
        try:
            for st in (steady, silent):
                await st.connect(site.ws_url)
                await st.start_transaction(1)
            await until(lambda: silent.calls["TxProfile held"] >= 1, 20, "a TxProfile on the wire to the silent station")
            held_at = time.monotonic()
            await until(lambda: steady.tx_pushes() and steady.limit_a(1) >= CAR_A, 5,
                        "the steady station running its full rate")
            steady_before = len(steady.tx_pushes())
            await late.connect(site.ws_url)
            await late.start_transaction(1)
            await until(lambda: late.tx_pushes(), SILENT_S, "the newcomer's TxProfile beside the slow wave")
            beside = late.tx_pushes()[0]
            answered_before = not silent.tx_pushes(since_mono=held_at)
            assert answered_before, "the silent station answered before the newcomer was planned: nothing overlapped"
            assert beside.first_limit <= LEFT_A + 0.1, (
                f"the newcomer got {beside.first_limit} A beside two cars held at {CAR_A} A: more than the "
                f"{LEFT_A:.1f} A left under {CAPACITY_KW} kW")
            await until(lambda: silent.tx_pushes(since_mono=held_at), SILENT_S + 5, "the silent station's answer")
            assert len(steady.tx_pushes()) == steady_before, (
                "the steady station, holding its schedule, was sent a plan beside the slow wave")
            # The full plan shares the room out again: the held cars give up some of theirs to the newcomer.
            await until(lambda: steady.limit_a(1) < CAR_A and late.limit_a(1) > beside.first_limit + 0.5, 20,
                        "the full plan after the slow wave")
            assert steady.limit_a(1) + silent.limit_a(1) + late.limit_a(1) <= CAPACITY_KW / KW_PER_A + 0.1
            print(f"newcomer planned at {beside.first_limit} A beside the slow wave (left: {LEFT_A:.1f} A); after it: "
                  f"{steady.limit_a(1)}/{silent.limit_a(1)}/{late.limit_a(1)} A")
        finally:
            for st in (silent, steady, late):
                await st.stop()
