"""Which clock simulated stations run on, mixed-version fleets, and where `csms-sim fleet` writes.

The default is the wall clock (a central system's Absolute profiles then mean what it thinks they
mean); a scenario with a date pins the stations' clocks, `--clock-offset` skews them, and both say
so when the stations connect and in the fleet's report.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from profiles.composite import parse_datetime
from simulators.cli import _duration_s, _parser, default_results_dir
from simulators.clock import Clock
from simulators.errors import ScenarioError
from simulators.fleet import Fleet
from simulators.results import report
from simulators.scenario import load_scenario, parse_scenario
from tests.sim_csms import Csms
from tests.test_sim_fleet import evening_scenario

SHIPPED = Path(__file__).resolve().parents[1] / "simulators" / "scenarios"


def wall_scenario(**clock: Any) -> dict:
    data = evening_scenario()
    data["clock"] = {"start": "17:00", "timezone": "Europe/Amsterdam", "duration_h": 0.5, "max_speed": 600, **clock}
    return data


def stamps(csms: Csms) -> list[datetime]:
    return [parse_datetime(p["timestamp"]) for _, a, p in csms.messages if a == "TransactionEvent"]


# ------------------------------------------------------------------------------------------ the clock


def test_a_clock_says_what_it_is() -> None:
    assert Clock().origin == "wall" and Clock().describe() == "clock: wall clock"
    assert abs(Clock().skew_s) < 1
    pinned = Clock(240, datetime(2025, 1, 15, 14, tzinfo=UTC))
    assert pinned.origin == "pinned" and pinned.skew_s < -86_400
    assert pinned.describe().startswith("clock: pinned to 2025-01-15T14:00:00+00:00 (-")
    assert "240x" in pinned.describe() and "days against the wall clock" in pinned.describe()
    skewed = Clock(1, datetime.now(UTC) - timedelta(hours=2), origin="offset")
    assert skewed.describe() == "clock: wall clock -2.0 h (skewed on purpose)"
    assert skewed.info()["mode"] == "offset" and skewed.info()["skew_s"] == pytest.approx(-7200, abs=1)


def test_time_of_day_start_runs_on_the_wall_clock_and_a_date_pins_it() -> None:
    wall = parse_scenario(wall_scenario(), file="wall.yaml")
    assert not wall.pinned and wall.timezone == "Europe/Amsterdam"
    local = wall.start.astimezone(ZoneInfo("Europe/Amsterdam"))
    assert (local.hour, local.minute) == (17, 0) and "on the wall clock" in wall.clock_text()
    pinned = parse_scenario(evening_scenario(), file="pinned.yaml")
    assert pinned.pinned and pinned.start == datetime(2025, 1, 15, 17, tzinfo=timezone(timedelta(hours=1)))
    assert "pinned" in pinned.clock_text()
    shipped = load_scenario(SHIPPED / "residential_evening.yaml")
    assert not shipped.pinned  # the README's scenario runs on today's clock


def test_sessions_are_the_same_whatever_day_the_scenario_runs() -> None:
    wall = parse_scenario(wall_scenario(), file="wall.yaml").plan()
    pinned = parse_scenario(evening_scenario(), file="pinned.yaml").plan()
    def offsets(plans: list, start: datetime) -> list:
        return [[(s.arrival - start, s.departure - start, s.energy_need_kwh) for s in p.sessions] for p in plans]
    assert offsets(wall, parse_scenario(wall_scenario(), file="w").start) == offsets(
        pinned, datetime(2025, 1, 15, 17, tzinfo=timezone(timedelta(hours=1))))


@pytest.mark.parametrize(("clock", "key", "words"), [
    ({"start": 1020}, "clock.start", "quote a time of day"),
    ({"start": "25:00"}, "clock.start", "ISO 8601"),
    ({"start": "2025-01-15T17:00:00+01:00", "timezone": "Europe/Amsterdam"}, "clock.timezone", "time-of-day"),
    ({"timezone": "Mars/Olympus"}, "clock.timezone", "unknown time zone"),
    ({"tick": 1}, "clock.tick", "unknown key"),
])
def test_bad_clock_settings_name_the_key(clock: dict, key: str, words: str) -> None:
    data = wall_scenario(**clock)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, file="bad.yaml")
    assert err.value.key == key and words in str(err.value)


async def test_fleet_defaults_to_the_wall_clock_and_reports_it(caplog: pytest.LogCaptureFixture) -> None:
    csms = Csms()
    scenario = parse_scenario(wall_scenario(), file="wall.yaml")
    caplog.set_level(logging.INFO, logger="simulators")
    async with csms.running():
        fleet = Fleet(csms.url, scenario, speed=600, validate=True, call_timeout_s=5)
        assert fleet.clock.origin == "wall"
        began = datetime.now(UTC)
        result = await fleet.run()
    assert result.clock["mode"] == "wall" and abs(result.clock["skew_s"]) < 5
    assert report(result)["clock"]["mode"] == "wall"
    first = min(stamps(csms))
    assert -5 < (first - began).total_seconds() < 0.6 * 3600  # today, inside the simulated half hour
    assert sum(len(p.sessions) for p in fleet.plans) == result.counters["sessions_started"] > 0
    assert any("connected as OCPP 2.0.1; clock: wall clock" in r.getMessage() for r in caplog.records)


async def test_a_pinned_scenario_says_so_and_an_offset_skews_the_stations(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="simulators")
    csms = Csms()
    async with csms.running():
        pinned = await Fleet(csms.url, parse_scenario(evening_scenario(), file="p.yaml"), speed=600,
                             call_timeout_s=5).run(duration_s=600)
    assert pinned.clock["mode"] == "pinned" and pinned.clock["start"].startswith("2025-01-15T16:00:00")
    assert min(stamps(csms)).year == 2025
    assert any("clock: pinned to 2025-01-15" in r.getMessage() for r in caplog.records)

    csms = Csms()
    async with csms.running():
        fleet = Fleet(csms.url, parse_scenario(wall_scenario(), file="w.yaml"), speed=600, call_timeout_s=5,
                      clock_offset_s=-7200)
        began = datetime.now(UTC)
        skewed = await fleet.run()
    assert skewed.clock["mode"] == "offset" and skewed.clock["skew_s"] == pytest.approx(-7200, abs=5)
    first = min(stamps(csms))
    assert timedelta(hours=1.4) < began - first  # two hours behind, minus what the run advanced


def test_start_pins_any_scenario_and_moves_its_sessions_along() -> None:
    pin = datetime(2030, 6, 1, 16, tzinfo=UTC)
    scenario = parse_scenario(wall_scenario(), file="w.yaml")
    fleet = Fleet("ws://127.0.0.1:1/ocpp", scenario, start=pin, clock_offset_s=60)
    assert fleet.clock.origin == "pinned" and fleet.clock.start == pin + timedelta(seconds=60)
    nominal = scenario.plan()
    shift = fleet.clock.start - scenario.start
    assert [s.arrival for p in fleet.plans for s in p.sessions] == [s.arrival + shift for p in nominal
                                                                     for s in p.sessions]


def test_command_line_clock_options() -> None:
    args = _parser().parse_args(["fleet", "--url", "ws://127.0.0.1:1/ocpp", "--scenario", "x", "--clock-offset=-2h",
                                 "--start", "2025-01-15T14:00:00+01:00"])
    assert args.clock_offset == -7200 and args.start == datetime(2025, 1, 15, 13, tzinfo=UTC)
    assert [_duration_s(t) for t in ("90", "+90s", "-1.5m", "1d")] == [90, 90, -90, 86_400]
    with pytest.raises(SystemExit):
        _parser().parse_args(["fleet", "--url", "u", "--scenario", "x", "--start", "2025-01-15T14:00"])


# ------------------------------------------------------------------------------------------ mixed versions


def test_version_mix_is_deterministic_keeps_shares_and_lets_models_choose() -> None:
    data = evening_scenario()
    data["station_models"] = {"any": {"evse_count": 1}, "old": {"evse_count": 1, "ocpp_version": 1.6}}
    data["transformers"][0]["groups"] = [{"model": "any", "count": 100}, {"model": "old", "count": 20}]
    data["ocpp_versions"] = {1.6: 0.5, "2.0.1": 0.3, 2.1: 0.2}
    scenario = parse_scenario(data, file="mix.yaml")
    plans = scenario.plan()
    mixed = [p.model.ocpp_version for p in plans[:100]]
    assert (mixed.count("1.6"), mixed.count("2.0.1"), mixed.count("2.1")) == pytest.approx((50, 30, 20), abs=2)
    assert {p.model.ocpp_version for p in plans[100:]} == {"1.6"}  # the model names its version
    assert [p.model.ocpp_version for p in parse_scenario(data, file="mix.yaml").plan(stations=12)][:5] == mixed[:5]
    data["ocpp_versions"] = {"3.0": 1}
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, file="mix.yaml")
    assert err.value.key == "ocpp_versions.3.0"


async def test_a_mixed_version_fleet_boots_and_charges_on_every_version() -> None:
    data = evening_scenario()
    data["ocpp_versions"] = {"1.6": 1, "2.0.1": 1, "2.1": 1}
    data["transformers"][0]["groups"][0]["count"] = 9
    csms = Csms()
    async with csms.running():
        fleet = Fleet(csms.url, parse_scenario(data, file="mix.yaml"), speed=600, validate=True, call_timeout_s=5)
        result = await fleet.run()
    assert result.versions == {"1.6": 3, "2.0.1": 3, "2.1": 3}
    assert result.load["error_count"] == 0 and result.power_kw.sum() > 0
    charged = {fleet.stations[i].model.ocpp_version for i in range(9) if result.power_kw[i].sum() > 0}
    assert charged == {"1.6", "2.0.1", "2.1"}
    assert csms.of("StartTransaction") and csms.of("TransactionEvent")
    assert report(result)["ocpp_versions"] == {"1.6": 3, "2.0.1": 3, "2.1": 3}


def test_shipped_mixed_scenario_mixes_versions() -> None:
    plans = load_scenario(SHIPPED / "mixed_versions.yaml").plan()
    assert {p.model.ocpp_version for p in plans} == {"1.6", "2.0.1", "2.1"}
    assert all(p.model.v2g for p in plans if p.model.name == "bidi-1x11")


# ------------------------------------------------------------------------------------------ results path


def test_default_results_dir_is_under_var_and_never_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    at = datetime(2026, 3, 1, 18, 30, tzinfo=UTC)
    first = default_results_dir("residential evening/peak", at)
    assert first == Path("var/sim-results/residential-evening-peak-20260301T183000Z")
    first.mkdir(parents=True)
    assert default_results_dir("residential evening/peak", at).name.endswith("-2")


async def test_csms_sim_fleet_writes_under_var_and_prints_the_path_and_the_clock(tmp_path: Path) -> None:
    data = wall_scenario(duration_h=0.1)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(data))
    csms = Csms()
    async with csms.running():
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "simulators.cli", "fleet", "--url", csms.url, "--scenario", "tiny.yaml",
            "--speed", "600", "--no-progress", "--ocpp-version", "1.6", cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    stderr = err.decode()
    assert "6 stations (OCPP 1.6: 6); clock: wall clock, running 600x real time" in stderr
    results = list((tmp_path / "var" / "sim-results").iterdir())
    assert len(results) == 1 and results[0].name.startswith("test-evening-")
    assert f"results in {results[0]}" in stderr
    saved = json.loads((results[0] / "report.json").read_text())
    assert saved["clock"]["mode"] == "wall" and saved["ocpp_versions"] == {"1.6": 6}
    assert not (tmp_path / "sim-results").exists()
    assert json.loads(out)["load"]["error_count"] == 0
