"""`csms demo` measures like a grid operator and tells drivers' outcomes honestly, and the same seed
gives the same figures (within 5 %) run after run.

Grid side: energy above the limit per 15-minute settlement interval and per minute after the reaction
window, and the worst interval average, from energy (not instantaneous samples). Drivers: energy at
departure against need, grid side and battery side apart, exported energy counted, and only for cars
that left (the others are counted as still plugged in).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path
from typing import Any

from tests.grid_outside import ENV, REPO

SEED, STATIONS, SECONDS = 11, 16, 20
REPRODUCIBLE = {("grid", "over_kwh"), ("grid", "worst_interval_over_kw"), ("grid", "over_kwh_minutes"),
                ("drivers", "need_kwh"), ("drivers", "battery_kwh"), ("drivers", "grid_import_kwh"),
                ("drivers", "grid_export_kwh")}


async def run_demo(tmp_path: Path, name: str) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "csms", "demo", "--seconds", str(SECONDS), "--stations", str(STATIONS),
        "--seed", str(SEED), "--out", str(tmp_path / f"{name}.png"), "--json", str(out),
        cwd=REPO, env=ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), SECONDS + 120)
    assert proc.returncode == 0, (stdout + stderr).decode()[-3000:]
    return json.loads(out.read_text())


def close(a: float, b: float) -> bool:
    return abs(a - b) <= max(0.05 * max(abs(a), abs(b)), 0.5)


async def test_demo_figures_are_settlement_measures_and_reproducible(tmp_path: Path) -> None:
    first = await run_demo(tmp_path, "one")
    grid, drivers = first["grid"], first["drivers"]
    assert grid["settlement_interval_s"] == 900 and grid["reaction_window_s"] > 0
    assert len(grid["intervals"]) >= 20  # six simulated hours and more, in 15-minute intervals
    for interval in grid["intervals"]:
        assert set(interval) >= {"start", "energy_kwh", "limit_kwh", "over_kwh"}
        assert math.isclose(interval["over_kwh"], max(0.0, interval["energy_kwh"] - interval["limit_kwh"]),
                            abs_tol=1e-6)
    assert math.isclose(grid["over_kwh"], sum(i["over_kwh"] for i in grid["intervals"]), abs_tol=1e-6)
    assert grid["intervals_over"] == sum(i["over_kwh"] > 0 for i in grid["intervals"])
    assert drivers["departed"] >= STATIONS // 2, drivers  # the evening runs until most cars have left
    assert drivers["departed"] + drivers["plugged_in_at_end"] == drivers["sessions"]
    assert 0 < drivers["battery_kwh"] <= drivers["grid_import_kwh"] - drivers["grid_export_kwh"] + 1e-6, drivers
    assert drivers["grid_export_kwh"] > 0  # the V2G cars discharged below the non-EV load, and it counts
    assert drivers["fully_served"] <= drivers["departed"]

    second = await run_demo(tmp_path, "two")
    differ = {f"{part}.{key}": (first[part][key], second[part][key]) for part, key in REPRODUCIBLE
              if not close(first[part][key], second[part][key])}
    assert not differ, f"same seed, different figures: {differ}"
