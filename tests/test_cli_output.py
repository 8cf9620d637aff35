"""What the operator commands print, at 80 columns on a terminal and when piped (issue 18).

Ids are never cut (on a terminal the other columns fold; piped, rows are tab-separated lines that
grep and cut can use), ``csms grid`` says what is wrong without ``--json``, ``show`` has the
active transaction and the profiles, ``transactions`` filters, ``send`` lists what it knows.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from csms import clitables, opcli
from csms.opfields import call_payload, send_body
from csms.opgrid import human_reason, render_grid
from tests.api_fixture import Api, api_daemon
from tests.test_api_cli import csms
from tests.test_api_grid import charging_site
from tests.test_api_transactions import _session

REPO = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LONG_ID = "NL-RES-00012-AMSTERDAM-NOORD"  # wider than a column gets at 80 columns


def _env(api: Api) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSMS_")}
    env.update({"CSMS_API_URL": api.url, "CSMS_API_TOKEN": api.admin_token, "COLUMNS": "80", "TERM": "xterm"})
    return env


def _tty_run(args: list[str], env: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    """``python -m csms ARGS`` with stdout on an 80-column pseudo-terminal; what it showed, without colours."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 80, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "csms", *args], stdout=slave, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, env=env, cwd=REPO)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(max(0.1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, ANSI.sub("", b"".join(chunks).decode(errors="replace")).replace("\r\n", "\n")


async def tty(api: Api, *args: str) -> str:
    code, out = await asyncio.to_thread(_tty_run, list(args), _env(api))
    assert code == 0, out
    assert all(len(line) <= 80 for line in out.splitlines()), "\n" + out
    return out


async def piped(api: Api, *args: str) -> str:
    code, out, err = await csms(api, *args, env={"COLUMNS": "80"})
    assert code == 0, err
    return out


async def test_stations_never_cut_the_id(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        await api.station(LONG_ID)
        await api.station("CS-2")
        out = await piped(api, "stations")
        rows = [line.split("\t") for line in out.splitlines()]
        assert rows[0] == ["# 2 stations"] and rows[1][0] == "station"
        assert [r[0] for r in rows[2:]] == ["CS-2", LONG_ID]
        assert [line for line in out.splitlines() if "NL-RES-00012" in line][0].startswith(LONG_ID + "\t")
        out = await tty(api, "stations")
        assert LONG_ID in out and "TestV" in out and "endor" in out, out  # folded, not cut
        assert "…" not in out and "..." not in out


async def test_show_has_active_transaction_profiles_and_composite(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        st = await api.station(LONG_ID, evses=2)
        st.auto_answer["GetCompositeSchedule"] = {"status": "Accepted", "schedule": {
            "evseId": 2, "duration": 3600, "scheduleStart": "2025-03-01T10:00:00Z", "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7400.0}, {"startPeriod": 900, "limit": 4100.0}]}}
        await _session(st, "tx-old", 1, "2025-01-01", end=True)
        await _session(st, "tx-live", 2, "2025-03-01", end=False)
        profile = {"id": 77, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
                   "chargingProfileKind": "Absolute", "transactionId": "tx-live",
                   "chargingSchedule": [{"id": 1, "chargingRateUnit": "A", "startSchedule": "2025-03-01T10:00:00Z",
                                         "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0},
                                                                    {"startPeriod": 900, "limit": 6.0}]}]}
        code, _, err = await csms(api, "send", LONG_ID, "set-charging-profile", "evseId=2",
                                  "profile=" + __import__("json").dumps(profile))
        assert code == 0, err
        out = await piped(api, "show", LONG_ID)
        assert "tx-live" in out and "tx-old" not in out, out
        assert "# active transaction\n" in out and "# charging profiles pushed (1)\n" in out
        assert "\tTxProfile\t" in out and "\t0 s: 16.0 A, 900 s: 6.0 A\n" in out
        assert "composite schedule EVSE 2: 0 s: 7400.0 W, 900 s: 4100.0 W from 01 Mar 10:00:00 for 3600 s" in out
        out = await tty(api, "show", LONG_ID)  # folded to 80 columns, ids whole
        assert LONG_ID in out and "tx-live" in out and "tx-old" not in out
        assert re.search(r"^active transaction *$", out, re.M) and "charging profiles pushed (1)" in out
        assert "composite schedule EVSE 2: 0 s: 7400.0 W, 900 s: 4100.0 W" in " ".join(out.split())
        out = await piped(api, "show", LONG_ID, "--no-composite")
        assert "composite" not in out
        await st.close()
        api.stations.remove(st)
        for _ in range(200):
            if LONG_ID not in api.daemon.connections:
                break
            await asyncio.sleep(0.01)
        out = await piped(api, "show", LONG_ID)
        assert "composite schedule EVSE 2: unknown (station offline)" in out


async def test_transactions_with_filters(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        a = await api.station(LONG_ID)
        b = await api.station("CS-B")
        await _session(a, "tx-old", 1, "2025-01-01", end=True)
        await _session(a, "tx-live", 2, "2025-03-01", end=False)
        await _session(b, "tx-b", 1, "2025-03-01", end=True)

        async def ids(*args: str) -> list[str]:
            out = await piped(api, "transactions", *args)
            lines = out.splitlines()
            assert lines[1].split("\t")[:2] == ["station", "transaction"]
            return sorted(line.split("\t")[1] for line in lines[2:])

        assert await ids() == ["tx-b", "tx-live", "tx-old"]
        assert await ids("--station", LONG_ID) == ["tx-live", "tx-old"]
        assert await ids("--active") == ["tx-live"]
        assert await ids("--since", "2025-02-01T00:00:00Z") == ["tx-b", "tx-live"]
        assert await ids("--since", "1d") == ["tx-live"]  # the only one still going in the last day
        out = await tty(api, "transactions", "--station", LONG_ID)
        assert LONG_ID in out and "tx-live" in out and "tx-old" in out
        code, _, err = await csms(api, "transactions", "--since", "yesterday")
        assert code == opcli.EXIT_INVALID and "since" in err


async def test_send_lists_commands_and_takes_camel_case(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        st = await api.station("CS-1")
        code, _, err = await csms(api, "send", "CS-1", "rest", env={"COLUMNS": "80"})
        assert code == opcli.EXIT_USAGE
        assert "unknown command 'rest'" in err and "did you mean 'reset'?" in err
        assert re.search(r"unlock-connector +evseId\*, connectorId\*", err), err
        assert "csms call" in err
        # camelCase (as OCPP) and snake_case both reach the station the same way
        for fields in (("evseId=1", "connectorId=1"), ("evse_id=1", "connector_id=1")):
            code, out, err = await csms(api, "send", "CS-1", "unlock-connector", *fields, "--json")
            assert code == 0, err
            call = await asyncio.wait_for(st.incoming_calls.get(), 5)
            assert call[2:] == ["UnlockConnector", {"evseId": 1, "connectorId": 1}]
        code, out, err = await csms(api, "call", "CS-1", "DataTransfer",
                                    '{"vendor_id": "x", "data": {"keep_me": 1}}', "--json")
        assert code == 0, err
        call = await asyncio.wait_for(st.incoming_calls.get(), 5)
        assert call[2:] == ["DataTransfer", {"vendorId": "x", "data": {"keep_me": 1}}]
        # an unknown station is still "not found", not a command list
        code, _, err = await csms(api, "send", "NOPE", "reset")
        assert code == opcli.EXIT_NOT_FOUND and "unknown station" in err


def test_field_names() -> None:
    assert send_body({"evseId": 1, "requestedMessage": "Heartbeat", "evse_id": 2}) == {
        "evse_id": 2, "requested_message": "Heartbeat"}
    assert call_payload({"evse_id": 1, "charging_profile": {"stack_level": 0}, "customData": {"a_b": 1}}) == {
        "evseId": 1, "chargingProfile": {"stackLevel": 0}, "customData": {"a_b": 1}}


GROUP: dict[str, Any] = {
    "transformer": "T1", "limit_kw": 80.0, "limit_source": "operator", "margin_kw": 4.0,
    "margin": {"kw": 2.0, "percent": 5.0}, "safe_mode": True, "measured_kw": 173.1, "measured_ev_kw": 33.1,
    "planned_kw": 150.0, "planned_ev_kw": 10.0, "base_load_kw": 140.0, "planned_at": "2026-11-30T16:05:00+00:00",
    "infeasible": True,
    "sessions": [
        {"station_id": LONG_ID, "evse_id": 1, "state": "charging", "setpoint_kw": 4.1, "actual_kw": 11.0,
         "delivered_kwh": 3.2, "need_kwh": 20.0, "departure": "2026-12-01T07:00:00+00:00", "fixed_kw": 11.0,
         "fixed_reason": "profile OcppError (NotSupported: SetChargingProfile)", "push_status": "OcppError",
         "can_pause": True, "no_pause_reason": None, "connected": True},
        {"station_id": "CS-2", "evse_id": 1, "state": "charging", "setpoint_kw": 4.1, "actual_kw": 9.0,
         "delivered_kwh": 1.0, "need_kwh": None, "departure": None, "fixed_kw": 9.0,
         "fixed_reason": "draws 9.0 kW over setpoint 4.1 kW", "push_status": "Accepted", "can_pause": False,
         "no_pause_reason": "did not resume after a pause", "connected": True},
        {"station_id": "CS-3", "evse_id": 2, "state": "paused", "setpoint_kw": 0.0, "actual_kw": 0.0,
         "delivered_kwh": 5.0, "need_kwh": 10.0, "departure": None, "fixed_kw": None, "fixed_reason": None,
         "push_status": "Accepted", "can_pause": True, "no_pause_reason": None, "connected": True}]}


@pytest.mark.parametrize("terminal", [True, False])
def test_grid_says_what_is_wrong_without_json(terminal: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clitables, "is_terminal", lambda: terminal)
    buf = io.StringIO()
    render_grid(Console(file=buf, width=80, soft_wrap=not terminal, highlight=False), {"transformers": {"T1": GROUP}})
    out = buf.getvalue()
    flat = " ".join(out.split())

    def says(text: str) -> bool:
        return " ".join(text.split()) in flat

    assert says("T1: limit 80.0 kW, set by operator SAFE MODE INFEASIBLE OVER-DRAW")
    assert says("margin 4.0 kW kept below the limit (configured 2.0 kW / 5.0 %)")
    assert says("measured 173.1 kW = EV 33.1 + non-EV 140.0 kW")
    assert says("over-draw: measured load is 93.1 kW above the limit")
    assert says("infeasible:") and says("safe mode:")
    assert says("uncontrollable: 2 sessions")
    assert says(f"{LONG_ID} EVSE 1: profile rejected by station (OcppError: NotSupported: SetChargingProfile); "
                "budgeted at 11.0 kW")
    assert says("CS-2 EVSE 1: ignores its setpoint: draws 9.0 kW over setpoint 4.1 kW")
    assert says("cannot pause CS-2 EVSE 1: did not resume after a pause")
    if terminal:
        assert all(len(line) <= 80 for line in buf.getvalue().splitlines())
        assert LONG_ID in out.split("sessions")[-1]
        print(out)
    else:
        assert [line.split("\t")[0] for line in out.splitlines() if "\t" in line] == [
            "station", LONG_ID, "CS-2", "CS-3"]
        assert f"{LONG_ID}\t1\tcharging\t4.1\t11.0\t3.2\t20.0\t01 Dec 07:00\tUNCONTROLLED\n" in out


def test_reasons_in_words() -> None:
    assert human_reason({"fixed_kw": 2.0, "fixed_reason": "profile Rejected"}) == (
        "profile rejected by station; budgeted at 2.0 kW")
    assert human_reason({"fixed_kw": None, "fixed_reason": None}) is None


async def test_grid_and_limit_clear_end_to_end(tmp_path: Path) -> None:
    async with charging_site(tmp_path, n=1) as (api, _):
        code, out, err = await csms(api, "limit", "T1", "30")
        assert code == 0, err
        out = await piped(api, "grid")
        assert "T1: limit 30.0 kW, set by operator" in out and "margin" in out and "measured" in out
        assert [line.split("\t")[0] for line in out.splitlines() if "\t" in line] == ["station", "G-1"]
        out = await tty(api, "grid")
        assert "G-1" in out
        code, out, err = await csms(api, "limit", "T1", "--clear")
        assert code == 0 and "cleared" in out, err
        out = await piped(api, "grid")
        assert "set by operator" not in out
        code, _, err = await csms(api, "limit", "T1", "--clear")
        assert code == opcli.EXIT_NOT_FOUND and "no limit of source 'operator'" in err


def test_too_narrow_for_a_table_gives_records_not_cut_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clitables, "is_terminal", lambda: True)
    station, tx = "S" * 48, "T" * 36  # the longest OCPP station identity and a UUID-length transaction id
    buf = io.StringIO()
    out = Console(file=buf, width=80, soft_wrap=False, highlight=False)
    from csms.opshow import TX_COLS, transaction_rows

    clitables.print_table(out, "1 transaction", TX_COLS, transaction_rows([{
        "station_id": station, "transaction_id": tx, "evse_id": 1, "id_token": "CARD-1",
        "started_at": "2026-11-30T16:00:00Z", "ended_at": None, "active": True, "energy_wh": 1234.0,
        "stopped_reason": None}]))
    text = buf.getvalue()
    assert station in text and tx in text and "…" not in text
    assert "kWh: 1.23" in " ".join(text.split())
    assert all(len(line) <= 80 for line in text.splitlines())


async def test_grid_names_a_station_that_rejects_profiles(tmp_path: Path) -> None:
    async with charging_site(tmp_path, n=2) as (api, stations):
        handlers = stations[0].core.dialect.handlers
        handlers["SetChargingProfile"] = lambda payload: {"status": "Rejected",
                                                          "statusInfo": {"reasonCode": "NotSupported"}}
        code, _, err = await csms(api, "limit", "T1", "6")  # every setpoint changes: both get a new profile

        def fixed() -> bool:
            return any(s["fixed_reason"] for s in api.daemon.grid.snapshot()["transformers"]["T1"]["sessions"])

        assert code == 0, err
        for _ in range(200):
            if fixed():
                break
            await asyncio.sleep(0.05)
        out = await piped(api, "grid")
        assert "uncontrollable: 1 session\n" in out, out
        assert "    G-1 EVSE 1: profile rejected by station (NotSupported); budgeted at" in out, out
        assert "\nG-1\t1\t" in out and "\tUNCONTROLLED\n" in out
