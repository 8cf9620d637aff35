"""Scenario files: strict validation naming file and key, exact repeatability, scaling."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from simulators.cli import main as cli_main
from simulators.errors import ScenarioError
from simulators.scenario import load_scenario, parse_scenario

SHIPPED = Path(__file__).resolve().parents[1] / "simulators" / "scenarios"


def base() -> dict:
    return yaml.safe_load((SHIPPED / "residential_evening.yaml").read_text())


@pytest.mark.parametrize("name", ["residential_evening", "office_depot", "loadtest", "mixed_versions"])
def test_shipped_scenarios_load_and_draw_sessions(name: str) -> None:
    scenario = load_scenario(SHIPPED / f"{name}.yaml")
    plans = scenario.plan()
    assert len(plans) == scenario.station_count > 0
    assert sum(len(p.sessions) for p in plans) > 0
    for plan in plans:
        for a, b in zip(plan.sessions, plan.sessions[1:]):
            assert a.evse_id != b.evse_id or b.arrival >= a.departure  # one car per bay at a time


def test_residential_arrivals_peak_in_the_evening() -> None:
    scenario = load_scenario(SHIPPED / "residential_evening.yaml")
    data = base()
    data["clock"]["duration_h"] = 24 * 7
    scenario = parse_scenario(data, file="week.yaml")
    hours = [s.arrival.hour for p in scenario.plan() for s in p.sessions]
    evening = sum(17 <= h < 20 for h in hours) / len(hours)
    night = sum(1 <= h < 4 for h in hours) / len(hours)
    assert evening > 0.25 and night < 0.03


def test_same_seed_same_sessions_and_station_k_independent_of_fleet_size() -> None:
    one = parse_scenario(base(), file="a.yaml").plan()
    two = parse_scenario(base(), file="a.yaml").plan()
    assert [p.sessions for p in one] == [p.sessions for p in two]
    bigger = parse_scenario(base(), file="a.yaml").plan(stations=200)
    assert len(bigger) == 200
    assert bigger[0].sessions == one[0].sessions
    other_seed = base()
    other_seed["seed"] = 7
    assert parse_scenario(other_seed, file="a.yaml").plan()[0].sessions != one[0].sessions


def test_scaling_keeps_group_shares() -> None:
    plans = parse_scenario(base(), file="a.yaml").plan(stations=130)
    per_transformer = {t: sum(1 for p in plans if p.transformer == t) for t in ("TR-WIJK-A", "TR-WIJK-B")}
    assert per_transformer == {"TR-WIJK-A": 80, "TR-WIJK-B": 50}


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d.pop("seed"), "seed"),
    (lambda d: d["station_models"]["kerbside-2x22"].__setitem__("max_current_a", "lots"),
     "station_models.kerbside-2x22.max_current_a"),
    (lambda d: d["station_models"]["kerbside-2x22"].__setitem__("turbo", True), "station_models.kerbside-2x22.turbo"),
    (lambda d: d["transformers"][1]["groups"][0].__setitem__("model", "ghost"), "transformers[1].groups[0].model"),
    (lambda d: d["sessions"]["arrival"].__setitem__("hourly_weights", [1, 2, 3]), "sessions.arrival.hourly_weights"),
    (lambda d: d["sessions"]["dwell_h"].__setitem__("lognormal", {"median": -1, "sigma": 1}),
     "sessions.dwell_h.lognormal.median"),
    (lambda d: d["sessions"]["ev_mix"].__setitem__("tesla", 1), "sessions.ev_mix.tesla"),
    (lambda d: d["clock"].__setitem__("start", "yesterday"), "clock.start"),
    (lambda d: d.__setitem__("extra", 1), "extra"),
])
def test_malformed_scenario_names_key_and_file(mutate, key: str) -> None:
    data = base()
    mutate(data)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, file="bad.yaml")
    assert err.value.key == key and err.value.file == "bad.yaml"
    assert "bad.yaml" in str(err.value) and key in str(err.value)


def test_station_model_file_errors_name_that_file(tmp_path: Path) -> None:
    (tmp_path / "model.yaml").write_text("evse_count: 2\nphases: 2\n")
    data = base()
    data["station_models"]["kerbside-2x22"] = "model.yaml"
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError) as err:
        load_scenario(tmp_path / "scenario.yaml")
    assert err.value.file == str(tmp_path / "model.yaml") and "phases" in str(err.value)


def test_cli_reports_bad_file_and_exits_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    assert cli_main(["check", "--scenario", str(tmp_path / "broken.yaml")]) == 2
    assert "broken.yaml" in capsys.readouterr().err
    assert cli_main(["check", "--scenario", "residential_evening", "--stations", "10"]) == 0
    assert "10 stations" in capsys.readouterr().out
