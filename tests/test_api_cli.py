"""The operator subcommands of ``csms``, run as a real process against a running daemon."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from csms import opcli
from csms.api.events import STREAMS
from tests.api_fixture import Api, api_daemon
from tests.test_api_grid import charging_site


async def csms(api: Api | None, *args: str, env: dict[str, str] | None = None,
               timeout: float = 30) -> tuple[int, str, str]:
    """Run ``python -m csms ARGS`` with the API's URL and token (unless env says otherwise)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CSMS_")}
    if api is not None:
        full_env.update({"CSMS_API_URL": api.url, "CSMS_API_TOKEN": api.admin_token})
    full_env.update({"COLUMNS": "200", **(env or {})})
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "csms", *args, env=full_env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                cwd=str(Path(__file__).parent.parent))
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_stations_show_and_json(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        await api.station("CS-1", evses=1)
        code, out, _ = await csms(api, "stations")
        assert code == 0 and "CS-1" in out and "TestVendor" in out and "1 station\n" in out
        code, out, _ = await csms(api, "stations", "--json")
        assert code == 0 and json.loads(out)["stations"][0]["station_id"] == "CS-1"
        code, out, _ = await csms(api, "show", "CS-1")
        assert code == 0 and "connected" in out and "Available" in out
        code, _, err = await csms(api, "show", "NOPE")
        assert code == opcli.EXIT_NOT_FOUND and "unknown station 'NOPE'" in err


async def test_send_and_call_with_exit_codes(tmp_path: Path) -> None:
    async with api_daemon(tmp_path, websocket={"call_timeout_s": 0.5}) as api:
        st = await api.station("CS-1")
        code, out, _ = await csms(api, "send", "CS-1", "reset", "type=Immediate", "--json")
        assert code == 0 and json.loads(out)["response"] == {"status": "Accepted"}
        call = await asyncio.wait_for(st.incoming_calls.get(), 5)
        assert call[2:] == ["Reset", {"type": "Immediate"}]
        code, out, _ = await csms(api, "send", "CS-1", "unlock-connector", "evse_id=1", "connector_id=1")
        assert code == 0 and "Unlocked" in out
        code, out, _ = await csms(api, "call", "CS-1", "DataTransfer", '{"vendorId": "x"}')
        assert code == 0 and "Accepted" in out
        code, _, err = await csms(api, "send", "CS-1", "reset", "type=Sometime")
        assert code == opcli.EXIT_INVALID and "field: type" in err
        code, _, err = await csms(api, "call", "CS-1", "Reset", "{not json")
        assert code == opcli.EXIT_USAGE and "not valid JSON" in err
        del st.auto_answer["Reset"]
        code, _, err = await csms(api, "send", "CS-1", "reset")
        assert code == opcli.EXIT_TIMEOUT and "did not answer" in err
        await st.close()
        api.stations.remove(st)
        for _ in range(200):
            if "CS-1" not in api.daemon.connections:
                break
            await asyncio.sleep(0.01)
        code, _, err = await csms(api, "send", "CS-1", "reset")
        assert code == opcli.EXIT_CONFLICT and "not connected" in err


async def test_auth_and_unreachable_exit_codes(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        code, _, err = await csms(None, "stations", "--url", api.url, "--token", "wrong-token")
        assert code == opcli.EXIT_AUTH and "invalid API token" in err
        code, _, err = await csms(None, "send", "CS-1", "reset", "--url", api.url, "--token",
                                  "read-only-token-for-tests-0123456789")
        assert code == opcli.EXIT_AUTH and "admin" in err
        code, _, err = await csms(None, "grid", "--url", api.url, "--token", api.admin_token)
        assert code == opcli.EXIT_UNAVAILABLE and "grid control is not configured" in err
    code, _, err = await csms(None, "stations", "--url", "http://127.0.0.1:9", "--token", "x")
    assert code == opcli.EXIT_UNAVAILABLE and "cannot reach the API" in err
    code, _, err = await csms(None, "stations", "--config", str(tmp_path / "missing.yaml"))
    assert code == opcli.EXIT_CONFIG and "no API token" in err


async def test_url_and_token_from_the_config_file(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as api:
        await api.station("CS-CFG")
        config = {"store": {"sqlite_path": "csms.db"}, "api": {"port": api.daemon.api.port}}
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        code, out, err = await csms(None, "stations", "--json", "--config", str(tmp_path / "config.yaml"))
        assert code == 0, err
        assert [s["station_id"] for s in json.loads(out)["stations"]] == ["CS-CFG"]


async def test_limit_grid_and_tail(tmp_path: Path) -> None:
    async with charging_site(tmp_path, n=1) as (api, _):
        tail = asyncio.create_task(csms(api, "tail", "--kinds", "grid.limit", "--count", "1", "--json"))
        streams = api.daemon.api.app[STREAMS]
        for _ in range(400):  # wait until the tail process has its stream open
            if streams or tail.done():
                break
            await asyncio.sleep(0.025)
        assert streams, "csms tail did not connect"
        code, out, err = await csms(api, "limit", "T1", "9.5", "--source", "cli-test")
        assert code == 0, err
        assert "accepted" in out and "9.5 kW" in out
        code, out, err = await tail
        assert code == 0, err
        event: dict[str, Any] = json.loads(out.strip().splitlines()[0])
        assert event["kind"] == "grid.limit" and event["data"]["limit_kw"] == 9.5
        code, out, _ = await csms(api, "grid")
        assert code == 0 and "limit 9.5 kW" in out and "G-1" in out
        code, _, err = await csms(api, "limit", "T1", "5000")
        assert code == opcli.EXIT_INVALID
        code, _, err = await csms(api, "limit", "T1")
        assert code == opcli.EXIT_USAGE
