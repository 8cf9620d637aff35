"""Simulated stations at OCPP security profiles 1-3: settings, CLI, device model, and our daemon over real TLS.

Certificates come from the security tests' PKI helpers (`tests.test_security_pki`): a CA, a server
certificate for 127.0.0.1 and station certificates whose CN is the station id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from csms.security import auth, passwords
from csms.security.credentials import register_station
from csms.security.rotation import RotationResult, rotate_password
from simulators.cli import SECURITY_OPTIONS
from simulators.cli import main as cli_main
from simulators.clock import Clock, ManualClock
from simulators.errors import ScenarioError
from simulators.ev import EV
from simulators.fleet import Fleet
from simulators.models import EVModel, StationModel
from simulators.results import report
from simulators.scenario import load_scenario, parse_scenario
from simulators.security import RedactSecrets, SecuritySettings, StationCredentials
from simulators.station import SimStation
from simulators.station_core import StationCore
from tests.daemon_fixture import RunningDaemon
from tests.test_security_pki import Pki, issue, pem_cert, pem_key, pki  # noqa: F401 - fixture
from tests.test_security_profiles import basic, plain_daemon, refused_status, tls_daemon, wss
from tests.test_sim_e2e_daemon import until
from tests.test_sim_fleet import evening_scenario

TEMPLATE = "{station_id}-secret-password-0001"


def template_password(station_id: str) -> str:
    return TEMPLATE.format(station_id=station_id)


def scenario_data(**overrides: Any) -> dict:
    data = evening_scenario(**overrides)
    data["station_models"] = {"ac22": {"evse_count": 1, "max_current_a": 32}}
    data["transformers"][0]["groups"][0]["count"] = 2
    return data


# Settings: validation names the file and key --------------------------------------------------------------


@pytest.mark.parametrize("security, model_security, key, message", [
    ({"profile": 4, "password_template": TEMPLATE}, None, "security.profile", "1, 2 or 3"),
    ({"profile": 1, "password": "too-short"}, None, "security.password", "16-40 characters"),
    ({"profile": 1, "password_template": "{station}-secret-password"}, None, "security.password_template",
     "unknown placeholder {station}"),
    ({"profile": 1, "password_template": "{station_id"}, None, "security.password_template", "malformed"),
    ({"profile": 2}, None, "security.password_template", "needs password or password_template"),
    ({"profile": 3, "cert_template": "c/{station_id}.pem"}, None, "security.key_template", "needs cert_template"),
    ({"profile": 2, "password_template": TEMPLATE, "ca_file": "/nonexistent/ca.pem"}, None, "security.ca_file",
     "cannot load CA file"),
    ({"profile": 1, "password_template": TEMPLATE}, {"pasword": "x"}, "station_models.ac22.security.pasword",
     "unknown key"),
    # The model lowers the profile; the CA file it inherited is reported where it was written.
    ({"profile": 2, "password_template": TEMPLATE, "ca_file": "CA"}, {"profile": 1}, "security.ca_file",
     "plain ws://"),
    ("profile 1", None, "security", "expected a mapping"),
])
def test_bad_security_settings_name_file_and_key(pki: Pki, security: Any, model_security: Any, key: str,
                                                 message: str) -> None:
    if isinstance(security, dict) and security.get("ca_file") == "CA":
        security["ca_file"] = pki.path("ca.pem")
    data = scenario_data(security=security)
    if model_security is not None:
        data["station_models"]["ac22"]["security"] = model_security
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, file="sec.yaml")
    assert (err.value.file, err.value.key) == ("sec.yaml", key)
    assert message in str(err.value) and "sec.yaml" in str(err.value)


def test_password_template_is_checked_for_every_station_at_plan_time() -> None:
    # "{station_id}-pw-001" expands to 15 characters for FT-00000: one short of OCPP's 16.
    scenario = parse_scenario(scenario_data(security={"profile": 1, "password_template": "{station_id}-pw-001"}),
                              file="sec.yaml")
    with pytest.raises(ScenarioError) as err:
        scenario.plan()
    assert err.value.key == "security.password_template" and "FT-00000" in str(err.value)
    assert "got 15" in str(err.value)


def test_layers_merge_and_paths_resolve_against_their_own_file(tmp_path: Path, pki: Pki) -> None:
    (tmp_path / "pki").mkdir()
    shutil.copy(pki.path("ca.pem"), tmp_path / "pki" / "ca.pem")
    models = tmp_path / "models"
    models.mkdir()
    (models / "mtls.yaml").write_text(yaml.safe_dump({"evse_count": 1, "security": {
        "profile": 3, "cert_template": "certs/{station_id}.pem", "key_template": "certs/{station_id}.key"}}))
    data = scenario_data(security={"profile": 2, "ca_file": "pki/ca.pem", "password_template": TEMPLATE})
    data["station_models"]["mtls"] = "models/mtls.yaml"
    data["transformers"][0]["groups"].append({"model": "mtls", "count": 1})
    (tmp_path / "scenario.yaml").write_text(yaml.safe_dump(data))
    scenario = load_scenario(tmp_path / "scenario.yaml")
    ca = str(tmp_path / "pki" / "ca.pem")
    assert scenario.station_models["ac22"].security == SecuritySettings(2, password_template=TEMPLATE, ca_file=ca)
    mtls = scenario.station_models["mtls"].security
    assert mtls is not None and mtls.profile == 3 and mtls.ca_file == ca
    assert mtls.cert_files_for("FT-00002") == (str(models / "certs" / "FT-00002.pem"),
                                               str(models / "certs" / "FT-00002.key"))
    with pytest.raises(ScenarioError) as err:  # the certificate files are checked per station
        scenario.plan()
    assert (err.value.file, err.value.key) == (str(models / "mtls.yaml"), "security.cert_template")
    assert "FT-00002" in str(err.value)
    (models / "certs").mkdir()
    cert, key = issue(pki.ca, "FT-00002")
    (models / "certs" / "FT-00002.pem").write_bytes(pem_cert(cert))
    (models / "certs" / "FT-00002.key").write_bytes(pem_key(key))
    plans = scenario.plan()
    assert [p.model.security.profile for p in plans] == [2, 2, 3]  # type: ignore[union-attr]


def test_command_line_overrides_and_profile_inference(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    def overridden(url: str | None, **options: Any) -> SecuritySettings | None:
        scenario = parse_scenario(scenario_data(), file="sec.yaml")
        scenario.override_security(options, SECURITY_OPTIONS, url)
        return scenario.station_models["ac22"].security

    assert overridden("ws://h/ocpp", password_template=TEMPLATE) == SecuritySettings(1, password_template=TEMPLATE)
    assert overridden("wss://h/ocpp", password_template=TEMPLATE, ca_file=pki.path("ca.pem")).profile == 2
    assert overridden("wss://h/ocpp", cert_template="{station_id}.pem", key_template="{station_id}.key").profile == 3
    assert overridden("wss://h/ocpp") is None  # no option: the scenario's (none) stays
    with pytest.raises(ScenarioError) as err:
        overridden("wss://h/ocpp", profile=2, password_template=TEMPLATE, cert_template="{station_id}.pem")
    assert err.value.key == "--cert-template" and err.value.file is None and "profile 3" in str(err.value)
    # A scenario's fixed password is replaced by the command line's template, and its profile is kept.
    scenario = parse_scenario(scenario_data(security={"profile": 2, "password": "a-shared-password-01"}),
                              file="sec.yaml")
    scenario.override_security({"password_template": TEMPLATE}, SECURITY_OPTIONS, "ws://h/ocpp")
    assert scenario.station_models["ac22"].security == SecuritySettings(2, password_template=TEMPLATE)
    with pytest.raises(ScenarioError) as err:  # ... and the URL must then be wss://
        Fleet("ws://127.0.0.1:1/ocpp", scenario)
    assert (err.value.file, err.value.key) == ("sec.yaml", "security.profile") and "wss://" in str(err.value)

    assert cli_main(["check", "--scenario", "loadtest", "--stations", "2", "--password-template", "{sid}-0123456789ab"
                     ]) == 2
    assert "key '--password-template': unknown placeholder {sid}" in capsys.readouterr().err
    assert cli_main(["check", "--scenario", "loadtest", "--stations", "2", "--url", "wss://h/ocpp",
                     "--password-template", TEMPLATE, "--ca", pki.path("ca.pem")]) == 0
    assert "security profile 2, password from template" in capsys.readouterr().out


# Station side without a network -------------------------------------------------------------------------


def test_device_model_exposes_profile_and_keeps_the_password_write_only() -> None:
    def var(name: str, value: str | None = None) -> dict:
        item: dict[str, Any] = {"component": {"name": "SecurityCtrlr"}, "variable": {"name": name}}
        return item if value is None else {**item, "attributeValue": value}

    core = StationCore("CS-1", StationModel(security=SecuritySettings(2, password_template=TEMPLATE)), ManualClock())
    got = core.handle_get_variables({"getVariableData": [var("SecurityProfile"), var("BasicAuthPassword")]})
    profile, password = got["getVariableResult"]
    assert (profile["attributeStatus"], profile["attributeValue"]) == ("Accepted", "2")
    assert password["attributeStatus"] == "Rejected" and "attributeValue" not in password
    set_ = core.handle_set_variables({"setVariableData": [var("BasicAuthPassword", "short"),
                                                          var("BasicAuthPassword", "has spaces in it, 20+"),
                                                          var("SecurityProfile", "3")]})
    assert [r["attributeStatus"] for r in set_["setVariableResult"]] == ["Rejected"] * 3
    assert set_["setVariableResult"][0]["attributeStatusInfo"]["reasonCode"] == "InvalidValue"
    changed: list[str] = []
    core.device.on_set("SecurityCtrlr", "BasicAuthPassword", changed.append)
    ok = core.handle_set_variables({"setVariableData": [var("BasicAuthPassword", "a-brand-new-password-42")]})
    assert ok["setVariableResult"][0]["attributeStatus"] == "Accepted" and changed == ["a-brand-new-password-42"]
    plain = StationCore("CS-2", StationModel(), ManualClock())
    assert plain.handle_get_variables({"getVariableData": [var("SecurityProfile")]})[
        "getVariableResult"][0]["attributeStatus"] == "UnknownComponent"


def test_credentials_build_the_connect_arguments(pki: Pki) -> None:
    creds = StationCredentials("CS-1", SecuritySettings(1, password_template=TEMPLATE))
    assert creds.connect_kwargs() == {"additional_headers": basic("CS-1", template_password("CS-1"))}
    assert creds.check_url("ws://h/ocpp") is None
    assert "needs a ws:// URL" in (creds.check_url("wss://h/ocpp") or "")
    tls = StationCredentials("CS-2", SecuritySettings(2, password="a-shared-password-01", ca_file=pki.path("ca.pem")))
    kwargs = tls.connect_kwargs()
    assert kwargs["additional_headers"] == basic("CS-2", "a-shared-password-01") and kwargs["ssl"] is not None
    mutual = StationCredentials("CS-3", SecuritySettings(3, ca_file=pki.path("ca.pem"), cert_template="/nope/{station_id}",
                                                         key_template="/nope/{station_id}"))
    with pytest.raises(OSError):
        mutual.connect_kwargs()


def test_frames_and_headers_are_logged_without_secrets() -> None:
    def logged(msg: str, *args: Any) -> str:
        record = logging.LogRecord("simulators.ocpp", logging.INFO, __file__, 1, msg, args, None)
        RedactSecrets().filter(record)
        return record.getMessage()

    frame = ('[2,"u1","SetVariables",{"setVariableData":[{"component":{"name":"SecurityCtrlr"},'
             '"variable":{"name":"BasicAuthPassword"},"attributeValue":"s3cr3t-pass\\"word-0001"}]}]')
    out = logged("%s: receive message %s", "CS-1", frame)
    assert "s3cr3t" not in out and "word-0001" not in out and '"attributeValue":"<redacted>"' in out
    assert logged("> %s: %s", "Authorization", "Basic Q1MtMTpwYXNz") == "> Authorization: Basic <redacted>"
    other = '[2,"u2","SetVariables",{"setVariableData":[{"attributeValue":"300"}]}]'
    assert logged("%s", other) == other


# Against our daemon, real TLS on 127.0.0.1 ---------------------------------------------------------------


def fast_model(security: SecuritySettings) -> StationModel:
    return StationModel(meter_interval_s=0.5, tick_s=0.1, message_attempt_interval_s=0.2, security=security)


@contextlib.asynccontextmanager
async def running(station: SimStation, wait_accepted: bool = True) -> AsyncIterator[SimStation]:
    task = asyncio.create_task(station.run())
    try:
        if wait_accepted:
            await asyncio.wait_for(station.accepted.wait(), 10)
        yield station
    finally:
        station.stop()
        await asyncio.wait_for(task, 10)  # re-raises if the station crashed


def new_station(url: str, station_id: str, security: SecuritySettings) -> SimStation:
    return SimStation(station_id, url, fast_model(security), clock=Clock(), call_timeout_s=3, reconnect_base_s=0.05,
                      reconnect_max_s=0.2)


@contextlib.asynccontextmanager
async def daemon_for(profile: int, tmp_path: Path, pki: Pki, **security: Any) -> AsyncIterator[tuple[RunningDaemon, str]]:
    if profile == 1:
        async with plain_daemon(tmp_path, **security) as d:
            yield d, d.ws_url
    else:
        async with tls_daemon(tmp_path, pki, **security) as d:
            yield d, wss(d)


def settings_for(profile: int, pki: Pki, station_id: str) -> SecuritySettings:
    if profile == 3:
        pki.write(f"station-{station_id}", *issue(pki.ca, station_id))
        return SecuritySettings(3, ca_file=pki.path("ca.pem"), cert_template=pki.path("station-{station_id}.pem"),
                                key_template=pki.path("station-{station_id}.key"))
    return SecuritySettings(profile, password_template=TEMPLATE, ca_file=pki.path("ca.pem") if profile == 2 else None)


async def charged(d: RunningDaemon, station_id: str) -> bool:
    txs = await d.daemon.store.list_transactions(station_id=station_id, active=True)
    return bool(txs) and txs[0].charging_state == "Charging" and (txs[0].energy_wh or 0) > 0


async def ended(d: RunningDaemon, station_id: str) -> Any:
    txs = await d.daemon.store.list_transactions(station_id=station_id)
    return txs[0] if txs and not txs[0].active and txs[0].ended_at is not None else None


@pytest.mark.parametrize("profile", [1, 2, 3])
async def test_station_boots_and_completes_a_transaction_at_each_profile(tmp_path: Path, pki: Pki,
                                                                         profile: int) -> None:
    station_id = f"SEC-P{profile}"
    async with daemon_for(profile, tmp_path, pki) as (d, url):
        await register_station(d.daemon.store, station_id, profile, template_password(station_id) if profile < 3 else None)
        async with running(new_station(url, station_id, settings_for(profile, pki, station_id))) as station:
            assert station.boot_status == "Accepted" and station_id in d.daemon.connections
            station.plug_in(1, EV(model=EVModel(max_current_a=16.0), soc=0.2))
            await until(lambda: charged(d, station_id))  # authorized, charging, metered by the daemon
            station.unplug(1)
            tx = await until(lambda: ended(d, station_id))
        assert tx.stopped_reason == "EVDisconnected" and tx.last_seq_no >= 3 and tx.energy_wh > 0
        assert (await d.daemon.store.get_station(station_id)).security_profile == profile
        assert station.stats.errors == {} and station.stats.auth_failures == 0
        assert await d.daemon.store.list_security_events(station_id) == []


async def test_wrong_password_is_an_auth_failure_with_backoff_not_a_crash(tmp_path: Path, pki: Pki) -> None:
    limits = {"auth_failures": {"per_address": 50, "per_identity": 2, "window_s": 60}}
    async with daemon_for(1, tmp_path, pki, **limits) as (d, url):
        await register_station(d.daemon.store, "SEC-BAD", 1, "the-right-password-0001")
        station = new_station(url, "SEC-BAD", SecuritySettings(1, password_template=TEMPLATE))
        delays: list[float] = []
        sleep = station._sleep_unless_stopped

        async def recorded(seconds: float) -> None:
            delays.append(seconds)
            await sleep(min(seconds, 0.05))  # keep the test short; the asked-for delay is what we check

        station._sleep_unless_stopped = recorded  # type: ignore[method-assign]
        async with running(station, wait_accepted=False):
            await until(lambda: station.stats.errors.get("auth:HTTP429"), timeout=10)
        stats = station.stats.snapshot()
        assert stats["errors"]["auth:HTTP401"] == 2  # the identity's budget, then the daemon says 429
        assert stats["auth_failures"] == stats["errors"]["auth:HTTP401"] + stats["errors"]["auth:HTTP429"]
        assert station.stats.connects == 0 and not station.accepted.is_set()
        assert max(delays[:2]) <= 0.2 * 1.5  # our own backoff after a 401 (reconnect_max_s x jitter)
        first_429 = stats["errors"]["auth:HTTP401"]
        assert delays[first_429] >= 10  # Retry-After: a token per 30 s, far above our own backoff
        assert [e["type"] for e in await d.daemon.store.list_security_events("SEC-BAD")][-2:] == \
            [auth.INVALID_CREDENTIALS] * 2


async def test_fleet_reports_auth_failures_and_keeps_running(tmp_path: Path) -> None:
    data = scenario_data(security={"profile": 1, "password_template": TEMPLATE})
    data["clock"]["duration_h"] = 0.25
    scenario = parse_scenario(data, file="sec.yaml")
    async with plain_daemon(tmp_path) as d:
        await register_station(d.daemon.store, "FT-00000", 1, template_password("FT-00000"))
        await register_station(d.daemon.store, "FT-00001", 1, "someone-elses-password-01")
        fleet = Fleet(d.ws_url, scenario, speed=600, call_timeout_s=5, station_kwargs={"reconnect_base_s": 0.05,
                                                                                       "reconnect_max_s": 0.2})
        result = await fleet.run()
    load = report(result)["load"]
    assert load["auth_failures"] >= 1 and load["errors"]["auth:HTTP401"] >= 1
    assert load["peak_connections_up"] == 1 and not any(k.startswith("station_crashed") for k in load["errors"])
    assert fleet.stations[0].boot_status == "Accepted" and fleet.stations[1].boot_status is None


async def test_password_rotation_end_to_end_over_tls(tmp_path: Path, pki: Pki) -> None:
    station_id, old = "SEC-ROT", template_password("SEC-ROT")
    async with daemon_for(2, tmp_path, pki) as (d, url):
        await register_station(d.daemon.store, station_id, 2, old)
        async with running(new_station(url, station_id, settings_for(2, pki, station_id))) as station:
            got = await d.daemon.commands.get_variables(station_id, [
                {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "SecurityProfile"}},
                {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"}}])
            assert [(r["attributeStatus"], r.get("attributeValue")) for r in got["getVariableResult"]] == [
                ("Accepted", "2"), ("Rejected", None)]
            assert await rotate_password(d.daemon, station_id) == RotationResult.ACCEPTED
            new = station.credentials.password  # type: ignore[union-attr]
            assert new != old and len(new) == passwords.GENERATED_LENGTH
            # The station logs in again with the new password by itself; the daemon then forgets the old one.
            await until(lambda: station.stats.connects == 2 and station.accepted.is_set())
            await until(lambda: _rotated(d, station_id, new))
            assert station.stats.auth_failures == 0 and station.stats.errors == {}
        assert await refused_status(url, station_id, ssl=pki.client_context(),
                                    additional_headers=basic(station_id, old)) == 401


async def _rotated(d: RunningDaemon, station_id: str, new: str) -> bool:
    station = await d.daemon.store.get_station(station_id)
    return auth.NEXT_PASSWORD_KEY not in station.extra and passwords.verify(new, station.password_hash)


async def test_csms_sim_loadtest_over_tls_from_the_command_line(tmp_path: Path, pki: Pki) -> None:
    async with daemon_for(2, tmp_path, pki) as (d, url):
        for station_id in ("LOAD-00000", "LOAD-00001"):
            await register_station(d.daemon.store, station_id, 2, template_password(station_id))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "simulators.cli", "loadtest", "--url", url, "--stations", "2", "--duration", "3",
            "--password-template", TEMPLATE, "--ca", pki.path("ca.pem"), "--no-progress",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        load = json.loads(out)
        assert load["peak_connections_up"] == 2 and load["auth_failures"] == 0 and load["error_count"] == 0
        assert await d.daemon.store.list_security_events() == []  # no refused login on the way
        for station_id in ("LOAD-00000", "LOAD-00001"):
            record = await d.daemon.store.get_station(station_id)
            assert record.registration == "Accepted" and record.last_boot is not None and record.model == "ac22"
