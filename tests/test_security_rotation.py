"""Password rotation end to end, registration rules, and the ``csms station register`` CLI."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from csms.security import auth, passwords
from csms.security.credentials import RegistrationError, register_station
from csms.security.rotation import RotationError, RotationResult, rotate_password
from csms.store.factory import open_store
from tests.daemon_fixture import running_daemon
from tests.daemon_fixture import test_config as make_config
from tests.ocpp_client import RawStation
from tests.test_security_profiles import PASSWORD, basic, events, plain_daemon, refused_status


class CredentialStation:
    """A simulated station that keeps SecurityCtrlr.BasicAuthPassword and reconnects with it."""

    def __init__(self, url: str, station_id: str, password: str, answer: str = "Accepted") -> None:
        self.url, self.station_id, self.password, self.answer = url, station_id, password, answer
        self.raw: RawStation | None = None
        self.got_password = asyncio.Event()

    def _set_variables(self, payload: dict[str, Any]) -> dict[str, Any]:
        results = []
        for item in payload["setVariableData"]:
            ok = (item["component"]["name"], item["variable"]["name"]) == ("SecurityCtrlr", "BasicAuthPassword")
            if ok and self.answer == "Accepted":
                self.password = item["attributeValue"]
                self.got_password.set()
            results.append({"component": item["component"], "variable": item["variable"],
                            "attributeStatus": self.answer if ok else "UnknownVariable"})
        return {"setVariableResult": results}

    async def connect(self) -> None:
        self.raw = await RawStation.connect(self.url, self.station_id,
                                            additional_headers=basic(self.station_id, self.password))
        self.raw.auto_answer["SetVariables"] = self._set_variables
        assert (await self.raw.boot())["status"] == "Accepted"

    async def reconnect(self) -> None:
        assert self.raw is not None
        await self.raw.close()
        await self.connect()


async def test_rotation_end_to_end(tmp_path: Path) -> None:
    async with plain_daemon(tmp_path) as d:
        daemon = d.daemon
        await register_station(daemon.store, "CS-1", 1, PASSWORD)
        station = CredentialStation(d.ws_url, "CS-1", PASSWORD)
        await station.connect()
        assert await rotate_password(daemon, "CS-1") == RotationResult.ACCEPTED
        new = station.password
        assert new != PASSWORD and passwords.MIN_LENGTH <= len(new) <= passwords.MAX_LENGTH
        # Until the station logs in with the new password, the old one still opens the socket.
        old_login = await RawStation.connect(d.ws_url, "CS-1", additional_headers=basic("CS-1", PASSWORD))
        await old_login.close()
        await station.reconnect()  # with the new password
        record = await daemon.store.get_station("CS-1")
        assert auth.NEXT_PASSWORD_KEY not in record.extra and passwords.verify(new, record.password_hash)
        assert await refused_status(d.ws_url, "CS-1", additional_headers=basic("CS-1", PASSWORD)) == 401
        # The password never reaches the command record or the trace.
        commands = await daemon.store.list_commands("CS-1")
        assert commands and all(new not in repr(c) for c in commands)
        assert all(new not in frame for _, _, frame in daemon.station_trace("CS-1"))
        await station.raw.close()


async def test_rejected_rotation_keeps_the_old_password_only(tmp_path: Path) -> None:
    async with plain_daemon(tmp_path) as d:
        await register_station(d.daemon.store, "CS-1", 1, PASSWORD)
        station = CredentialStation(d.ws_url, "CS-1", PASSWORD, answer="Rejected")
        await station.connect()
        with pytest.raises(RotationError, match="Rejected"):
            await rotate_password(d.daemon, "CS-1", "a-new-password-0123")
        record = await d.daemon.store.get_station("CS-1")
        assert auth.NEXT_PASSWORD_KEY not in record.extra
        await station.raw.close()
        assert await refused_status(d.ws_url, "CS-1", additional_headers=basic("CS-1", "a-new-password-0123")) == 401
        with pytest.raises(RotationError, match="not connected"):
            await rotate_password(d.daemon, "CS-1")
        await register_station(d.daemon.store, "CS-3", 3)
        with pytest.raises(RotationError, match="no password"):
            await rotate_password(d.daemon, "CS-3")


async def test_register_station_rules(tmp_path: Path) -> None:
    store = open_store(make_config(tmp_path).store)
    await store.open()
    try:
        generated = await register_station(store, "CS-1", 2)
        assert generated is not None and len(generated) == passwords.GENERATED_LENGTH
        record = await store.get_station("CS-1")
        assert record.registered and record.security_profile == 2 and passwords.verify(generated, record.password_hash)
        assert await register_station(store, "CS-1", 1, PASSWORD) is None
        assert passwords.verify(PASSWORD, (await store.get_station("CS-1")).password_hash)
        assert await register_station(store, "CS-1", 3) is None
        record = await store.get_station("CS-1")
        assert record.security_profile == 3 and record.password_hash is None
        for args, message in [(("CS 1", 1, PASSWORD), "station id"), (("CS-1", 4, PASSWORD), "1, 2 or 3"),
                              (("CS-1", 1, "short"), "16-40 characters"), (("CS-1", 3, PASSWORD), "client certificate"),
                              (("CS-1", 1, "x" * 41), "16-40"), (("CS-1", 1, "sixteen chars wi"), "printable ASCII")]:
            with pytest.raises(RegistrationError, match=message):
                await register_station(store, *args)
    finally:
        await store.close()


def test_cli_station_register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from csms import cli

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"store": {"sqlite_path": "csms.db"}}))
    assert cli.main(["station", "register", "CS-7", "--profile", "1", "--config", str(config)]) == 0
    generated = capsys.readouterr().out.strip().splitlines()[-1]
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert cli.main(["station", "register", "CS-8", "--profile", "2", "--password-stdin", "--config", str(config)]) == 0
    assert PASSWORD not in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("too-short\n"))
    assert cli.main(["station", "register", "CS-9", "--profile", "2", "--password-stdin", "--config", str(config)]) == 1
    assert "16-40 characters" in capsys.readouterr().err

    async def stored() -> tuple[Any, Any]:
        store = open_store(make_config(tmp_path, store={"sqlite_path": str(tmp_path / "csms.db")}).store)
        await store.open()
        try:
            return await store.get_station("CS-7"), await store.get_station("CS-8")
        finally:
            await store.close()

    cs7, cs8 = asyncio.run(stored())
    assert cs7.security_profile == 1 and passwords.verify(generated, cs7.password_hash)
    assert cs8.security_profile == 2 and passwords.verify(PASSWORD, cs8.password_hash)


async def test_lab_mode_without_security_section_needs_no_credentials(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    async with running_daemon(tmp_path) as d:
        st = await RawStation.connect(d.ws_url, "CS-LAB")
        assert (await st.boot())["status"] == "Accepted"
        await st.close()
        assert d.daemon.ssl_context is None and d.daemon.handshake_checks == []
        assert await events(d, "CS-LAB") == []
    assert any("LAB MODE" in r.getMessage() for r in caplog.records)
