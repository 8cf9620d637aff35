"""Fleet runs (faster than real time) against the ocpp-package CSMS and against our daemon."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from simulators.errors import ScenarioError
from simulators.fleet import Fleet
from simulators.results import write_results
from simulators.scenario import parse_scenario
from tests.test_sim_station import MiniCsms


def evening_scenario(**overrides) -> dict:
    data = {
        "name": "test-evening", "seed": 3, "station_id_prefix": "FT",
        "clock": {"start": "2025-01-15T17:00:00+01:00", "duration_h": 0.5, "max_speed": 600},
        "sample_interval_s": 300,
        "defaults": {"meter_interval_s": 120, "tick_s": 10, "authorize": True, "message_attempt_interval_s": 0.2},
        "station_models": {"ac22": {"evse_count": 2, "max_current_a": 32}},
        "ev_models": {"car": {"battery_kwh": 60, "max_current_a": 16}},
        "transformers": [{"id": "T1", "capacity_kw": 50, "groups": [{"model": "ac22", "count": 6}]}],
        "sessions": {"per_evse_per_day": 2.0, "ev_mix": {"car": 1},
                     "arrival": {"hourly_weights": [0] * 17 + [1] + [0] * 6},
                     "dwell_h": {"uniform": [3, 4]}, "energy_kwh": {"uniform": [20, 30]}},
    }
    data.update(overrides)
    return data


async def test_fleet_runs_faster_than_real_time_and_writes_results(tmp_path: Path) -> None:
    csms = MiniCsms()
    scenario = parse_scenario(evening_scenario(), file="evening.yaml")
    async with csms.running():
        fleet = Fleet(csms.url, scenario, speed=600, validate=True, call_timeout_s=5)
        result = await fleet.run()
    assert result.power_kw.shape == (6, 6)
    plugged = sum(1 for p in fleet.plans for s in p.sessions)
    assert plugged > 0 and result.counters["sessions_started"] == plugged
    # every session charges 16 A x 3 phases from its arrival on: energy matches the integral of the series
    started = {m[0] for m in csms.messages if m[1] == "TransactionEvent"}
    assert len(started) == len({p.station_id for p in fleet.plans if p.sessions})
    cuts = [result.first_cut, *result.times]
    spans_h = np.asarray([(b - a).total_seconds() / 3600 for a, b in zip(cuts, cuts[1:])])
    assert np.allclose(spans_h, 300 / 3600, rtol=0.3)  # sampled close to the 5-minute boundaries
    energy_kwh = float((result.power_kw * spans_h).sum())
    assert result.energy_kwh is not None
    assert energy_kwh == pytest.approx(float(result.energy_kwh.sum()), rel=1e-4) and energy_kwh > 0
    assert result.power_kw.max() <= 2 * 16 * 3 * 0.23 + 1e-3  # never above two cars at 16 A
    assert result.load["error_count"] == 0 and result.load["calls_sent"] > 0

    paths = write_results(result, tmp_path)
    rows = list(csv.DictReader(paths["aggregate"].open()))
    assert len(rows) == 6
    assert float(rows[-1]["total_kw"]) == pytest.approx(float(result.power_kw[:, -1].sum()), abs=0.01)
    assert paths["plot"].stat().st_size > 10_000
    assert len(list(csv.DictReader(paths["stations"].open()))) == 36


async def test_misbehaving_csms_never_crashes_the_fleet_and_is_counted() -> None:
    csms = MiniCsms()
    csms.misbehave["TransactionEvent"] = "garbage"
    csms.misbehave["Heartbeat"] = "silent"
    scenario = parse_scenario(evening_scenario(), file="evening.yaml")
    async with csms.running():
        fleet = Fleet(csms.url, scenario, speed=600, call_timeout_s=0.3,
                      station_kwargs={"reconnect_base_s": 0.05})
        result = await fleet.run()
    errors = result.load["errors"]
    assert errors.get("timeout:TransactionEvent", 0) > 0
    assert not any(k.startswith("station_crashed") for k in errors)
    assert np.all(result.power_kw >= 0) and result.power_kw.sum() > 0  # cars charged regardless


def test_speed_above_scenario_limit_is_refused() -> None:
    scenario = parse_scenario(evening_scenario(), file="evening.yaml")
    with pytest.raises(ScenarioError) as err:
        Fleet("ws://127.0.0.1:1/ocpp", scenario, speed=1000)
    assert err.value.key == "clock.max_speed" and "evening.yaml" in str(err.value)


async def test_fleet_against_our_daemon(csms) -> None:
    scenario = parse_scenario(evening_scenario(), file="evening.yaml")
    fleet = Fleet(csms.ws_url, scenario, speed=600, call_timeout_s=5)
    result = await fleet.run()
    assert result.load["error_count"] == 0
    txs = await csms.daemon.store.list_transactions()
    assert {t.station_id for t in txs} == {p.station_id for p in fleet.plans if p.sessions}
    assert result.power_kw.sum() > 0
    # what the CSMS metered is what the stations delivered
    for station in fleet.stations:
        for tx in (t for t in txs if t.station_id == station.station_id):
            evse = station.core.evses[tx.evse_id]
            assert tx.energy_wh is not None and tx.energy_wh <= evse.import_wh + 1e-6
