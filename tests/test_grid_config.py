"""The `grid:` config section and the topology built from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from csms.config import ConfigError, load_config, parse_config
from csms.grid.config import check, parse_grid
from csms.grid.model.topology import Topology

GOOD: dict = {
    "mqtt": {"topic_prefix": "dso-test", "port": 1883},
    "transformers": {
        "T1": {
            "capacity_kw": 400, "phase_limit_a": 580, "safe_limit_kw": 120, "signal_timeout_s": 900,
            "base_load": {"kind": "profile", "profile": [["07:00", 150], ["00:00", 80], ["17:00", 250]]},
            "members": ["CP-*", {"station": "CP-7", "evse": 2, "phases": ["L2"]}],
            "contracts": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "17:00", "end": "20:00",
                           "limit_kw": 150, "name": "evening"}],
        },
        "SITE-A": {"capacity_kw": 60, "parent": "T1", "members": [{"station": "CP-A*", "phases": ["L2", "L3", "L1"]}]},
        "CP-A1-CONN": {"capacity_kw": 22, "parent": "SITE-A", "members": ["CP-A1"]},
    },
    "planning": {"slot_s": 300, "horizon_slots": 12},
    "session_defaults": {"energy_kwh": 15},
    "station_models": [{"pattern": "V2G-*", "v2g": True, "rate_unit": "W"}, {"pattern": "*", "max_current_a": 16}],
}


def _keys(section: dict, file: str = "grid.yaml") -> dict[str, str]:
    issues = check(section, file)
    assert all(i.file == file for i in issues)
    return {i.key: i.message for i in issues}


def test_good_section_parses_into_typed_config() -> None:
    grid = parse_grid(GOOD)
    t1 = grid.transformers["T1"]
    assert (t1.capacity_kw, t1.phase_limit_a, t1.safe_limit_kw, t1.signal_timeout_s) == (400.0, 580.0, 120.0, 900.0)
    assert t1.base_load.profile == (("00:00", 80.0), ("07:00", 150.0), ("17:00", 250.0))  # sorted by time
    assert t1.contracts[0].timezone == "Europe/Amsterdam" and t1.contracts[0].limit_kw == 150.0
    assert grid.transformers["SITE-A"].parent == "T1"
    assert grid.transformers["SITE-A"].safe_limit_kw == 60.0  # no signals expected: safe limit = capacity
    assert grid.mqtt is not None and grid.mqtt.topic_prefix == "dso-test"
    assert (grid.planning.slot_s, grid.planning.horizon_slots, grid.planning.replan_interval_s) == (300, 12, 60.0)
    assert grid.session_defaults.energy_kwh == 15.0 and grid.session_defaults.guaranteed_kwh == 5.0
    assert grid.station_model_for("V2G-3").v2g and grid.station_model_for("V2G-3").rate_unit == "W"
    assert grid.station_model_for("CP-1").max_current_a == 16.0


def test_empty_section_is_valid_and_has_no_broker() -> None:
    grid = parse_grid({})
    assert grid.transformers == {} and grid.mqtt is None and grid.planning.slot_s == 900


def test_list_form_equals_mapping_form() -> None:
    listed = parse_grid({"transformers": [{"id": "T1", "capacity_kw": 100}, {"id": "T2", "capacity_kw": 50}]})
    assert list(listed.transformers) == ["T1", "T2"] and listed.transformers["T2"].capacity_kw == 50.0


@pytest.mark.parametrize(("section", "key", "fragment"), [
    ({"transformers": {"T1": {}}}, "grid.transformers.T1.capacity_kw", "required"),
    ({"transformers": {"T1": {"capacity_kw": -5}}}, "grid.transformers.T1.capacity_kw", "> 0"),
    ({"transformers": {"T1": {"capacity_kw": 10, "capacty": 1}}}, "grid.transformers.T1.capacty", "unknown key"),
    ({"transformers": {"T/1": {"capacity_kw": 10}}}, "grid.transformers.T/1.id", "MQTT topic level"),
    ({"transformers": {"T1": {"capacity_kw": 10, "signal_timeout_s": 60}}}, "grid.transformers.T1.safe_limit_kw",
     "required when signal_timeout_s"),
    ({"transformers": {"T1": {"capacity_kw": 10, "safe_limit_kw": 11}}}, "grid.transformers.T1.safe_limit_kw",
     "exceeds capacity_kw"),
    ({"transformers": {"T1": {"capacity_kw": 10, "parent": "T9"}}}, "grid.transformers.T1.parent", "unknown group"),
    ({"transformers": {"A": {"capacity_kw": 10, "parent": "B"}, "B": {"capacity_kw": 10, "parent": "A"}}},
     "grid.transformers.A.parent", "cycle"),
    ({"transformers": {"T1": {"capacity_kw": 10, "members": [{"station": "X", "phases": ["L4"]}]}}},
     "grid.transformers.T1.members[0].phases", "L1, L2, L3"),
    ({"transformers": {"T1": {"capacity_kw": 10, "members": [{"station": "X", "evse": 0}]}}},
     "grid.transformers.T1.members[0].evse", ">= 1"),
    ({"transformers": {"T1": {"capacity_kw": 10, "contracts": [{"days": ["mon"], "start": "17:00",
                                                                 "end": "20:00", "limit_kw": 5, "timezone": "Mars/Base"}]}}},
     "grid.transformers.T1.contracts[0].timezone", "unknown timezone"),
    ({"transformers": {"T1": {"capacity_kw": 10, "contracts": [{"days": ["monday"], "start": "17:00",
                                                                 "end": "20:00", "limit_kw": 5}]}}},
     "grid.transformers.T1.contracts[0].days", "mon, tue"),
    ({"transformers": {"T1": {"capacity_kw": 10, "contracts": [{"days": ["mon"], "start": "17:60",
                                                                 "end": "20:00", "limit_kw": 5}]}}},
     "grid.transformers.T1.contracts[0].start", "HH:MM"),
    ({"transformers": {"T1": {"capacity_kw": 10, "contracts": [{"days": ["mon"], "start": "17:00", "end": "20:00"}]}}},
     "grid.transformers.T1.contracts[0].limit_kw", "required"),
    ({"transformers": {"T1": {"capacity_kw": 10, "base_load": {"kind": "profile"}}}},
     "grid.transformers.T1.base_load.profile", "required when kind is 'profile'"),
    ({"transformers": {"T1": {"capacity_kw": 10, "base_load": {"kind": "solar"}}}},
     "grid.transformers.T1.base_load.kind", "'zero', 'profile', 'mqtt'"),
    ({"mqtt": {"topic_prefix": "a/#"}}, "grid.mqtt.topic_prefix", "'#'"),
    ({"mqtt": {"port": 70000}}, "grid.mqtt.port", "between 1 and 65535"),
    ({"planning": {"slot_s": "15m"}}, "grid.planning.slot_s", "an integer"),
    ({"station_models": [{"v2g": True}]}, "grid.station_models[0].pattern", "required"),
    ({"station_models": [{"pattern": "*", "rate_unit": "kW"}]}, "grid.station_models[0].rate_unit", "'A', 'W'"),
    ({"session_defaults": {"guaranteed_kwh": 30}}, "grid.session_defaults.guaranteed_kwh", "energy_kwh"),
    ({"transformerz": {}}, "grid.transformerz", "unknown key"),
])
def test_errors_name_the_key_path_and_file(section: dict, key: str, fragment: str) -> None:
    found = _keys(section)
    assert key in found, found
    assert fragment in found[key]


def test_all_issues_are_reported_at_once() -> None:
    found = _keys({"transformers": {"T1": {"capacity_kw": 0}, "T2": {"capacity_kw": 5, "parent": "nope"}},
                   "planning": {"stack_level": -1}})
    assert {"grid.transformers.T1.capacity_kw", "grid.transformers.T2.parent", "grid.planning.stack_level"} <= set(found)
    with pytest.raises(ConfigError) as err:
        parse_grid({"transformers": {"T1": {"capacity_kw": 0}}}, "site.yaml")
    assert "site.yaml: grid.transformers.T1.capacity_kw" in str(err.value)


def test_daemon_config_validates_the_grid_section(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("grid:\n  transformers:\n    T1:\n      capacity_kw: 400\n      safe_limit_kw: 500\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [(i.file, i.key) for i in err.value.issues] == [(str(path), "grid.transformers.T1.safe_limit_kw")]
    assert parse_config({"grid": GOOD}, "ok.yaml").grid == parse_grid(GOOD)  # typed, validated once


def test_topology_assignment_specific_rules_win() -> None:
    topo = Topology(parse_grid(GOOD))
    assert topo.transformer_of("CP-1", 1) == "T1"
    assert topo.wiring("CP-1", 1) == ("L1", "L2", "L3")
    assert topo.wiring("CP-7", 2) == ("L2",) and topo.wiring("CP-7", 1) == ("L1", "L2", "L3")
    # "CP-A1" matches "CP-*" (T1), "CP-A*" (SITE-A) and exactly "CP-A1": the exact rule wins.
    assert topo.transformer_of("CP-A1", 1) == "CP-A1-CONN"
    assert topo.transformer_of("CP-A2", 1) == "SITE-A" and topo.wiring("CP-A2", 1) == ("L2", "L3", "L1")
    assert topo.transformer_of("OTHER", 1) is None


def test_topology_chain_and_nesting() -> None:
    topo = Topology(parse_grid(GOOD))
    assert topo.chain("CP-A1-CONN") == ["CP-A1-CONN", "SITE-A", "T1"]
    assert topo.chain("T1") == ["T1"] and topo.chain("nope") == []
    assert topo.children("T1") == ["SITE-A"] and topo.descendants("T1") == ["SITE-A", "CP-A1-CONN"]
    assert topo.is_under("CP-A1", 1, "T1") and not topo.is_under("CP-1", 1, "SITE-A")
    assert [m.station for m in topo.members("T1")] == ["CP-*", "CP-7"]
    assert topo.roots() == ["T1"]
